"""Code-generation metrics, written from scratch: BLEU-4, ChrF, Rouge-L, simplified CodeBLEU,
exact match, pass@k; METEOR through nltk. `hyps` and `refs` are lists of strings, one reference per
hypothesis; every score is in [0, 1]. No model code here. What each equals (sacrebleu, nltk,
rouge_score, the codebleu package) is in docs/evaluation.md and tests/test_metrics.py.
"""
import glob
import math
import os
import re
import shutil
import warnings
from collections import Counter

from evaluation import code_ast

_NON_WORD = re.compile(r"([^A-Za-z0-9_])")
_CAMEL = re.compile(r"([a-z])([A-Z])")


def tokenize_code(code):
    """The CoNaLa evaluation tokenizer: split around non-word characters and camelCase, quotes -> `."""
    code = _CAMEL.sub(r"\1 \2", _NON_WORD.sub(r" \1 ", code))
    return code.replace('"', "`").replace("'", "`").split()  # (the script's split(' ') minus empty tokens)


def _check(hyps, refs):
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references: pass one reference per hypothesis")
    if not hyps:
        raise ValueError("no hypotheses to score: the lists are empty")


def _tokens(hyps, refs):
    _check(hyps, refs)
    return [tokenize_code(h) for h in hyps], [tokenize_code(r) for r in refs]


def _ngrams(tokens, n):
    return Counter(zip(*(tokens[i:] for i in range(n)))) if n > 1 else Counter(tokens)


# ---- BLEU-4 (Papineni et al. 2002) -------------------------------------------------------------
def _bleu_stats(h, ref):
    """One pair's share of the corpus sums: [c, r, correct_1..4, total_1..4]."""
    out = [len(h), len(ref)] + [0] * 8
    for n in range(1, min(4, len(h)) + 1):
        out[1 + n] = sum((_ngrams(h, n) & _ngrams(ref, n)).values()) if len(ref) >= n else 0
        out[5 + n] = len(h) - n + 1
    return out


def _bleu(hyp_toks, ref_toks, smooth=False):
    """BP * exp(mean_n log p_n), p_n = clipped n-gram matches / hypothesis n-grams, summed over the
    corpus: sacrebleu's BLEU. nltk's corpus_bleu differs for hypotheses under 4 tokens, where it
    counts one n-gram (a max(1, count) denominator) and sacrebleu none."""
    return _bleu_from([sum(col) for col in zip(*map(_bleu_stats, hyp_toks, ref_toks))], smooth)


def _bleu_from(sums, smooth=False):
    """BLEU from the summed statistics of `_bleu_stats`."""
    c, r, correct, total = sums[0], sums[1], sums[2:6], sums[6:10]
    if not any(correct):
        return 0.0
    log_p = 0.0
    for n in range(4):
        k = 1 if smooth and n > 0 else 0  # Lin & Och 2004: add one to both counts of the 2- to 4-gram precisions
        if total[n] + k == 0 or correct[n] + k == 0:
            return 0.0
        log_p += math.log((correct[n] + k) / (total[n] + k)) / 4
    bp = 1.0 if c >= r else math.exp(1 - r / c)
    return bp * math.exp(log_p)


def bleu4(hyps, refs, smooth=False):
    return _bleu(*_tokens(hyps, refs), smooth)


def conala_bleu(hyps, refs):
    """CoNaLa's official score (conala-baseline's eval/conala_eval.py, the number its leaderboard and
    papers report: seq2seq 14.72, TranX+BERT 34.2): corpus BLEU-4 of `tokenize_code` tokens, one
    reference, no smoothing, times 100. That is bleu4 x 100 (tests/test_metrics.py holds the two
    equal); where every hypothesis is empty the script divides by zero and this gives 0."""
    return 100 * bleu4(hyps, refs)


