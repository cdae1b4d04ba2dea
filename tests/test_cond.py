"""cond.py: DDPT-Cond, a denoiser that reads the instruction, with classifier-free guidance."""
import json

import pytest
import torch

from runtime import checkpoint
import data
import llm
import sample
import train
from methods.cond import DDPTCond, DDPTMCLCond


def trained_looking(model):
    """Every zero-initialised layer made non-zero, as after training (float64)."""
    torch.manual_seed(1)
    model = model.double()
    for p in (model.denoiser.out.weight, model.denoiser.out.bias, model.condition.proj.weight,
              model.condition.proj.bias, model.condition.null):
        torch.nn.init.normal_(p, std=0.3)
    return model


@pytest.mark.parametrize("Method", [DDPTCond, DDPTMCLCond])
def test_untrained_is_the_manual_prompt_for_every_instruction(Method):
    torch.manual_seed(0)
    model = Method(torch.randn(2, 3), 0.5, T=20, r=4, p_uncond=0.5)
    f = torch.randn(6, 3) * 10
    score = lambda ctx: torch.rand(ctx.shape[0])
    trained = model.training_contexts(6, torch.Generator().manual_seed(1), score, f)
    assert torch.equal(trained, model.C.expand(6, -1, -1))
    for w in (0.0, 2.0):
        assert torch.equal(model.sample(3, features=f, w=w), model.C.expand(3, 6, -1, -1))
    assert torch.equal(model(6, torch.Generator().manual_seed(1), score, f), model.C.expand(6, -1, -1))  # DDP's call


def test_the_fast_sampler_is_exact_with_guidance():
    """DDPT-Cond samples in r dims with the guided hidden state: the same as the plain D-dim DDIM
    chain whose denoiser is (1 + w) x0_hat(x, t, q) - w x0_hat(x, t, null), for each instruction."""
    model = trained_looking(DDPTCond(torch.randn(2, 3), 0.5, T=20, r=4))
    den, f, w = model.denoiser, torch.randn(4, 3, dtype=torch.float64), 1.5
    fast = model.sample(3, torch.Generator().manual_seed(0), steps=5, features=f, w=w)
    slow = model.sample(3, torch.Generator().manual_seed(0), steps=5, features=f, w=w, fast=False)
    x_T = model._randn(3, model.D, generator=torch.Generator().manual_seed(0))
    for i in range(4):
        c = model.condition(f[i:i + 1])
        guided = lambda x, t: (1 + w) * den(x, t, c=c) - w * den(x, t, c=model.condition.null)
        ref = model.prompt(model.diffusion.sample(guided, x_T, steps=5))  # the 3 draws of instruction i
        assert torch.allclose(fast[:, i], ref, atol=1e-10) and torch.allclose(slow[:, i], ref, atol=1e-10)


def test_guidance_zero_is_the_conditional_model():
    model = trained_looking(DDPTMCLCond(torch.randn(2, 3), 0.5, T=20, r=4, chain=4))
    f = torch.randn(5, 3, dtype=torch.float64)
    plain = model.prompt(model.chain_x0(model._randn(2, model.D, generator=torch.Generator().manual_seed(3))
                                        .repeat_interleave(5, 0), c=model.condition(f).repeat(2, 1)))
    assert torch.allclose(model.sample(2, torch.Generator().manual_seed(3), features=f, w=0.0), plain.view(2, 5, 2, 3),
                          atol=1e-12)
    guided = model.sample(2, torch.Generator().manual_seed(3), features=f, w=1.0)
    assert not torch.allclose(guided, plain.view(2, 5, 2, 3))  # w matters once the null differs from q
    per_instruction = model.sample(1, features=f)[0]
    assert (per_instruction[0] - per_instruction[1]).abs().max() > 1e-3  # the prompt follows the instruction


def test_dropping_the_condition_gives_the_null():
    model = trained_looking(DDPTCond(torch.randn(2, 3), 0.5, T=20, r=4, p_uncond=0.5))
    f = torch.randn(400, 3, dtype=torch.float64)
    c = model.condition(f, torch.Generator().manual_seed(0))
    dropped = (c == model.condition.null).all(1)
    assert 150 < dropped.sum() < 250  # about half
    assert torch.equal(c[~dropped], model.condition(f)[~dropped])
    assert torch.equal(model.condition(f), model.condition(f, None))  # at test time: never dropped


def test_checkpoint_keeps_p_uncond_and_the_condition():
    model = trained_looking(DDPTMCLCond(torch.randn(2, 3), 0.5, T=20, r=4, chain=3, p_uncond=0.2)).float()
    again = DDPTMCLCond.from_checkpoint(model.checkpoint())
    f = torch.randn(3, 3)
    assert again.config()["p_uncond"] == 0.2 and torch.equal(
        again.sample(2, torch.Generator().manual_seed(0), features=f), model.sample(2, torch.Generator().manual_seed(0), features=f))


def test_features_encoder_states_or_mean_embedding(cache):
    model, tok = llm.load("tiny")
    examples, _ = data.encode([{"nl": "add 3 and 4", "code": "x"}, {"nl": "reverse the list of numbers", "code": "y"}], tok)
    both, enc, emb = llm.instruction_features(model, tok, examples), [], []
    for a, _ in examples:  # one at a time: no padding
        ids = torch.tensor([a])
        enc.append(model.get_encoder()(input_ids=ids).last_hidden_state[0].mean(0))
        emb.append(model.get_input_embeddings()(ids)[0].mean(0))
    assert torch.allclose(both, torch.stack(enc), atol=1e-5)  # the padded batch pools the real tokens only
    assert torch.allclose(llm.instruction_features(model, tok, examples, encoder=False), torch.stack(emb), atol=1e-6)


def test_train_and_sample_conditioned(cache, tmp_path):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--method", "ddpt-cond", "ddpt-mcl-cond", "--T", "50", "--r", "16", "--chain", "3",
                "--K", "2", "--batch-size", "4", "--steps", "3", "--eval-every", "3", "--p-uncond", "0.2"])
    ckpt = checkpoint.load(out / "seed0" / "ddpt-mcl-cond.pt")
    assert ckpt["config"]["p_uncond"] == 0.2 and ckpt["config"]["chain"] == 3
    log = [json.loads(line) for line in open(out / "seed0" / "log.jsonl")]
    assert {r["method"] for r in log if "valid_token_loss" in r} == {"ddpt-cond", "ddpt-mcl-cond"}
    for w in ("0", "1"):
        sample.main(["--out", str(out), "--limit", "6", "--k", "2", "--max-new-tokens", "8", "--sample-steps", "5",
                     "--select-pairs", "8", "--guidance", w])
    rows = {r["method"]: r for r in json.load(open(out / "seed0" / "results.json"))["rows"]}
    assert 0.0 <= rows["DDPT-Cond (DDIM-5) top-1"]["differ"] <= 1.0 and "DDPT-MCL-Cond (DDIM-5) selected" in rows
    guided = json.load(open(out / "seed0" / "results-w1.json"))
    assert "DDPT-Cond (DDIM-5), w 1 top-1" in {r["method"] for r in guided["rows"]} and guided["guidance"] == 1.0
    assert "across_instructions" in guided["spread"]["ddpt-cond"]
