"""tools/export.py and sample.py --peft: a trained method as a PEFT adapter (PEFT is a test-only
reference, as sacrebleu is), loaded back by PEFT itself and by our harness, against our own numbers."""
import json
import os

import pytest
import torch

from runtime import checkpoint
import data
import llm
import sample
import train
from models import demo, tiny
from tools import export

peft = pytest.importorskip("peft")  # requirements-test.txt installs it


def pairs_batch(tok, n=6):
    examples, _ = data.encode(demo.splits()["test"][:n], tok)
    return examples, data.collate(examples, tok)


def peft_loss_and_generations(folder, examples, tok, max_new_tokens=16):
    """PEFT's own loss on the pairs (the instruction ids as input_ids, the code as labels) and its greedy code."""
    base, _ = llm.load(tiny.SHIPPED)
    model = peft.PeftModel.from_pretrained(base, folder).eval()
    batch = data.collate(examples, tok)
    with torch.no_grad():
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    return loss.item(), [s.strip() for s in tok.batch_decode(out, skip_special_tokens=True)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small run of the soft prompt, DDPT, LoRA and LoPA on the shipped tiny model."""
    out = tmp_path_factory.mktemp("export") / "run"
    train.main(["--out", str(out), "--T", "50", "--r", "16", "--batch-size", "4", "--steps", "3", "--eval-every", "3",
                "--method", "prompt-tuning", "ddpt", "lora", "lopa", "--lr", "prompt-tuning=0.3", "ddpt=3e-3",
                "lora=3e-2", "lopa=3e-2"])
    return out


@pytest.mark.parametrize("method,draw", [("prompt-tuning", 0), ("ddpt", 0), ("ddpt", 2)])
def test_a_prompt_exported_to_peft_gives_our_loss_and_generations(run, method, draw):
    folder = export.export(str(run), method, seed=0, draw=draw)
    config = json.load(open(os.path.join(folder, "adapter_config.json")))
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 10
    assert f"{method} from" in open(os.path.join(folder, "README.md")).read()
    model, tok = llm.load(tiny.SHIPPED)
    module = train.METHODS[method].from_checkpoint(checkpoint.load(run / "seed0" / f"{method}.pt"))
    context = module.sample(5, generator=torch.Generator().manual_seed(0))[draw]  # sample.py's k = 5 draws
    examples, batch = pairs_batch(tok)
    with torch.no_grad():
        ours = llm.loss(model, context, batch).item()
    theirs, generated = peft_loss_and_generations(folder, examples, tok)
    assert theirs == pytest.approx(ours, abs=1e-5)
    assert generated == llm.generate(model, tok, context, batch, max_new_tokens=16)
    assert torch.equal(llm.context_from_peft(model, tok, folder), context.float())  # and read back by the harness


def test_lora_exported_to_peft_merges_into_our_weights(run):
    folder = export.export(str(run), "lora", seed=0)
    ckpt = checkpoint.load(run / "seed0" / "lora.pt")
    module = train.METHODS["lora"].from_checkpoint(ckpt)
    base, tok = llm.load(tiny.SHIPPED)
    merged = peft.PeftModel.from_pretrained(llm.load(tiny.SHIPPED)[0], folder).merge_and_unload()
    weights = dict(merged.named_parameters())
    assert module.shapes and any(module.B[module.key(n)].abs().sum() > 0 for n in module.shapes)  # it trained
    for name in module.shapes:
        A, B = module.A[module.key(name)], module.B[module.key(name)]
        want = dict(base.named_parameters())[f"{name}.weight"] + module.scale * B @ A
        assert torch.allclose(weights[f"{name}.weight"], want, atol=1e-6), name
    examples, batch = pairs_batch(tok)
    with module.adapt(base), torch.no_grad():
        ours = llm.loss(base, module.C, batch).item()
    with torch.no_grad():  # the merged model, fed the same [manual context ; instruction]
        theirs = llm.loss(merged, module.C, batch).item()
    assert theirs == pytest.approx(ours, abs=1e-5)


def test_what_peft_cannot_hold_is_refused_in_one_line(run, tmp_path):
    with pytest.raises(ValueError, match="lopa makes one prompt per instruction"):
        export.export(str(run), "lopa", seed=0)
    with pytest.raises(ValueError, match="prompt-tuning has one prompt, not draws"):
        export.export(str(run), "prompt-tuning", seed=0, draw=1)
    model, tok = llm.load(tiny.SHIPPED)
    with pytest.raises(ValueError, match="is no PEFT prompt-tuning adapter"):
        llm.context_from_peft(model, tok, str(tmp_path))


def test_sample_scores_a_peft_adapter_as_a_row(run):
    folder = export.export(str(run), "prompt-tuning", seed=0, out=str(run / "peft" / "soft"))
    sample.main(["--out", str(run), "--limit", "6", "--k", "2", "--max-new-tokens", "16", "--peft", folder])
    rows = {r["method"]: r for r in json.load(open(run / "seed0" / "results.json"))["rows"]}
    assert rows["PEFT prompt (soft)"]["bleu4"] == rows["soft prompt tuning"]["bleu4"]  # the same prompt, the same code
    assert rows["PEFT prompt (soft)"]["pair_loss"] == pytest.approx(rows["soft prompt tuning"]["pair_loss"], abs=1e-6)
