"""selector.py: the learned pick among k prompts, trained to predict each training pair's best draw."""
import torch

import data
from models import demo
import llm
from methods import selector


def test_the_target_is_each_pairs_lowest_loss_draw(cache, monkeypatch):
    model, tok = llm.load("tiny")
    pairs = [{"nl": nl, "code": code} for _, nl, code in demo.pretraining(40, 1)]  # Python, Bash and SQL pairs
    examples, _ = data.encode(pairs, tok)
    contexts = [llm.text_context(model, tok, p) for p in ("Write code:", "Python:", "SQL:")]
    direct = torch.tensor([[llm.example_losses(model, c, data.collate([ex], tok)).item() for c in contexts] for ex in examples])
    seen = {}

    def spy(f, target, k):
        seen["f"], seen["target"], seen["k"] = f, target, k
        return (lambda f_test: [0] * len(f_test)), 1.0
    monkeypatch.setattr(selector, "fit", spy)
    chosen, report = selector.selected(model, tok, contexts, train_examples=examples, test_examples=examples[:5], batch_size=16)
    assert torch.equal(seen["target"], direct.argmin(1)) and seen["k"] == 3 and seen["f"].shape == (40, model.config.d_model)
    assert len(set(seen["target"].tolist())) > 1  # the prompts win on different pairs: a real choice
    assert chosen == [0] * 5 and report["train_pairs"] == 40
    assert report["majority_share"] == torch.bincount(direct.argmin(1)).max().item() / 40


def test_fit_learns_a_rule_in_the_features():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(400, 8, generator=g)
    target = (f[:, 3] > 0).long() + 2 * (f[:, 5] > 0.5).long()  # 4 winners, read off two features
    predict, accuracy = selector.fit(f, target, 4, steps=500, lr=5e-2)
    test = torch.randn(200, 8, generator=g)
    hits = sum(p == t for p, t in zip(predict(test), ((test[:, 3] > 0).long() + 2 * (test[:, 5] > 0.5).long()).tolist()))
    assert accuracy > 0.9 and hits / 200 > 0.85, (accuracy, hits)
