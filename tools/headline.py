"""The README's headline table: a few rows and columns of a run's table over seeds (results.json).

    python -m tools.headline out/tiny-demo-10seeds
"""
import argparse
import json
import os

ROWS = ("manual prompt", "soft prompt tuning", "DDPT (DDPM-2000) top-1")
COLS = ("bleu4", "codebleu", "exact_match", "pair_loss", "differ")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders that sample.py has scored")
    args = p.parse_args(argv)
    print("| run | method | " + " | ".join(COLS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in COLS) + " |")
    for run in args.runs:
        path = os.path.join(run, "results.json")
        if not os.path.exists(path):
            raise SystemExit(f"{path} does not exist: run python sample.py --out {run} first")
        summary = json.load(open(path))
        seeds = ", ".join(map(str, summary["seeds"]))
        for method in ROWS:
            cells = summary["mean_std"].get(method, {})
            fmt = lambda c: "—" if cells.get(c, [None])[0] is None else f"{cells[c][0]:.3f} ± {cells[c][1]:.3f}"
            print(f"| {os.path.basename(run.rstrip('/'))} (seeds {seeds}) | {method} | " + " | ".join(map(fmt, COLS)) + " |")


if __name__ == "__main__":
    main()