# ---- ChrF (Popovic 2015) -----------------------------------------------------------------------
def chrf(hyps, refs, order=6, beta=2.0):
    """F_beta of the character n-gram precision and recall, each averaged over the orders n = 1..6
    that occur, from corpus-summed statistics; whitespace is removed first."""
    _check(hyps, refs)
    stats = [[0, 0, 0] for _ in range(order)]  # hypothesis n-grams, reference n-grams, matches
    for h, ref in zip(hyps, refs):
        h, ref = "".join(h.split()), "".join(ref.split())
        for n in range(1, order + 1):
            hc = Counter(h[i:i + n] for i in range(len(h) - n + 1))
            rc = Counter(ref[i:i + n] for i in range(len(ref) - n + 1))
            s = stats[n - 1]
            if rc:  # an order the reference is too short for counts nothing (sacrebleu's convention)
                s[0], s[1], s[2] = s[0] + max(len(h) - n + 1, 0), s[1] + len(ref) - n + 1, s[2] + sum((hc & rc).values())
    seen = [(m / nh, m / nr) for nh, nr, m in stats if nh > 0 and nr > 0]
    if not seen:
        return 0.0
    p, r, b2 = sum(x for x, _ in seen) / len(seen), sum(y for _, y in seen) / len(seen), beta ** 2
    return (1 + b2) * p * r / (b2 * p + r) if p + r > 0 else 0.0


# ---- Rouge-L (Lin 2004) ------------------------------------------------------------------------
def _lcs(a, b):
    """Length of the longest common subsequence, bit-parallel (Allison & Dix 1986; Hyyro 2004):
    one integer of len(a) bits, updated once per token of b."""
    masks = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    v = full = (1 << len(a)) - 1
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def _rouge_l(hyp_toks, ref_toks):
    total = 0.0
    for h, r in zip(hyp_toks, ref_toks):
        lcs = _lcs(h, r) if h and r else 0
        if lcs:
            p, rec = lcs / len(h), lcs / len(r)
            total += 2 * p * rec / (p + rec)
    return total / len(hyp_toks)


def rouge_l(hyps, refs):
    """Mean over pairs of F1(P = LCS / |hyp|, R = LCS / |ref|)."""
    return _rouge_l(*_tokens(hyps, refs))


# ---- METEOR (Banerjee & Lavie 2005), through nltk ----------------------------------------------
def _wordnet():
    """nltk's WordNet, or a clear error. Offline, Debian's wordnet-base holds WordNet 3.0: copy it
    where nltk looks (~/nltk_data; nltk refuses links out of its folder) and add the `lexnames`
    table its reader needs, from the lexnames(5WN) man page of the same package."""
    import gzip
    import nltk
    from nltk.corpus import wordnet
    try:
        wordnet.ensure_loaded()
        return wordnet
    except (LookupError, OSError):  # absent, or a copy left half-made
        pass
    debian, man = "/usr/share/wordnet", "/usr/share/man/man5/lexnames.5WN.gz"
    if not (os.path.exists(f"{debian}/data.noun") and os.path.exists(man)):
        raise LookupError("METEOR needs WordNet: online, python -c \"import nltk; nltk.download('wordnet')\"; "
                          "offline, apt-get install wordnet-base wordnet-sense-index")
    home = os.path.expanduser("~/nltk_data")
    target = os.path.join(home, "corpora", "wordnet")
    os.makedirs(target, exist_ok=True)
    for f in glob.glob(f"{debian}/*"):
        if os.path.isfile(f) and not os.path.exists(os.path.join(target, os.path.basename(f))):
            shutil.copy(f, target)
    category = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
    rows = re.findall(r"^(\d\d)\t(\w+)\.(\w+)", gzip.open(man, "rt").read(), flags=re.M)
    with open(os.path.join(target, "lexnames"), "w") as f:
        f.writelines(f"{num}\t{pos}.{name}\t{category[pos]}\n" for num, pos, name in rows)
    nltk.data.path += [] if home in nltk.data.path else [home]
    wordnet.ensure_loaded()  # a lazy loader that failed loads afresh on the next use
    return wordnet


