#!/usr/bin/env bash
# Makes the virtual environment the reference scripts run in: Debian's PyTorch (python3-torch)
# seen through --system-site-packages, plus pinned PyPI packages (transformers, tiktoken, ...).
# Usage: scripts/reference/setup_venv.sh [VENV_DIR]   (default: .venv-ref at the repository root)
# Prints the venv's python on its last line.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-$root/.venv-ref}
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "installing Debian's python3-torch (needs root)" >&2
  apt-get update -qq && apt-get install -y -qq python3-torch python3-venv python3-pip >&2
fi
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv" >&2
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/scripts/reference/requirements.txt" >&2
echo "$venv/bin/python"
