"""prompts.py: the interface every method follows, soft prompt tuning; and what a fork adds without
editing any other file: a method with options of its own, a data set and a metric, each defined
here, registered, and run through train.main and sample.main."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from runtime import checkpoint
import data
import metrics

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
    """A fork's new idea: context = C * (1 + a), a learned scalar a; its training option --init sets
    a's start, its sampling option --stretch multiplies a at test time."""
    kind, title, lr = "scaled", "scaled manual prompt", 1e-1
    options = {"init": prompts.Option(0.0, "a at initialisation", type=float),
               "stretch": prompts.Option(1.0, "multiplies a when sampling", type=float, when="sample")}

    def __init__(self, C, s, *, init=0.0):  # (no config() of its own: the base records --init)
        super().__init__(C, s)
        self.a = nn.Parameter(torch.tensor(float(init)))

    def training_contexts(self, B, generator=None, score=None):
        return self.C * (1 + self.a)

    @torch.inference_mode()
    def sample(self, k, generator=None, stretch=1.0):
        return (self.C * (1 + stretch * self.a)).expand(k, -1, -1).clone()

    def label(self, stretch=1.0):
        return self.title + (f" x{stretch:g}" if stretch != 1.0 else "")


def test_a_method_with_its_own_options_runs_through_train_and_sample(cache, tmp_path, monkeypatch):
    monkeypatch.setitem(prompts.METHODS, "scaled", Scaled)
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit, match="--init is an option of --method scaled, which this run does not train"):
        train.main(["--out", out, "--method", "prompt-tuning", "--init", "0.5", "--steps", "1"])
    train.main(["--out", out, "--method", "scaled", "--init", "0.25", "--steps", "4", "--eval-every", "2", "--batch-size", "4"])
    ckpt = torch.load(tmp_path / "run" / "seed0" / "scaled.pt", weights_only=True)
    assert ckpt["kind"] == "scaled" and ckpt["step"] == 4 and ckpt["weights"]["a"].item() not in (0.0, 0.25)
    assert ckpt["config"]["init"] == 0.25 and ckpt["run"]["rates"] == {"scaled": 1e-1}  # recorded without a config()
    assert json.load(open(tmp_path / "run" / "config.json"))["init"] == 0.25  # the option is recorded with the run
    log = [json.loads(line) for line in open(tmp_path / "run" / "seed0" / "log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and "valid_token_loss" in log[1]
    sample.main(["--out", out, "--limit", "4", "--stretch", "0"])  # a = 0 at test time: the padded manual context
    rows = {r["method"]: r for r in json.load(open(tmp_path / "run" / "seed0" / "results.json"))["rows"]}
    assert list(rows) == ["no context", "manual prompt", "scaled manual prompt x0"]
    assert json.load(open(tmp_path / "run" / "seed0" / "results.json"))["stretch"] == 0.0
    with pytest.raises(SystemExit, match="--guidance is an option of --method ddpt-cond or ddpt-mcl-cond"):
        sample.main(["--out", out, "--guidance", "1"])


def test_a_registered_data_set_and_metric_reach_results_md(cache, tmp_path, monkeypatch):
    pairs = [{"nl": f"print the number {i}", "code": f"print({i})"} for i in range(40)]
    splits = {"train": pairs[:24], "valid": pairs[24:32], "test": pairs[32:]}
    monkeypatch.setitem(data.DATASETS, "numbers", data.Dataset(load=lambda data_dir, seed: splits))
    monkeypatch.setitem(metrics.EXTRA, "length_ratio", lambda hyps, refs: sum(map(len, hyps)) / sum(map(len, refs)))
    out = str(tmp_path / "run")
    from models import tiny  # the demo's tiny model, by its folder: --model tiny would pre-train one for this data
    train.main(["--out", out, "--model", tiny.path("demo"), "--data", "numbers", "--method", "prompt-tuning",
                "--steps", "2", "--batch-size", "4"])
    sample.main(["--out", out, "--max-new-tokens", "8"])
    table = open(tmp_path / "run" / "seed0" / "results.md").read()
    header = next(line for line in table.splitlines() if line.startswith("| method |"))
    assert "Test pairs: 8 (numbers" in table and "length_ratio" in header.split(" | ")
    assert "length_ratio" in open(tmp_path / "run" / "results.md").read()
    rows = json.load(open(tmp_path / "run" / "seed0" / "results.json"))["rows"]
    gens = [json.loads(line)["manual prompt"] for line in open(tmp_path / "run" / "seed0" / "generations.jsonl")]
    assert rows[1]["length_ratio"] == pytest.approx(sum(map(len, gens)) / sum(len(p["code"]) for p in pairs[32:]))


def test_importing_the_core_loads_no_method_beyond_the_paper():
    code = ("import sys, train, sample, prompts; assert not [m for m in sys.modules if m.startswith('methods')]; "
            "print(sorted(prompts.METHODS)); prompts.discover(); print(sorted(prompts.METHODS), sorted(prompts.PICKS))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout.splitlines()
    assert out == ["['ddpt', 'prompt-tuning']", "['ddpt', 'ddpt-cond', 'ddpt-mcl', 'ddpt-mcl-cond', 'ddpt-pd', 'ddpt-pd-mlp', 'lopa', 'lora', 'prompt-tuning', 'prompt-tuning-vocab', 'reparam'] "
                   "['best-of-{k}, LLM likelihood', 'consensus (MBR, BLEU)', 'reviewer, p(instruction | code)', 'selected']"]


def test_checkpoints_of_the_flat_layout_load_and_sample_the_same():
    """tests/fixtures/old_checkpoints: one small checkpoint per method, and its samples (DDIM-5 for the
    diffusion methods, generator seed 1), written by the code before methods/ existed (commit eb38b39)."""
    folder = os.path.join(os.path.dirname(__file__), "fixtures", "old_checkpoints")
    prompts.discover()
    expected = torch.load(os.path.join(folder, "samples.pt"), weights_only=True)
    for kind, old in expected.items():
        ckpt = checkpoint.load(os.path.join(folder, f"{kind}.pt"))
        module = prompts.METHODS[ckpt["kind"]].from_checkpoint(ckpt)
        given = {"features": torch.randn(2, 4, generator=torch.Generator().manual_seed(2))} if module.conditional else {}
        new = module.sample(2, generator=torch.Generator().manual_seed(1), **({"steps": 5} if module.stochastic else {}), **given)
        # bit for bit on the machine that wrote them; another processor's kernels round the last bit
        # otherwise (2.4e-7 here), while a wrongly loaded weight would move the samples by O(1)
        torch.testing.assert_close(new, old, rtol=0, atol=1e-5, msg=kind)


def test_one_option_name_means_one_option():
    """Options share the command line: declaring a registered name with another default or type fails
    at registration, and the same declaration is fine."""
    class Clash(prompts.PromptMethod):
        kind, options = "clash", {"r": prompts.Option(8, "another r", type=int)}
    with pytest.raises(TypeError, match="declares option 'r' with another default than 'ddpt' does"):
        prompts.register(Clash)
    assert "clash" not in prompts.METHODS

    class Same(prompts.PromptMethod):
        kind, options = "same", {"T": prompts.METHODS["ddpt"].options["T"]}
    try:
        assert prompts.register(Same) is Same
    finally:
        prompts.METHODS.pop("same")