def _meteor(hyp_toks, ref_toks):
    from nltk.translate.meteor_score import meteor_score
    wn = _wordnet()
    return sum(meteor_score([r], h, wordnet=wn) if h and r else 0.0
               for h, r in zip(hyp_toks, ref_toks)) / len(hyp_toks)


def meteor(hyps, refs):
    return _meteor(*_tokens(hyps, refs))


# ---- Simplified CodeBLEU (Ren et al. 2020) -----------------------------------------------------
# 0.25 BLEU + 0.25 keyword-weighted BLEU (whitespace tokens, as the `codebleu` package computes
# them) + 0.25 syntax match + 0.25 data-flow match, both from Python's own `ast` (code_ast.py),
# repaired where the code does not parse, as tree-sitter recovers a partial tree.
PY_KEYWORDS = set("False None True and as assert async await break class continue def del elif else "
                  "except finally for from global if import in is lambda nonlocal not or pass raise "
                  "return try while with yield match case type".split())


def _codebleu_stats(hyp, ref):
    """One pair's share of CodeBLEU's corpus sums: [c, r, num_1..4, den_1..4, wnum_1..4, wden_1..4,
    syntax hits, syntax total, data-flow hits, data-flow total]. num/den: BLEU with precision =
    clipped hypothesis n-grams / max(1, hypothesis n-grams); wnum/wden: a recall over reference
    n-grams, unigrams weighted 1 for keywords and 0.2 otherwise. Whitespace tokens, as the package."""
    h, ref_toks = hyp.split(), ref.split()
    out = [len(h), len(ref_toks)] + [0.0] * 16
    for n in range(1, 5):
        hc, rc = _ngrams(h, n), _ngrams(ref_toks, n)
        hits = sum((hc & rc).values())
        out[1 + n], out[5 + n] = hits, max(1, len(h) - n + 1)
        if n == 1:
            w = {t: 1.0 if t in PY_KEYWORDS else 0.2 for t in rc}
            out[10] = sum(w[t] * min(k, hc[t]) for t, k in rc.items())
            out[14] = max(1, sum(w[t] * k for t, k in rc.items()))
        else:
            out[9 + n], out[13 + n] = hits, max(1, len(ref_toks) - n + 1)
    return out + list(code_ast.structure_counts(hyp, ref))


def _codebleu_from(sums, pairs):
    """CodeBLEU's four parts from summed `_codebleu_stats` of `pairs` pairs. Zero matches count 0.1
    (nltk's method1). The package's weighted part measures each reference's length as
    len([tokens, weights]) = 2 for its brevity penalty: kept, so scores stay comparable. A corpus
    whose references have no data flow at all reports dataflow_match 0 and counts it as 1 in the
    total (nothing to match, no penalty), as the package does; unlike the package
    (`dataflow_match_score or 1`), a real data flow that the hypotheses miss entirely counts 0."""
    c = sums[0]

    def score(num, den, r):
        if num[0] == 0:
            return 0.0
        bp = 1.0 if c > r else 0.0 if c == 0 else math.exp(1 - r / c)
        return bp * math.exp(math.fsum(0.25 * math.log((p if p else 0.1) / q) for p, q in zip(num, den)))
    s_hit, s_all, d_hit, d_all = sums[18:22]
    flow = d_hit / d_all if d_all else None
    parts = {"ngram_match": score(sums[2:6], sums[6:10], sums[1]),
             "weighted_ngram_match": score(sums[10:14], sums[14:18], 2 * pairs),
             "syntax_match": s_hit / s_all if s_all else 0.0, "dataflow_match": flow or 0.0}
    total = (parts["ngram_match"] + parts["weighted_ngram_match"] + parts["syntax_match"] + (1.0 if flow is None else flow)) / 4
    return {"codebleu": total, **parts}


