"""A learning-rate sweep for any train.py setting: each method at each rate, its held-out token loss on
the validation split (the prompts sample.py would draw), a table with the best rate of each method.

    python -m tools.sweep --rates prompt-tuning=1e-2,3e-2,1e-1 ddpt=3e-5,1e-4,3e-4 --seeds 0 -- \\
        --model smollm2-135m --data conala --data-dir ../shared/data/conala --dtype bf16 --batch-size 8 --steps 80

Everything after `--` goes to train.py as it is. Each (method, rate) trains in a fresh train.py process
into a temporary folder (deleted afterwards), every seed of it in that one process. The last line
names each method's best rate as train.py's `--lr METHOD=RATE ...`, ready to paste.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_rates(values):
    """['ddpt=1e-5,3e-5', ...] -> {'ddpt': [1e-5, 3e-5], ...}"""
    out = {}
    for value in values:
        method, _, rates = value.partition("=")
        try:
            out[method] = [float(r) for r in rates.split(",")]
        except ValueError:
            sys.exit(f"--rates {value}: expected METHOD=RATE,RATE,... (ddpt=1e-5,3e-5)")
    return out


def run(method, lr, seeds, train_args, folder):
    """Trains one method at one rate; returns (each seed's last held-out token loss, the manual prompt's, seconds)."""
    out = os.path.join(folder, f"{method}-{lr:g}")
    cmd = [sys.executable, "train.py", *train_args, "--method", method, "--lr", str(lr), "--seed", *map(str, seeds),
           "--out", out]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"train.py failed for {method} at lr {lr:g}:\n{done.stderr[-2000:]}")
    last = [[json.loads(line) for line in open(os.path.join(out, f"seed{s}", "log.jsonl"))][-1] for s in seeds]
    return [r["valid_token_loss"] for r in last], last[0]["valid_token_loss_manual"], time.perf_counter() - t0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, train_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", nargs="+", required=True, metavar="METHOD=RATES", help="each method's rates, comma-separated")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds of every (method, rate)")
    args = p.parse_args(ours)
    sweep, best = parse_rates(args.rates), {}
    steps = train_args[train_args.index("--steps") + 1] if "--steps" in train_args else "600"
    seeds = " ".join(map(str, args.seeds))
    print(f"| method | lr | held-out token loss after {steps} steps (seeds {seeds}) | seconds |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for method, rates in sweep.items():
            for lr in rates:
                losses, manual, secs = run(method, lr, args.seeds, train_args, folder)
                mean = statistics.mean(losses)
                spread = f" ± {statistics.stdev(losses):.4f}" if len(losses) > 1 else ""
                print(f"| {method} | {lr:g} | {mean:.4f}{spread} | {secs:.0f} |", flush=True)
                if mean < best.get(method, (None, float("inf")))[1]:
                    best[method] = (lr, mean)
    print(f"| manual prompt | — | {manual:.4f} | — |")
    print("\nBest rate of each method: --lr " + " ".join(f"{m}={lr:g}" for m, (lr, _) in best.items()))


if __name__ == "__main__":
    main()
