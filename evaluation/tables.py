"""The tables sample.py writes: each seed's own, and the table over training seeds in the run folder.

Each seed's own table (every row, every column) goes to <out>/seed<S>/results.md (write_seed). Over
the seeds (write): every row and column as mean ± standard deviation over the seeds (the sample
standard deviation, n - 1), HumanEval's pass@1 and pass@k of k programs per problem likewise, the
per-seed values in results.json, and the comparisons that matter,
with paired-bootstrap 95% intervals over the test pairs (metrics.paired_bootstrap: 1,000 resamples,
fixed seed), per seed:

    each stochastic method's top-1 (DDPT)  against  the manual prompt, and the baseline: the first one-row
                                                      tuned method (soft prompt tuning)
    its other picks of one of its k draws (best-of-k by likelihood, oracle)  against  the baseline
    every other one-row tuned method (LoPA, LoRA)  against  the baseline

A difference is marked significant (*) where its interval excludes zero. Over several seeds each
comparison is also summarised in one row (seed_summary): the mean of the per-seed differences with a
95% t-interval over the seeds (mean ± t sd / sqrt(n), n - 1 degrees of freedom: with 3 seeds
t = 4.30, so the interval can be, and often is, wider than the seeds' range, which a percentile
bootstrap over 3 seeds never is), and in how many seeds the difference is significantly above (↑)
or below (↓) zero. With more than three seeds, or more than 60 comparisons, the per-seed rows
stay in results.json only, so that the table stays readable.
"""
import json
import os
import statistics
from dataclasses import dataclass, field

from runtime import checkpoint
import metrics
import prompts

DIAGNOSTICS = ("differ", "rms_spread", "participation")  # a stochastic method's top-1 row: how its k draws differ
TESTED = ["bleu4", "codebleu", "exact_match"]  # the metrics the bootstrap compares


@dataclass
class Row:
    """One row of a seed's table. role: "baseline" (no context, manual prompt), "tuned" (a one-row
    method), "control" (a one-row method the top-1 rows are compared with too), "top-1" (a stochastic
    method's first draw), "pick" (another choice among its draws) or "oracle" (fitted to the
    references: an upper bound): tables.py compares rows by role."""
    name: str
    role: str
    gens: list  # the extracted code, one per test pair
    scores: dict  # column -> value


@dataclass
class SeedResult:
    seed: int
    rows: list = field(default_factory=list)
    raw: dict = field(default_factory=dict)  # prompt name -> raw generations
    draws: dict = field(default_factory=dict)  # "<kind> draw j" -> extracted code of each draw
    spread: dict = field(default_factory=dict)  # kind -> the prompts' diagnostics and nearest tokens
    extra: dict = field(default_factory=dict)  # pass@k (HumanEval), exec against exact match (demo)


def metric_columns():
    """The metrics' columns, a fork's own (metrics.EXTRA) after the built-in ones."""
    return ["bleu4", "codebleu", "meteor", "chrf", "rouge_l", "exact_match", *metrics.EXTRA]


def extra_columns(setup):
    """The tested data set's own columns (data.Dataset): its extra metrics, then its programs' pass rate."""
    return [*setup.tested.metrics, setup.tested.column]


