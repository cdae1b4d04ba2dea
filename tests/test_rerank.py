"""methods/rerank.py: the consensus (MBR) and reviewer picks among k draws."""
import pytest

from methods import rerank


def jaccard(a, b):
    a, b = set(a.split()), set(b.split())
    return len(a & b) / len(a | b)


def test_consensus_picks_the_draw_that_agrees_most_with_the_others():
    # pair 0: J(0,1) = 3/4, J(0,2) = 1/5, J(1,2) = 1/6 -> support 0.95, 0.917, 0.367: draw 0
    # pair 1: draw 2 repeats draw 1, draw 0 shares nothing -> support 0, 1, 1: the lower of the tie, draw 1
    # pair 2: all three the same -> draw 0 (top-1)
    gens = [["a b c", "p q", "z"], ["a b c d", "x y", "z"], ["a x y", "x y", "z"]]
    assert rerank.consensus_pick(gens, jaccard) == [0, 1, 0]
    assert rerank.consensus_pick(gens, rerank.bleu_agreement)[1:] == [1, 0]


def test_bleu_agreement_is_sentence_bleu():
    assert rerank.bleu_agreement("x = sorted(a)", "x = sorted(a)") == pytest.approx(1.0)
    near, far = (rerank.bleu_agreement("x = sorted(a)", other) for other in ("x = sorted(b)", "print(1)"))
    assert 0 < far < near < 1
