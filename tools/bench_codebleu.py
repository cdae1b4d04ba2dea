"""Our CodeBLEU against the `codebleu` package (bench.py runs it): speed and fidelity on 10,000
pairs of broken and cut-off code, CoNaLa's snippets and CodeAlpaca's Python outputs as references,
each against a perturbed copy of itself.

    python -m tools.bench codebleu

Perturbation kinds (`perturb_kind`), each drawn per pair with its own seed:
    drop      each token dropped with probability 0.1 (most no longer parse)
    rename    each name occurrence renamed with probability 0.2 (data flow breaks, syntax stays)
    truncate  cut at a random character between 30% and 95% of the code (an unfinished generation)
    shuffle   two lines swapped, with their indentation; one-line code: two tokens swapped
    mixed     5% of tokens dropped, 5% of names renamed, then cut at 60-100% of the code
"""
import json
import keyword
import logging
import os
import random
import re
import warnings

from evaluation.code_repair import parses

KINDS = ("drop", "rename", "truncate", "shuffle", "mixed")
PIECES = re.compile(r"\w+|[^\w\s]|\s+")


def _drop(code, rng, p):
    return "".join(t for t in PIECES.findall(code) if t.isspace() or rng.random() >= p)


def _rename(code, rng, p):
    return "".join(t + "_x" if t.isidentifier() and not keyword.iskeyword(t) and rng.random() < p else t
                   for t in PIECES.findall(code))


def _truncate(code, rng, lo, hi):
    return code[:max(1, round(len(code) * rng.uniform(lo, hi)))]


def _shuffle(code, rng):
    lines = code.split("\n")
    if len(lines) > 1:
        i, j = rng.sample(range(len(lines)), 2)
        lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines)
    parts = PIECES.findall(code)
    idx = [k for k, t in enumerate(parts) if not t.isspace()]
    if len(idx) > 1:
        i, j = rng.sample(idx, 2)
        parts[i], parts[j] = parts[j], parts[i]
    return "".join(parts)


def perturb_kind(code, kind, rng):
    """One perturbed copy of `code` (see the module's docstring for the kinds)."""
    if kind == "drop":
        return _drop(code, rng, 0.1)
    if kind == "rename":
        return _rename(code, rng, 0.2)
    if kind == "truncate":
        return _truncate(code, rng, 0.3, 0.95)
    if kind == "shuffle":
        return _shuffle(code, rng)
    if kind == "mixed":
        return _truncate(_rename(_drop(code, rng, 0.05), rng, 0.05), rng, 0.6, 1.0)
    raise ValueError(f"unknown perturbation {kind!r}: use one of {', '.join(KINDS)}")


def references(root):
    """{'CoNaLa': every distinct snippet of train and test, 'CodeAlpaca': every distinct output that
    is Python (parses) and not empty}, from the public copies under `root` (../shared/data)."""
    conala = [p["snippet"] for f in ("conala-train.json", "conala-test.json")
              for p in json.load(open(os.path.join(root, "conala", f)))]
    alpaca = [r["output"] for r in json.load(open(os.path.join(root, "codealpaca", "code_alpaca_2k.json")))
              if r["output"].strip() and parses(r["output"])]  # the rest is another language or prose
    return {"CoNaLa": list(dict.fromkeys(conala)), "CodeAlpaca": list(dict.fromkeys(alpaca))}


def pairs(refs, per_kind, seed=0):
    """[(kind, hypothesis, reference)]: `per_kind` references drawn (with replacement) for each kind,
    each perturbed with its own rng."""
    rng, out = random.Random(seed), []
    for kind in KINDS:
        for _ in range(per_kind):
            ref = rng.choice(refs)
            out.append((kind, perturb_kind(ref, kind, random.Random(rng.random())), ref))
    return out


def package_structure(hyps, refs):
    """The package's per-pair syntax match and data-flow match (each pair as its own corpus)."""
    from codebleu.dataflow_match import corpus_dataflow_match
    from codebleu.syntax_match import corpus_syntax_match
    return ([corpus_syntax_match([[r]], [h], "python") for h, r in zip(hyps, refs)],
            [corpus_dataflow_match([[r]], [h], "python") for h, r in zip(hyps, refs)])


def fidelity(hyps, refs):
    """(Spearman of per-pair syntax match, of data-flow match, corpus CodeBLEU ours, package's)."""
    from codebleu import calc_codebleu
    from scipy.stats import spearmanr
    from evaluation import code_ast
    import metrics
    ours = [code_ast.structure_match([h], [r]) for h, r in zip(hyps, refs)]
    syn, flow = package_structure(hyps, refs)
    rho = [spearmanr([o[k] or 0.0 for o in ours], p).statistic for k, p in ((0, syn), (1, flow))]
    package = calc_codebleu([[r] for r in refs], hyps, "python")["codebleu"]
    return rho[0], rho[1], metrics.codebleu(hyps, refs)["codebleu"], package


def bench_codebleu(root, per_kind=1000, repeat=3):
    """The tables: per data set and kind, the structural parts' per-pair Spearman with the package
    and corpus CodeBLEU; then all 10,000 pairs' corpus CodeBLEU timed, ours against the package."""
    from codebleu import calc_codebleu
    from evaluation import code_ast
    import metrics
    from tools.bench import timed
    logging.disable(logging.WARNING)  # the package warns for every pair without data flow
    warnings.simplefilter("ignore")
    every = []
    print("| references | perturbation | pairs | Spearman syntax | Spearman data flow | CodeBLEU ours / package |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, refs in references(root).items():
        rows = pairs(refs, per_kind)
        every += rows
        for kind in KINDS + ("all",):
            sel = [(h, r) for k, h, r in rows if kind in (k, "all")]
            s, d, ours, package = fidelity(*zip(*sel))
            s, d = ("—" if r != r else f"{r:.3f}" for r in (s, d))  # nan: every pair scores the same
            label = f"**all** ({len(refs)} distinct references)" if kind == "all" else kind
            print(f"| {name} | {label} | {len(sel)} | {s} | {d} | {ours:.4f} / {package:.4f} |")
    hyps, refs = [h for _, h, _ in every], [r for _, _, r in every]

    def ours():
        code_ast.structure.cache_clear()  # cold: each distinct text parsed once, as in one fresh process
        metrics.codebleu(hyps, refs)
    mine = timed(ours, repeat)
    package = timed(lambda: calc_codebleu([[r] for r in refs], hyps, "python"), repeat)
    print("\n| corpus CodeBLEU, all four parts, seconds (best of {repeat}) | ours | package | ratio |".format(repeat=repeat))
    print("| --- | --- | --- | --- |")
    print(f"| all {len(hyps)} pairs ({len(set(hyps))} distinct hypotheses, {len(set(refs))} distinct references) "
          f"| {mine:.2f} | {package:.2f} | {mine / package:.2f} |")
