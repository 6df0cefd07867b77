#!/usr/bin/env python3
"""Markdown tables for docs/PERFORMANCE.md from `stac bench --json` and `scripts/bench/bench_pytorch.py --json`.

Usage: python3 scripts/bench/perf_table.py STAC_JSON [PYTORCH_JSON]
Prints one table: rows = run (and S), columns = test x threads, cells = median tokens/s with the
min-max spread; the PyTorch file, if given, adds its rows for the same tests and threads.
"""
import json
import sys


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    stac = json.load(open(sys.argv[1]))
    rows = stac["results"]
    if len(sys.argv) > 2:
        rows = rows + json.load(open(sys.argv[2]))["results"]
    tests = list(dict.fromkeys(r["test"] for r in rows))
    threads = sorted({r["threads"] for r in rows})
    cols = [(t, n) for t in tests for n in threads]
    runs = list(dict.fromkeys((r["run"], r.get("timesteps")) for r in rows))
    cell = {(r["run"], r.get("timesteps"), r["test"], r["threads"]): r for r in rows}
    m = stac.get("model", {})
    print(f"Model: {m.get('source', '?')}; {m.get('parameters', '?')} parameters. Median tokens/s (min-max), "
          "warm-up then up to the repeats asked.\n")
    print("| run | " + " | ".join(f"{t} x{n}" for t, n in cols) + " |")
    print("| --- |" + " ---: |" * len(cols))
    for run, s in runs:
        name = run + (f" S={s}" if s else "")
        vals = []
        for t, n in cols:
            r = cell.get((run, s, t, n))
            if r is None:
                vals.append("-")
            else:
                tps = r["tokens_per_s"]
                vals.append(f"{tps['median']:.1f} ({tps['min']:.1f}-{tps['max']:.1f})")
        print(f"| {name} | " + " | ".join(vals) + " |")


if __name__ == "__main__":
    main()
