"""The README's headline table: a few rows and columns of a run's table over seeds (results.json).

    python -m tools.headline out/tiny-demo-10seeds
    python -m tools.headline out/tiny-demo-10seeds out/demo-pre1 --seeds 0 1 2    # several runs, the same seeds
"""
import argparse
import json
import os
import statistics

ROWS = ("manual prompt", "soft prompt tuning", "DDPT (DDPM-2000) top-1")
COLS = ("bleu4", "codebleu", "exact_match", "pair_loss", "differ")


def cell(summary, method, col, seeds):
    """"mean ± std" of one row's column over the seeds (all of the run's, or `seeds`), or "—"."""
    if seeds is None:
        mean, std = summary["mean_std"].get(method, {}).get(col, [None, None])
    else:
        values = [r[col] for s in seeds for r in summary["per_seed"][str(s)] if r["method"] == method and r.get(col) is not None]
        mean, std = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0) if values else (None, None)
    return "—" if mean is None else f"{mean:.3f} ± {std:.3f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders that sample.py has scored")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="only these training seeds of each run")
    args = p.parse_args(argv)
    print("| run | method | " + " | ".join(COLS) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in COLS) + " |")
    for run in args.runs:
        path = os.path.join(run, "results.json")
        if not os.path.exists(path):
            raise SystemExit(f"{path} does not exist: run python sample.py --out {run} first")
        summary = json.load(open(path))
        missing = set(args.seeds or []) - set(summary["seeds"])
        if missing:
            raise SystemExit(f"{run} has no seed {min(missing)}: it has {', '.join(map(str, summary['seeds']))}")
        seeds = ", ".join(map(str, args.seeds or summary["seeds"]))
        for method in ROWS:
            print(f"| {os.path.basename(run.rstrip('/'))} (seeds {seeds}) | {method} | "
                  + " | ".join(cell(summary, method, c, args.seeds) for c in COLS) + " |")


if __name__ == "__main__":
    main()