def mean_std(values):
    """(mean, sample standard deviation) of the numbers among `values`; (None, None) if none; std 0 for one."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def tag(args):
    """The results files' suffix: another test set (-humaneval) or a sampling option with a suffix
    (--guidance 2: -w2) gets its own files."""
    suffix = f"-{args.data}" if args.data else ""
    for name, (opt, _) in prompts.options("sample").items():
        if opt.suffix and getattr(args, name) != opt.default:
            suffix += f"-{opt.suffix}{getattr(args, name):g}"
    return suffix


def comparisons(rows):
    """(A, B) row names to compare in one seed's results. The first one-row tuned method is the
    baseline (soft prompt tuning, the first registered): stochastic top-1 rows against the manual prompt
    and the baseline (and a control, DDPT-PD's regressor), the other picks among the draws, the other
    one-row methods (LoPA, LoRA), the controls and the oracles against the baseline."""
    named = lambda role: [r.name for r in rows if r.role == role]
    base = named("tuned")[:1]
    return ([(a, b) for a in named("top-1") for b in ["manual prompt", *base, *named("control")]]
            + [(a, b) for a in named("pick") + named("tuned")[1:] + named("control") + named("oracle") for b in base])


def as_dict(row):
    return {"method": row.name, **row.scores}


def write_seed(setup, res, folder):
    """One seed's table of every row and column, the draws' diagnostics, nearest tokens and examples:
    results.md, results.json and generations.jsonl (raw text too) in its seed folder."""
    args, cfg, test, spread, rows = setup.args, setup.cfg, setup.test, res.spread, res.rows
    fmt = lambda v: "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
    cols = [*metric_columns(), "pair_loss", "sec_per_prompt", *DIAGNOSTICS]
    cols += [c for c in extra_columns(setup) if c in rows[0].scores]
    pass_k = res.extra.get("pass_at_k")
    lines = [f"Test pairs: {len(test)} ({args.data or cfg['data']}, model {cfg['model']}; {setup.cut} references "
             f"cut to {cfg['max_code']} tokens for the loss). Manual prompt: {cfg['prompt']!r}.", "",
             "| method | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
    lines += [f"| {r.name} | " + " | ".join(fmt(r.scores[c]) for c in cols) + " |" for r in rows]
    lines += ["", "pair_loss: the LLM's mean token cross-entropy of each reference, averaged over pairs "
              "(train.py's held-out token loss pools the tokens of all pairs instead)."]
    if pass_k:
        lines += ["", f"k = {args.k} programs per problem, run against its tests ({args.timeout:g} s each):", "",
                  "| programs | " + " | ".join(list(pass_k[0])[1:]) + " |", "| --- | --- | --- |"]
        lines += [f"| {r['method']} | " + " | ".join(fmt(v) for v in list(r.values())[1:]) + " |" for r in pass_k]
    for way, found in res.extra.get("exec_vs_exact_match", {}).items():
        lines += ["", f"exec against exact match, over every row's pairs: {way}: {found['count']}"]
        lines += [f"  - {e['method']}: {e['nl']!r}: reference `{e['reference']}`, generated `{e['generated']}`"
                  for e in found["examples"]]
    for s in spread.values():
        if "mean_pairwise_cosine" in s:
            lines += ["", f"{s['title']}'s {args.k} prompts: mean pairwise cosine of their directions "
                      f"{s['mean_pairwise_cosine']:.4f}, direction norm {s['direction_norm']:.3f}, rms spread "
                      f"{fmt(s['rms_spread'])}, participation ratio {fmt(s['participation'])}; test pairs whose "
                      f"{args.k} generations are not all the same (differ): {s['differ']:.1%}"
                      + (f" (means over the test pairs; rms spread of the first draws across the instructions "
                         f"{fmt(s['across_instructions'])})" if "across_instructions" in s else "") + "."
                      + "".join(" " + report["text"] for report in s["picks"].values() if "text" in report)]
        lines += ["", f"Nearest vocabulary tokens (cosine) of {s['title']}'s first prompt, per position:", ""]
        lines += [f"{i}: " + ", ".join(repr(t) for t in toks) for i, toks in enumerate(s["nearest_tokens"])]
    tuned = next((r for r in rows if r.role == "top-1"), rows[-1])
    manual = next(r for r in rows if r.name == "manual prompt")
    lines += ["", f"Examples (instruction / reference / manual prompt / {tuned.name}):", ""]
    for i in range(min(3, len(test))):
        lines += [f"- {test[i]['nl']!r}", f"  - reference: `{test[i]['code']}`",
                  f"  - manual: `{manual.gens[i]}`", f"  - {tuned.name}: `{tuned.gens[i]}`"]
    text = "\n".join(lines) + "\n"
    print(text)
    gens = {r.name: r.gens for r in rows} | res.draws
    generations = [json.dumps({**{k: v for k, v in p.items() if k != "combo"}, **{m: g[i] for m, g in gens.items()},
                               "raw": {m: g[i] for m, g in res.raw.items()}}) + "\n" for i, p in enumerate(test)]
    sampling = {opt.name_on_command_line(name)[2:].replace("-", "_"): getattr(args, name)
                for name, (opt, _) in prompts.options("sample").items()}
    results = json.dumps({"rows": [as_dict(r) for r in rows], "spread": spread, **res.extra, "k": args.k,
                          **sampling, "seed": res.seed}, indent=2)
    suffix = tag(args)  # another test set or guidance weight never overwrites the run's own results
    for name, content in ((f"results{suffix}.md", text), (f"results{suffix}.json", results),
                          (f"generations{suffix}.jsonl", "".join(generations))):
        checkpoint.write_atomic(os.path.join(folder, name), content)


def pass_k_summary(per_seed):
    """{programs: {"pass@1": (mean, std), "pass@k": (mean, std)}} over the seeds of HumanEval's k programs
    per problem (checks.pass_at_k in each seed's extra); {} where the seeds have none."""
    rows = [r for res in per_seed.values() for r in res.extra.get("pass_at_k", [])]
    names = list(dict.fromkeys(r["method"] for r in rows))
    return {m: {c: mean_std([r[c] for r in rows if r["method"] == m]) for c in list(rows[0])[1:]} for m in names}


T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_975(df):
    """The 97.5% quantile of Student's t with df degrees of freedom: the table up to 30, above it the
    Cornish-Fisher expansion around the normal's 1.96 (within 1e-4 there)."""
    if df <= len(T_975):
        return T_975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def seed_summary(diffs):
    """The mean of the per-seed differences `diffs` and its 95% t-interval over the seeds, mean ± t sd /
    sqrt(n): where the mean would lie with other training seeds, treating the seeds as a sample of all
    of them. Returns (mean, low, high); one seed gives no interval (None, None)."""
    n, mean = len(diffs), statistics.fmean(diffs)
    if n < 2:
        return mean, None, None
    half = t_975(n - 1) * statistics.stdev(diffs) / n ** 0.5
    return mean, mean - half, mean + half


def write(setup, per_seed):
    args, seeds, first = setup.args, list(per_seed), next(iter(per_seed.values()))
    methods = list(dict.fromkeys(r.name for res in per_seed.values() for r in res.rows))
    cols = [c for c in [*metric_columns(), "pair_loss", *extra_columns(setup), *DIAGNOSTICS] if c in first.rows[0].scores]
    by = {s: {r.name: r for r in res.rows} for s, res in per_seed.items()}
    summary = {m: {c: mean_std([by[s][m].scores[c] for s in seeds if m in by[s]]) for c in cols} for m in methods}
    refs = [p["code"] for p in setup.test]
    tests = []
    for s, res in per_seed.items():
        for a, b in comparisons(res.rows):
            tests.append({"seed": s, "a": a, "b": b, **metrics.paired_bootstrap(by[s][a].gens, by[s][b].gens, refs)})
    over = []  # each comparison summarised over the seeds
    for a, b in dict.fromkeys((t["a"], t["b"]) for t in tests):
        ts = [t for t in tests if (t["a"], t["b"]) == (a, b)]
        over.append({"a": a, "b": b, "seeds": len(ts), **{m: dict(zip(("mean", "low", "high"), seed_summary([t[m]["diff"] for t in ts])),
                                                 above=sum(t[m]["significant"] and t[m]["diff"] > 0 for t in ts),
                                                 below=sum(t[m]["significant"] and t[m]["diff"] < 0 for t in ts))
                                         for m in TESTED}})
    fmt = lambda m, sd: "—" if m is None else f"{m:.4f}" if len(seeds) == 1 else f"{m:.3f} ± {sd:.3f}"
    lines = [f"{len(refs)} test pairs ({args.data or setup.cfg['data']}, model {setup.cfg['model']}), "
             f"training seeds {', '.join(map(str, seeds))}: mean ± standard deviation over the seeds "
             f"(each seed's table: seed<S>/results.md).", "",
             "| method | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
    lines += [f"| {m} | " + " | ".join(fmt(*summary[m][c]) for c in cols) + " |" for m in methods]
    if tests:
        sig = lambda t: f"{t['diff']:+.3f} [{t['low']:+.3f}, {t['high']:+.3f}]" + (" *" if t["significant"] else "")
        lines += ["", "A − B with the paired bootstrap's 95% interval over the test pairs (1,000 resamples) in each "
                  "seed; * = the interval excludes zero."]
        if len(seeds) > 1:
            lines += ["", f"Over the {len(seeds)} seeds: the mean of A − B with its 95% t-interval over the seeds "
                      "(mean ± t sd / √n), and in how many seeds the per-seed interval lies above (↑) or below (↓) zero:",
                      "", "| A | B | " + " | ".join(TESTED) + " |", "| --- | --- |" + " --- |" * len(TESTED)]
            lines += [f"| {o['a']} | {o['b']} | " + " | ".join(f"{o[m]['mean']:+.3f} [{o[m]['low']:+.3f}, {o[m]['high']:+.3f}]; "
                                                             f"{o[m]['above']}↑ {o[m]['below']}↓ of {o['seeds']}" for m in TESTED) + " |"
                      for o in over]
        if len(seeds) <= 3 and len(tests) <= 60:  # else too long to read: the summary above says it
            lines += ["", "Per seed:", "", "| A | B | seed | " + " | ".join(TESTED) + " |",
                      "| --- | --- | --- |" + " --- |" * len(TESTED)]
            lines += [f"| {t['a']} | {t['b']} | {t['seed']} | " + " | ".join(sig(t[m]) for m in TESTED) + " |" for t in tests]
        else:
            lines += ["", "Each seed's intervals: paired_bootstrap in results.json."]
    pass_k = pass_k_summary(per_seed)
    if pass_k:
        lines += ["", f"k = {setup.args.k} programs per problem, run against its tests:", "",
                  "| programs | " + " | ".join(next(iter(pass_k.values()))) + " |", "| --- | --- | --- |"]
        lines += [f"| {m} | " + " | ".join(fmt(*v) for v in cols_.values()) + " |" for m, cols_ in pass_k.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    suffix = tag(args)
    out = {"seeds": seeds, "mean_std": summary, "per_seed": {s: [as_dict(r) for r in res.rows] for s, res in per_seed.items()},
           "paired_bootstrap": tests, "over_seeds": over, "pass_at_k": pass_k}
    checkpoint.write_atomic(os.path.join(args.out, f"results{suffix}.md"), text)
    checkpoint.write_atomic(os.path.join(args.out, f"results{suffix}.json"), json.dumps(out, indent=2))
