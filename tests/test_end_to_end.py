"""The offline tiny model on the demo task, and train.py + sample.py end to end at seconds scale."""
import json
import os

import pytest
import torch

import data
import llm
import metrics
import sample
import train
from ddpt import load_checkpoint


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A tiny model pre-trained for 1500 steps (the default is 3000; 800 left the vague prompt too close), in a cache of its own."""
    folder = tmp_path_factory.mktemp("cache")
    old = data.CACHE
    data.CACHE = str(folder)
    llm.pretrain_tiny(llm.tiny_path("demo"), "demo", steps=1500)
    yield folder
    data.CACHE = old


def exact_match_with(model, tok, prompt, test):
    ex, _ = data.encode(test, tok)
    ctx = llm.text_context(model, tok, prompt)
    gens = sum((llm.generate(model, tok, ctx, b, 48) for b in data.batches(ex, 50, tok)), [])
    return metrics.exact_match(gens, [p["code"] for p in test])


def test_tiny_follows_its_tag_and_has_headroom(cache):
    model, tok = llm.load("tiny")  # through from_pretrained on the cached folder
    assert os.path.exists(os.path.join(llm.tiny_path("demo"), "config.json"))
    test = data.demo()["test"][:100]
    tagged, vague = exact_match_with(model, tok, "Python:", test), exact_match_with(model, tok, "Write code:", test)
    assert tagged >= 0.15, tagged  # held-out (intent, name) combinations, never seen in training
    # a vague prompt loses a clear share (with the default 3,000 steps: 38.5% -> 5.5%; after this short
    # pre-training the gap varies with the numerics, 0.60 -> 0.01 or 0.61 -> 0.45): room for a tuned prompt
    assert vague <= tagged - 0.1, (tagged, vague)


def small(out, *extra):
    return ["--out", str(out), "--T", "50", "--r", "16", "--batch-size", "4", "--eval-every", "3", *extra]


def test_train_sample_resume(cache, tmp_path, capsys):
    train.main(small(tmp_path / "run", "--steps", "6"))
    for f in ("config.json", "log.jsonl", "ddpt.pt", "prompt-tuning.pt"):
        assert os.path.exists(tmp_path / "run" / f)
    log = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")]
    assert len(log) == 12 and all("valid_loss" in r for r in log if r["step"] in (3, 6))

    # resume: 3 steps, stop, 3 more = 6 uninterrupted, bit for bit
    train.main(small(tmp_path / "half", "--steps", "3"))
    train.main(small(tmp_path / "half", "--steps", "6", "--resume"))
    for method in ("ddpt", "prompt-tuning"):
        a, b = load_checkpoint(tmp_path / "run" / f"{method}.pt"), load_checkpoint(tmp_path / "half" / f"{method}.pt")
        assert a["step"] == b["step"] == 6
        assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])

    sample.main(["--out", str(tmp_path / "run"), "--limit", "8", "--k", "2", "--max-new-tokens", "24"])
    table = open(tmp_path / "run" / "results.md").read()
    for name in ("no context", "manual prompt", "soft prompt tuning", "DDPT (DDPM-50) top-1",
                 "best-of-2, LLM likelihood", "oracle best-of-2", "mean pairwise cosine"):
        assert name in table
    rows = json.load(open(tmp_path / "run" / "results.json"))["rows"]
    assert len(rows) == 6 and all(0 <= r["bleu4"] <= 1 for r in rows)
    assert sum(1 for _ in open(tmp_path / "run" / "generations.jsonl")) == 8


def test_bad_input_is_one_line(cache, tmp_path):
    train.main(small(tmp_path / "run", "--steps", "3", "--method", "ddpt"))
    with pytest.raises(SystemExit, match="already holds a run: pass --resume"):
        train.main(small(tmp_path / "run", "--steps", "3"))
    with pytest.raises(ValueError, match="checkpoint has n=10 but this run has n=4"):
        train.main(small(tmp_path / "run", "--steps", "6", "--method", "ddpt", "--n", "4", "--resume"))
    with pytest.raises(SystemExit, match="test split is empty"):
        sample.main(["--out", str(tmp_path / "run"), "--limit", "0"])
    with pytest.raises(SystemExit, match="no run in"):
        sample.main(["--out", str(tmp_path / "nothing")])
