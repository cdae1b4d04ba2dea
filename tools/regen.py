"""The regeneration check: re-runs the demo block of docs/results.md under other thread counts and
another processor's code paths, and prints, for every cell of its table, the new value against the
stated mean ± std.

    python -m tools.regen                                # 1, 2 and 4 threads, every seed of the block
    python -m tools.regen --seeds 0 1 2 --avx2           # the first three seeds, and AVX2's code paths too
    python -m tools.regen --threads 1 --seeds 0          # one thread count, one seed

Each setting runs the block's own command with OMP_NUM_THREADS set, from an empty cache of its own
(as on a fresh clone; the tiny model is the shipped one), into out/regen-<setting>. --avx2 adds one
thread under the code paths an AVX2 laptop takes (ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2: PyTorch's
and MKL's AVX2 kernels on this AVX-512 machine), the nearest this machine comes to another processor. A cell is marked !
where the new value lies more than 2 stated standard deviations + 0.01 from the stated mean: with
fewer seeds than the block the new value is the mean over those seeds, which should land inside that
band too. The same machine gives the same value with any thread count (train.py --reproducible);
another machine may not (docs/reliability.md), and the band is what it should expect.
"""
import argparse
import json
import os
import re
import subprocess
import time

from tools import report

DOC = os.path.join(report.ROOT, "docs", "results.md")


def stated(doc=DOC):
    """(command, out folder, {method: {column: (mean, std)}}) of the demo block's table in `doc`."""
    command, out, body = report.block(doc, "tiny-demo")
    return command, os.path.dirname(out), report.means(body)


SETTINGS = {"avx2": {"OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}}


def command_for(command, folder, threads, seeds=None):
    """The block's `command` writing into out/regen-<threads>threads (or out/regen-avx2; and a cache of its
    own) instead of `folder`, with only `seeds` where given."""
    out = f"out/regen-{threads}threads" if isinstance(threads, int) else f"out/regen-{threads}"
    if seeds:
        command = re.sub(r"--seed( \d+)+", "--seed " + " ".join(map(str, seeds)), command)
    return out, command.replace(folder, out).replace("out/fresh-cache", f"{out}-cache")


def outside(value, mean, std):
    """True where `value` lies more than 2 std + 0.01 from `mean`."""
    return abs(value - mean) > 2 * std + 0.01


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4], help="the OMP_NUM_THREADS values to try")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="a subset of the block's seeds (default: all)")
    p.add_argument("--avx2", action="store_true", help="also one thread under AVX2's code paths (another processor's)")
    p.add_argument("--reuse", action="store_true", help="re-read the out/regen-* folders of an earlier check instead of "
                   "running the command again (its wall times are then not known)")
    args = p.parse_args(argv)
    args.threads += ["avx2"] if args.avx2 else []
    command, folder, table = stated()
    new, secs = {}, {}
    for t in args.threads:
        out, cmd = command_for(command, folder, t, args.seeds)
        env = SETTINGS.get(t, {"OMP_NUM_THREADS": str(t)})
        print(f"{' '.join(f'{k}={v}' for k, v in env.items())}: {cmd}", flush=True)
        t0 = time.time()
        done = subprocess.run("true" if args.reuse else cmd, shell=True, cwd=report.ROOT, env=dict(os.environ, **env),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the block's command failed with {t} threads (exit {done.returncode}): "
                             f"{done.stderr.strip().splitlines()[-1:]}")
        secs[t] = time.time() - t0
        new[t] = json.load(open(os.path.join(report.ROOT, out, "results.json")))
    seeds = new[args.threads[0]]["seeds"]
    print(f"\nThe demo block's table (docs/results.md) against its command re-run with seeds "
          f"{', '.join(map(str, seeds))}; ! = more than 2 std + 0.01 from the stated mean:\n")
    name = lambda t: "1 thread, AVX2 paths" if t == "avx2" else f"{t} thread{'s' * (t > 1)}"
    print("| method | column | stated mean ± std | " + " | ".join(map(name, args.threads)) + " |")
    print("| --- | --- | --- |" + " --- |" * len(args.threads))
    flagged = {t: 0 for t in args.threads}
    for method, cols in table.items():
        for col, (mean, std) in cols.items():
            row = []
            for t in args.threads:
                value = new[t]["mean_std"].get(method, {}).get(col, [None])[0]
                bad = value is not None and outside(value, mean, std)
                flagged[t] += bad
                row.append("—" if value is None else f"{value:.3f}" + (" !" if bad else ""))
            print(f"| {method} | {col} | {mean:.3f} ± {std:.3f} | " + " | ".join(row) + " |")
    cells = sum(len(cols) for cols in table.values())
    values = lambda t: [[r.get(c) for c in table.get(r["method"], {})] for rows in new[t]["per_seed"].values()
                        for r in rows]  # the table's cells of each seed, no timings
    print(f"\n| setting | wall time (s) | cells outside the band (of {cells}) | every seed's cells as with "
          f"{name(args.threads[0])} |")
    print("| --- | --- | --- | --- |")
    for t in args.threads:
        print(f"| {name(t)} | {'—' if args.reuse else f'{secs[t]:.0f}'} | {flagged[t]} | {'identical' if values(t) == values(args.threads[0]) else 'differ'} |")


if __name__ == "__main__":
    main()
