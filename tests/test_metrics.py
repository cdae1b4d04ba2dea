"""metrics.py: hand-worked values, and equality with the reference libraries on real CoNaLa pairs."""
import ast
import json
import math
import os
import random
import re
from collections import Counter

import pytest

from evaluation import code_ast
from evaluation import code_repair
import metrics
from metrics import bleu4, chrf, codebleu, evaluate, exact_match, meteor, rouge_l, tokenize_code



def test_tokenizer():
    assert tokenize_code("df.groupBy('a_b')[\"x\"]") == [
        "df", ".", "group", "By", "(", "`", "a_b", "`", ")", "[", "`", "x", "`", "]"]
    assert tokenize_code("  ") == []


def test_hand_worked():
    assert bleu4(["a b c d e"], ["a b c d f"]) == pytest.approx((4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    assert bleu4(["a b c d e"], ["a b c d f"], smooth=True) == pytest.approx((4 / 5 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25)
    assert bleu4(["a b c d"], ["a b c d e f"]) == pytest.approx(math.exp(1 - 6 / 4))  # brevity penalty
    assert bleu4(["a b c"], ["a b c"]) == 0.0  # no 4-grams at all: unsmoothed BLEU-4 is 0
    assert chrf(["ab"], ["a b c"]) == pytest.approx(7 / 11)  # P = 1, R = (2/3 + 1/2) / 2, F2
    assert rouge_l(["a b c d"], ["a c b d e"]) == pytest.approx(2 / 3)  # LCS 3: P = 3/4, R = 3/5
    assert exact_match([" x = 1\n", "y"], ["x = 1", "z"]) == 0.5
    cb = codebleu(["return x"], ["return x + 1"])
    bp = math.exp(1 - 4 / 2)
    assert cb["ngram_match"] == pytest.approx(bp * (1 * 1 * 0.1 * 0.1) ** 0.25)  # eps 0.1 for 0 matches
    # recall, keywords weigh 1: (1 + 0.2) / (1 + 3 * 0.2), then 1/3, 0.1/2, 0.1/1; no brevity
    # penalty, since the package takes every reference's length as 2 in this part (see metrics.py)
    assert cb["weighted_ngram_match"] == pytest.approx((0.75 * (1 / 3) * 0.05 * 0.1) ** 0.25)
    # syntax: the reference x = f(1) has 5 subtrees in tree-sitter's shapes (module, expression
    # statement, assignment, call, argument list); f(1) holds the call and its argument list
    assert codebleu(["f(1)"], ["x = f(1)"])["syntax_match"] == pytest.approx(2 / 5)
    assert codebleu(["y = g(2)"], ["x = f(1)"])["syntax_match"] == 1.0  # names and values do not count
    assert codebleu(["x = f('1')"], ["x = f(1)"])["syntax_match"] == 0.0  # a string has children, an int none
    # data flow of the reference: 1 -> x, x -> x, 1, (x, 1) -> y: five edges, literals count as
    # names (as in the package), then renamed by order of appearance
    ref = "x = 1\ny = x + 1"
    assert codebleu(["a = 1\nb = a + 1"], [ref])["dataflow_match"] == 1.0  # renamed: same edges
    assert codebleu(["a = 1\nb = 2"], [ref])["dataflow_match"] == pytest.approx(2 / 5)  # 1 and 1 -> a
    assert codebleu(["b = 2\nprint(b)"], [ref])["dataflow_match"] == pytest.approx(3 / 5)  # and b -> b
    # broken code is repaired (here: x = 1): its damaged nodes never match, its tokens still flow
    assert codebleu(["x = = 1"], [ref])["syntax_match"] == 0.0
    assert codebleu(["x = = 1"], [ref])["dataflow_match"] == pytest.approx(2 / 5)
    # no reference data flow in the whole corpus: reported 0, counted 1 in the total (the package's rule)
    assert codebleu(["return x"], ["return x + 1"])["dataflow_match"] == 0.0
    assert codebleu(["x = 1"], [""])["codebleu"] == pytest.approx(0.25)
    assert meteor(["a b c d"], ["a b c d"]) == pytest.approx(1 - 0.5 * (1 / 4) ** 3)  # one chunk of 4


def test_bad_input():
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu4(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        evaluate([], [])
    odd = ["", "   \n", "ñ = 'ü' + \"日本\"", "x = = (", "y " * 5000, "def f(:\n  return"]
    out = evaluate(odd, list(reversed(odd)))
    assert all(v is None or 0 <= v <= 1 for v in out.values())
    assert evaluate(odd, odd)["exact_match"] == 1.0


def test_meteor_without_wordnet(monkeypatch):
    def missing():
        raise LookupError("METEOR needs WordNet: online, nltk.download('wordnet'); offline, apt-get install wordnet-base")
    monkeypatch.setattr(metrics, "_wordnet", missing)
    with pytest.warns(UserWarning, match="METEOR skipped: METEOR needs WordNet"):
        assert evaluate(["a"], ["a"])["meteor"] is None
    with pytest.raises(LookupError, match="apt-get install wordnet-base"):
        meteor(["a"], ["a"])


def _pairs(shared):
    """500 CoNaLa test snippets, each against a perturbed copy (a token dropped, two swapped, a name
    renamed, or the snippet itself), plus the edge cases: 506 pairs."""
    snippets = [p["snippet"] for p in json.load(open(shared("conala/conala-test.json")))]
    rng = random.Random(0)
    hyps = []
    for i, s in enumerate(snippets):
        parts = re.findall(r"\w+|[^\w\s]|\s+", s)
        idx = [j for j, p in enumerate(parts) if not p.isspace()]
        kind = i % 4
        if kind == 0 and len(idx) > 1:
            parts.pop(rng.choice(idx))
        elif kind == 1 and len(idx) > 1:
            j = rng.randrange(len(idx) - 1)
            parts[idx[j]], parts[idx[j + 1]] = parts[idx[j + 1]], parts[idx[j]]
        elif kind == 2:
            names = sorted({p for p in parts if p.isidentifier()})
            if names:
                old = rng.choice(names)
                parts = ["renamed" if p == old else p for p in parts]
        hyps.append("".join(parts))
    edge = ["", "  ", "x = = (", "ñ = 'ü'", "a " * 3000, "print(1)"]
    return hyps + edge, snippets + list(reversed(edge))


def _chunks(hyps, refs, size=10):
    return [(hyps[i:i + size], refs[i:i + size]) for i in range(0, len(hyps), size)]


def test_against_sacrebleu_nltk_rouge(shared):
    import sacrebleu
    from nltk.translate.bleu_score import corpus_bleu
    from rouge_score import rouge_scorer
    hyps, refs = _pairs(shared)
    assert len(hyps) >= 500
    join = lambda xs: [" ".join(tokenize_code(x)) for x in xs]
    for h, r in _chunks(hyps, refs) + [(hyps, refs)]:
        for smooth, method in ((False, "none"), (True, "add-k")):
            want = sacrebleu.corpus_bleu(join(h), [join(r)], tokenize="none", smooth_method=method,
                                         smooth_value=1 if smooth else None).score / 100
            assert bleu4(h, r, smooth) == pytest.approx(want, abs=1e-9)
        assert chrf(h, r) == pytest.approx(sacrebleu.corpus_chrf(h, [r]).score / 100, abs=1e-9)
    long_enough = [(h, r) for h, r in zip(hyps, refs) if len(tokenize_code(h)) >= 4]
    h4, r4 = zip(*long_enough)
    want = corpus_bleu([[tokenize_code(r)] for r in r4], [tokenize_code(h) for h in h4])
    assert bleu4(list(h4), list(r4)) == pytest.approx(want, abs=1e-9)

    class Tok:
        tokenize = staticmethod(tokenize_code)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Tok())
    for h, r in zip(hyps, refs):
        assert rouge_l([h], [r]) == pytest.approx(scorer.score(r, h)["rougeL"].fmeasure, abs=1e-9)


def test_hand_worked_equals_the_package():
    from codebleu import calc_codebleu
    cases = [("f(1)", "x = f(1)"), ("y = g(2)", "x = f(1)"), ("x = f('1')", "x = f(1)"), ("x = = 1", "x = 1\ny = x + 1"),
             ("a = 1\nb = 2", "x = 1\ny = x + 1"), ("return x", "return x + 1"), ("x = 1", ""), ("a" * 100000, "a"),
             ("print 'hi'", "print('hi')"), ("for x in y:\n    z = x", "for x in y:\n    z = x\nprint(z)")]
    for h, r in cases:
        got, want = codebleu([h], [r]), calc_codebleu([r], [h], "python")
        assert got["syntax_match"] == pytest.approx(want["syntax_match_score"]), (h, r)
        assert got["dataflow_match"] == pytest.approx(want["dataflow_match_score"]), (h, r)


def test_repair():
    fixed = code_repair.parse("os.kill(os.getpid() signal.SIGUSR1)")  # a missing comma
    assert ast.unparse(fixed) == "os.kill(os.getpid(), signal.SIGUSR1)"
    broken = {ast.unparse(n) for n in ast.walk(fixed) if getattr(n, "broken", False)}
    assert "os.kill(os.getpid(), signal.SIGUSR1)" in broken and "os.getpid()" not in broken
    assert ast.unparse(code_repair.parse("print(x, end=''")) == "print(x, end='')"  # cut off
    assert ast.unparse(code_repair.parse("print 'hello'")) == "print('hello')"  # Python 2
    assert not code_repair.parses("x = = 1") and code_repair.parses("x = 1") and code_repair.parse("") is not None
    assert code_repair.parse(")))").body == []  # nothing left to read


def test_against_codebleu_package(shared):
    """n-gram halves: equal. Structural halves (our ast vs its tree-sitter), on CoNaLa and on
    CodeAlpaca's Python, each reference against a copy with tokens dropped, names renamed, the code
    cut off, lines or tokens swapped, or all of these (tools/bench_codebleu.py, 200 pairs of each
    kind): per-pair Spearman of syntax and of data-flow match with the package's >= 0.85 over each
    data set's pairs and >= 0.75 within each kind, corpus CodeBLEU within 0.02 for each."""
    from codebleu import calc_codebleu
    from scipy.stats import spearmanr
    from tools import bench_codebleu
    hyps, refs = _pairs(shared)
    for h, r in _chunks(hyps, refs, 25) + [(hyps, refs)]:
        want, got = calc_codebleu(r, h, "python"), codebleu(h, r)
        assert got["ngram_match"] == pytest.approx(want["ngram_match_score"], abs=1e-9)
        assert got["weighted_ngram_match"] == pytest.approx(want["weighted_ngram_match_score"], abs=1e-9)
    snippets = refs[:500]
    sets = {"CoNaLa one edit": [("edit", h, r) for h, r in zip(hyps[:500], snippets)],
            "CoNaLa shuffled across pairs": [("shuffled", h, r) for h, r in zip(snippets[1:] + snippets[:1], snippets)]}
    for name, references in bench_codebleu.references(os.path.dirname(shared("codealpaca"))).items():
        sets[name] = bench_codebleu.pairs(references, per_kind=200, seed=1)  # not the benchmark's seed
    for name, rows in sets.items():
        h, r = [x[1] for x in rows], [x[2] for x in rows]
        want, got = calc_codebleu([[x] for x in r], h, "python"), codebleu(h, r)
        assert abs(got["codebleu"] - want["codebleu"]) <= 0.02, (name, got, want)
        syn, flow = bench_codebleu.package_structure(h, r)
        ours = [code_ast.structure_match([a], [b]) for a, b in zip(h, r)]
        for kind in sorted({x[0] for x in rows}) + ["all"]:
            idx = [i for i, x in enumerate(rows) if kind in (x[0], "all")]
            for k, theirs in ((0, syn), (1, flow)):
                a, b = [ours[i][k] or 0.0 for i in idx], [theirs[i] for i in idx]
                if len(set(b)) > 1:  # (renamed names leave every syntax match at 1.0)
                    assert spearmanr(a, b).statistic >= (0.85 if kind == "all" else 0.75), (name, kind, k)


def test_package_text_is_the_packages_preprocessing(shared):
    """What the structural halves read: the package's own comment and docstring removal, on every
    CoNaLa reference, its perturbations and CodeAlpaca's Python (where its tokenizer-based removal
    fails, the package keeps the code as it is, and so do we)."""
    from codebleu.syntax_match import remove_comments_and_docstrings
    from tools import bench_codebleu
    texts = []
    for references in bench_codebleu.references(os.path.dirname(shared("codealpaca"))).values():
        texts += references + [h for _, h, _ in bench_codebleu.pairs(references, per_kind=100, seed=2)]
    texts += ["'-'.join(x)", "x = 1  # note\n\n\ny = 'a' 'b'", 'def f():\n    """doc"""\n    return 1', "f(\n'a')"]
    for text in texts:
        try:
            want = remove_comments_and_docstrings(text, "python")
        except Exception:  # the package's own catch-all around it
            want = text
        assert code_ast.package_text(text) == want, text


def test_paired_bootstrap_equals_a_direct_computation():
    """The interval from per-pair statistics equals recomputing each metric on each resampled corpus."""
    import numpy as np
    rng = random.Random(1)
    refs = [f"x = sorted(items_{i}) + [{i}]" if i % 2 else f"print(len(words_{i}))" for i in range(40)]
    a = [r if rng.random() < 0.6 else r.replace("sorted", "list") for r in refs]
    b = [r if rng.random() < 0.3 else r[:len(r) // 2] for r in refs]
    R = 40
    got = metrics.paired_bootstrap(a, b, refs, resamples=R, seed=7)
    idx = np.random.default_rng(7).integers(0, len(refs), size=(R, len(refs)))
    fns = {"bleu4": bleu4, "codebleu": lambda h, r: codebleu(h, r)["codebleu"], "exact_match": exact_match}
    for name, fn in fns.items():
        diffs = sorted(fn([a[i] for i in row], [refs[i] for i in row]) - fn([b[i] for i in row], [refs[i] for i in row])
                       for row in idx)
        assert got[name]["diff"] == pytest.approx(fn(a, refs) - fn(b, refs), abs=1e-12)
        assert got[name]["low"] == pytest.approx(diffs[1], abs=1e-12)  # int(0.025 * 40) = 1
        assert got[name]["high"] == pytest.approx(diffs[38], abs=1e-12)  # int(0.975 * 40) - 1 = 38
        assert got[name]["significant"] == (diffs[1] > 0 or diffs[38] < 0)
    assert got["exact_match"]["diff"] > 0 and got["exact_match"]["significant"]  # 60% exact against 30%
    same = metrics.paired_bootstrap(a, a, refs, resamples=50)
    assert all(v == {"diff": 0.0, "low": 0.0, "high": 0.0, "significant": False} for v in same.values())


def _official_conala(hyps, refs):
    """Our reading of conala-baseline's eval/conala_eval.py, step by step: its tokenizer, then the
    corpus BLEU it imports (bleu_score.compute_bleu, max_order 4, smooth=False), times 100."""
    def tokenize_for_bleu_eval(code):
        code = re.sub(r"([^A-Za-z0-9_])", r" \1 ", code)
        code = re.sub(r"([a-z])([A-Z])", r"\1 \2", code)
        code = re.sub(r"\s+", " ", code)
        code = code.replace('"', "`").replace("'", "`")
        return [t for t in code.split(" ") if t]

    def ngrams(tokens):
        return Counter(tuple(tokens[i:i + n]) for n in range(1, 5) for i in range(len(tokens) - n + 1))

    matches, possible, ref_len, hyp_len = [0] * 4, [0] * 4, 0, 0
    for h, r in zip(map(tokenize_for_bleu_eval, hyps), map(tokenize_for_bleu_eval, refs)):
        ref_len, hyp_len = ref_len + len(r), hyp_len + len(h)
        for gram, count in (ngrams(h) & ngrams(r)).items():
            matches[len(gram) - 1] += count
        for n in range(1, 5):
            if len(h) - n + 1 > 0:
                possible[n - 1] += len(h) - n + 1
    precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    geo_mean = math.exp(sum(math.log(p) / 4 for p in precisions)) if min(precisions) > 0 else 0.0
    ratio = hyp_len / ref_len
    return 100 * geo_mean * (1.0 if ratio > 1.0 else math.exp(1 - 1 / ratio))


def test_conala_bleu_is_the_official_script(shared):
    from metrics import conala_bleu
    hyps, refs = _pairs(shared)  # CoNaLa's test snippets, perturbed, and edge cases
    for h, r in _chunks(hyps, refs, size=7) + [(hyps, refs)]:
        if any(map(tokenize_code, h)) and any(map(tokenize_code, r)):  # (else the script divides by zero)
            assert conala_bleu(h, r) == pytest.approx(_official_conala(h, r), abs=1e-9)
    assert conala_bleu(refs, refs) == pytest.approx(100.0)
    assert conala_bleu(["x = 1"], ["y = 2"]) == 0.0 == _official_conala(["x = 1"], ["y = 2"])  # no 4-gram match
    # a hand-computed case: 'a = b ( c )' against 'a = b ( d )': precisions 5/6, 3/5, 2/4, 1/3, brevity 1
    assert conala_bleu(["a = b(c)"], ["a = b(d)"]) == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)


def test_the_interval_over_seeds_can_be_wider_than_their_range():
    """tables.seed_summary: a t-interval, which 3 seeds can make (and here do make) wider than their
    range, where a percentile bootstrap over 3 seeds is at most the range; identical seeds give zero width."""
    from scipy import stats

    from evaluation import tables
    for df in [*range(1, 40), 60, 120, 1000]:
        assert tables.t_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)
    diffs = [0.01, 0.03, 0.05]
    mean, low, high = tables.seed_summary(diffs)
    assert low < min(diffs) and high > max(diffs) and low < 0 < high  # every seed above zero, the mean not surely
    ref = stats.t.interval(0.95, len(diffs) - 1, loc=mean, scale=stats.sem(diffs))
    assert (low, high) == pytest.approx(ref, abs=1e-4)
    assert tables.seed_summary([0.2] * 10) == pytest.approx((0.2, 0.2, 0.2))
    assert tables.seed_summary([0.2])[1:] == (None, None)
