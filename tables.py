"""The tables over training seeds that sample.py writes to the run folder.

Each seed's own table (every row, every column) is in <out>/seed<S>/results.md. Here: every row and
column as mean ± standard deviation over the seeds (the sample standard deviation, n - 1), the
per-seed values in results.json, and the comparisons that matter, with paired-bootstrap 95%
intervals over the test pairs (metrics.paired_bootstrap: 1,000 resamples, fixed seed), per seed:

    each stochastic method's top-1 (DDPT)  against  the manual prompt, and each one-row tuned method (soft prompt)
    its other picks of one of its k draws (best-of-k by likelihood, oracle)  against  each one-row tuned method

A difference is marked significant (*) where its interval excludes zero.
"""
import json
import os
import statistics

import checkpoint
import metrics

COLS = ["bleu4", "codebleu", "meteor", "chrf", "rouge_l", "exact_match", "pair_loss", "exec", "pass@1",
        "differ", "rms_spread", "participation"]  # the last three: how a stochastic method's k draws differ
TESTED = ["bleu4", "codebleu", "exact_match"]  # the metrics the bootstrap compares


def mean_std(values):
    """(mean, sample standard deviation) of the numbers among `values`; (None, None) if none; std 0 for one."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def comparisons(res):
    """(A, B) row names to compare in one seed's results: stochastic top-1 rows against the manual
    prompt and against each one-row tuned method; the other picks among the draws against the latter."""
    return ([(a, b) for a in res["top1"] for b in ["manual prompt", *res["tuned"]]]
            + [(a, b) for a in res["picks"] for b in res["tuned"]])


def write(args, per_seed):
    seeds = list(per_seed)
    first = per_seed[seeds[0]]
    methods = list(dict.fromkeys(r["method"] for res in per_seed.values() for r in res["rows"]))
    cols = [c for c in COLS if c in first["rows"][0]]
    by = {s: {r["method"]: r for r in res["rows"]} for s, res in per_seed.items()}
    summary = {m: {c: mean_std([by[s][m][c] for s in seeds if m in by[s]]) for c in cols} for m in methods}
    refs = [p["code"] for p in first["test"]]
    tests = []
    for s, res in per_seed.items():
        for a, b in comparisons(res):
            tests.append({"seed": s, "a": a, "b": b, **metrics.paired_bootstrap(res["gens"][a], res["gens"][b], refs)})
    fmt = lambda m, sd: "—" if m is None else f"{m:.4f}" if len(seeds) == 1 else f"{m:.3f} ± {sd:.3f}"
    lines = [f"{len(refs)} test pairs ({args.data or first['cfg']['data']}, model {first['cfg']['model']}), "
             f"training seeds {', '.join(map(str, seeds))}: mean ± standard deviation over the seeds "
             f"(each seed's table: seed<S>/results.md).", "",
             "| method | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
    lines += [f"| {m} | " + " | ".join(fmt(*summary[m][c]) for c in cols) + " |" for m in methods]
    if tests:
        sig = lambda t: f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}]" + (" *" if t["significant"] else "")
        lines += ["", "A − B with the paired bootstrap's 95% interval over the test pairs (1,000 resamples); "
                  "* = the interval excludes zero:", "",
                  "| A | B | seed | " + " | ".join(TESTED) + " |", "| --- | --- | --- |" + " --- |" * len(TESTED)]
        lines += [f"| {t['a']} | {t['b']} | {t['seed']} | " + " | ".join(sig(t[m]) for m in TESTED) + " |" for t in tests]
    text = "\n".join(lines) + "\n"
    print(text)
    tag = f"-{args.data}" if args.data else ""
    out = {"seeds": seeds, "mean_std": summary, "per_seed": {s: res["rows"] for s, res in per_seed.items()},
           "paired_bootstrap": tests}
    checkpoint.write_atomic(os.path.join(args.out, f"results{tag}.md"), text)
    checkpoint.write_atomic(os.path.join(args.out, f"results{tag}.json"), json.dumps(out, indent=2))