def codebleu(hyps, refs):
    """0.25 each of n-gram match, weighted n-gram match, syntax match and data-flow match."""
    _check(hyps, refs)
    return _codebleu_from([sum(col) for col in zip(*map(_codebleu_stats, hyps, refs))], len(hyps))


def exact_match(hyps, refs):
    _check(hyps, refs)
    return sum(h.strip() == r.strip() for h, r in zip(hyps, refs)) / len(hyps)


def pass_at_k(n, c, k):
    """The unbiased pass@k of Chen et al. (2021) from n programs of which c passed:
    1 - C(n-c, k) / C(n, k), the chance that k drawn without replacement include a passing one;
    as their product form, which stays exact where the binomials overflow a float."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


# ---- significance: the paired bootstrap (Koehn 2004; sacrebleu's --paired-bs) -----------------
def pair_stats(hyps, refs):
    """Per-pair sufficient statistics of the corpus metrics the bootstrap resamples:
    {metric: (per-pair rows, score from summed rows)}."""
    ht, rt = _tokens(hyps, refs)
    n = len(hyps)
    return {"bleu4": ([_bleu_stats(h, r) for h, r in zip(ht, rt)], _bleu_from),
            "codebleu": ([_codebleu_stats(h, r) for h, r in zip(hyps, refs)], lambda s: _codebleu_from(s, n)["codebleu"]),
            "exact_match": ([[float(h.strip() == r.strip())] for h, r in zip(hyps, refs)], lambda s: s[0] / n)}


def paired_bootstrap(hyps_a, hyps_b, refs, resamples=1000, seed=0):
    """For each metric of `pair_stats`: A's score minus B's on the same pairs, and a 95% interval of
    that difference from `resamples` resamples of the test pairs with replacement (the same
    resampled pairs for A and B; fixed seed). The difference is significant at 5% where the
    interval excludes zero. Returns {metric: {"diff", "low", "high", "significant"}}."""
    import numpy as np
    idx = np.random.default_rng(seed).integers(0, len(refs), size=(resamples, len(refs)))
    counts = np.stack([np.bincount(row, minlength=len(refs)) for row in idx]).astype(float)  # (resamples, N)
    out = {}
    a, b = pair_stats(hyps_a, refs), pair_stats(hyps_b, refs)
    for metric, (rows_a, score) in a.items():
        rows_b = b[metric][0]
        A, B = np.array(rows_a, dtype=float), np.array(rows_b, dtype=float)
        diffs = sorted(float(score(sa) - score(sb)) for sa, sb in zip((counts @ A).tolist(), (counts @ B).tolist()))
        low, high = diffs[int(0.025 * resamples)], diffs[int(0.975 * resamples) - 1]
        out[metric] = {"diff": float(score(A.sum(0).tolist()) - score(B.sum(0).tolist())), "low": low, "high": high,
                       "significant": low > 0 or high < 0}
    return out


EXTRA = {}  # name -> metric(hyps, refs) -> float: a fork's own metric, computed by evaluate(), a results.md column


def evaluate(hyps, refs, with_meteor=True):
    """Every metric on one set of pairs, the EXTRA ones last; code is tokenized once. METEOR is None
    (with a warning) when WordNet is missing, instead of failing the whole table."""
    ht, rt = _tokens(hyps, refs)
    out = {"bleu4": _bleu(ht, rt), "codebleu": codebleu(hyps, refs)["codebleu"], "meteor": None,
           "chrf": chrf(hyps, refs), "rouge_l": _rouge_l(ht, rt), "exact_match": exact_match(hyps, refs)}
    if with_meteor:
        try:
            out["meteor"] = _meteor(ht, rt)
        except LookupError as e:
            warnings.warn(f"METEOR skipped: {str(e).strip().splitlines()[0]}")
    return out | {name: metric(hyps, refs) for name, metric in EXTRA.items()}
