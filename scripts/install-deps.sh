#!/usr/bin/env bash
# Installs the Debian packages stac builds with (only those missing). Needs root or sudo.
set -euo pipefail
pkgs=(build-essential cmake libeigen3-dev libfmt-dev doctest-dev nlohmann-json3-dev libutf8proc-dev pkg-config)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}" >&2
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
$sudo_cmd apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >&2
