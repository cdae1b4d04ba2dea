"""methods/lora.py: low-rank updates of the frozen model's attention, and methods/lopa.py's
instance-conditioned prompt; both through train.py and sample.py."""
import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from runtime import checkpoint
import data
import llm
import sample
import train
from methods.lopa import LoPA
from methods.lora import LoRA
from models import demo


def small_llama():
    """A random 2-layer Llama (SmolLM2's architecture), with the tiny model's tokenizer's vocabulary size."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=600, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval().requires_grad_(False)


def batch_of(tok, n=6):
    examples, _ = data.encode(demo.splits()["train"][:n], tok)
    return data.collate(examples, tok)


def trained_looking(lora):
    torch.manual_seed(1)
    for B in lora.B.values():
        torch.nn.init.normal_(B, std=0.5)
    return lora


@pytest.mark.parametrize("kind", ["tiny", "llama"])
def test_untrained_lora_is_the_manual_prompts_model_and_its_update_is_a_merged_weight(cache, kind):
    model, tok = llm.load("tiny")
    model = small_llama() if kind == "llama" else model
    C, s = torch.randn(4, model.config.hidden_size if kind == "llama" else model.config.d_model), 0.1
    batch = batch_of(tok)
    plain = llm.token_losses(model, C, batch)[0]
    lora = LoRA(C, s, lora_rank=2, lora_alpha=3.0)
    with lora.adapt(model):
        assert torch.equal(llm.token_losses(model, lora.training_contexts(6), batch)[0], plain)  # B = 0: exactly
    names = {"tiny": ("q", "v"), "llama": ("q_proj", "v_proj")}[kind]
    assert lora.shapes and all(name.rsplit(".", 1)[-1] in names for name in lora.shapes)
    trained_looking(lora)
    with lora.adapt(model):
        adapted = llm.token_losses(model, lora.C, batch)[0]
    assert torch.equal(llm.token_losses(model, C, batch)[0], plain)  # the hooks are gone afterwards
    merged = type(model)(model.config).eval()
    merged.load_state_dict(model.state_dict())
    for name, m in merged.named_modules():
        if name in lora.shapes:
            A, B = lora.A[lora.key(name)], lora.B[lora.key(name)]
            m.weight.data += 1.5 * B.detach() @ A.detach()  # W + (alpha / r) B A
    torch.testing.assert_close(adapted, llm.token_losses(merged, C, batch)[0], rtol=1e-4, atol=1e-5)
    assert (adapted - plain).abs().max() > 1e-2  # and the update did change the model


def test_gradients_reach_the_adapters_only_and_checkpoints_need_the_same_model(cache):
    model, tok = llm.load("tiny")
    C, s = llm.context_from_text(model, tok, "Write code:", 4)
    lora = LoRA(C, s, lora_rank=2)
    adapted = lora.adapt(model)  # builds A and B
    with trained_looking(lora) and adapted:  # B = 0 would leave A without a gradient
        llm.loss(model, lora.training_contexts(6), batch_of(tok)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora.parameters())
    assert all(p.grad is None for p in model.parameters())
    again = LoRA.from_checkpoint(lora.checkpoint())
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), lora.state_dict().values()))
    with pytest.raises(ValueError, match="do not match this model"):
        again.adapt(small_llama())
    with pytest.raises(ValueError, match="--lora-targets"):
        LoRA(C, s, lora_targets="nothing_here").adapt(model)


def test_untrained_lopa_is_the_manual_prompt_for_every_instruction_and_its_gate():
    torch.manual_seed(0)
    C, f = torch.randn(3, 8), torch.randn(5, 8) * 10
    lopa = LoPA(C, 0.1, lopa_rank=2, lopa_hidden=6)
    assert torch.equal(lopa.training_contexts(5, features=f), C.expand(5, -1, -1))
    assert torch.equal(lopa.sample(2, features=f), C.expand(2, 5, -1, -1))
    torch.nn.init.normal_(lopa.U.weight)
    Z = lopa.training_contexts(5, features=f)
    h = torch.tanh(lopa.encode((f[1] - f[1].mean()) / (f[1].var(unbiased=False) + 1e-5).sqrt()))  # by hand, pair 1
    Z_I = (lopa.U(h).view(3, 2) @ lopa.V(h).view(2, 8))
    torch.testing.assert_close(Z[1], C * 2 * torch.sigmoid(Z_I))
    assert (Z[0] - Z[1]).abs().max() > 1e-3  # each instruction its own prompt
    again = LoPA.from_checkpoint(lopa.checkpoint())
    assert torch.equal(again.sample(1, features=f), lopa.sample(1, features=f))
    with pytest.raises(ValueError, match="features"):
        lopa.training_contexts(5)


def test_lora_and_lopa_train_and_sample_end_to_end(cache, tmp_path):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--method", "lora", "lopa", "--steps", "4", "--eval-every", "4", "--batch-size", "4",
                "--lora-rank", "2", "--n", "4"])
    ckpt = checkpoint.load(out / "seed0" / "lora.pt")
    assert ckpt["step"] == 4 and any(v.abs().sum() > 0 for k, v in ckpt["weights"].items() if k.startswith("B."))
    log = [json.loads(line) for line in open(out / "seed0" / "log.jsonl")]
    evals = {r["method"]: r for r in log if "valid_token_loss" in r}
    assert set(evals) == {"lora", "lopa"}
    assert all(r["valid_token_loss"] != r["valid_token_loss_manual"] for r in evals.values())
    sample.main(["--out", str(out), "--limit", "8", "--max-new-tokens", "16"])
    rows = {r["method"] for r in json.load(open(out / "seed0" / "results.json"))["rows"]}
    assert {"manual prompt", "LoRA (attention)", "LoPA (instance-conditioned prompt)"} <= rows
