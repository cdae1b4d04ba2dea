"""prompts.py and methods.py: the interface every method follows, soft prompt tuning, and a method
defined here, registered, trained by train.main and sampled by sample.main with no other edit."""
import json

import torch
from torch import nn

import methods
import prompts
import sample
import train


def test_soft_prompt_starts_at_the_manual_context_and_rebuilds():
    C = torch.randn(3, 4)
    soft = prompts.SoftPrompt(C, s=0.7)
    assert torch.equal(soft.training_contexts(8), C) and soft.training_contexts(8).requires_grad
    assert [n for n, _ in soft.named_parameters()] == ["context"]
    with torch.no_grad():
        soft.context += 1
    again = prompts.SoftPrompt.from_checkpoint(soft.checkpoint())
    assert torch.equal(again.sample(2), (C + 1).expand(2, 3, 4)) and torch.equal(again.C, C) and again.s == 0.7
    assert torch.allclose(again.directions(again.sample(1)), torch.full((1, 12), 1 / 0.7))


class Scaled(prompts.PromptMethod):
    """A one-number method: context = C * (1 + a), a learned scalar (a fork's new idea, say)."""
    kind, title, lr = "scaled", "scaled manual prompt", 1e-1

    def __init__(self, C, s):
        super().__init__(C, s)
        self.a = nn.Parameter(torch.zeros(()))

    def training_contexts(self, B, generator=None, score=None):
        return self.C * (1 + self.a)

    @torch.inference_mode()
    def sample(self, k, generator=None, steps=None, eta=0.0):
        return (self.C * (1 + self.a)).expand(k, -1, -1).clone()


def test_a_registered_method_runs_through_train_and_sample(cache, tmp_path, monkeypatch):
    monkeypatch.setitem(methods.METHODS, "scaled", Scaled)
    out = str(tmp_path / "run")
    train.main(["--out", out, "--method", "scaled", "--steps", "4", "--eval-every", "2", "--batch-size", "4"])
    ckpt = torch.load(tmp_path / "run" / "seed0" / "scaled.pt", weights_only=True)
    assert ckpt["kind"] == "scaled" and ckpt["step"] == 4 and ckpt["weights"]["a"].item() != 0
    log = [json.loads(line) for line in open(tmp_path / "run" / "seed0" / "log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and "valid_token_loss" in log[1]
    sample.main(["--out", out, "--limit", "4"])
    rows = {r["method"]: r for r in json.load(open(tmp_path / "run" / "seed0" / "results.json"))["rows"]}
    assert list(rows) == ["no context", "manual prompt", "scaled manual prompt"]
