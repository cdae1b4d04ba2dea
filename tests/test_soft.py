"""methods/soft.py: the vocabulary-started soft prompt (against PEFT's) and the reparametrised one."""
import pytest
import torch

import llm
import train
from ddpt import DDPT
from methods.soft import Reparam, VocabSoftPrompt
from runtime import checkpoint


def test_the_vocabulary_start_is_pefts_sample_vocab(cache):
    peft = pytest.importorskip("peft")
    model, tok = llm.load("tiny")
    C, s = llm.context_from_text(model, tok, "Write code:", 6)
    module = VocabSoftPrompt(C, s)
    torch.manual_seed(3)
    torch.nn.Embedding(6, C.shape[1])  # PEFT draws its embedding's default start first, then the token ids
    module.adapt(model)
    config = peft.PromptTuningConfig(task_type="SEQ_2_SEQ_LM", num_virtual_tokens=6, token_dim=C.shape[1],
                                     num_transformer_submodules=1, prompt_tuning_init="SAMPLE_VOCAB")
    torch.manual_seed(3)
    reference = peft.tuners.prompt_tuning.PromptEmbedding(config, model.get_input_embeddings()).embedding.weight
    assert torch.equal(module.context.detach(), reference.detach()) and not torch.equal(module.context, C)
    drawn = module.context.detach().clone()
    module.adapt(model)  # at sampling time, and after a resume: never drawn again
    again = VocabSoftPrompt.from_checkpoint(module.checkpoint())
    again.adapt(model)
    assert torch.equal(module.context, drawn) and torch.equal(again.context, drawn)


def test_the_reparametrised_prompt_starts_at_the_manual_one_and_can_reach_any():
    torch.manual_seed(0)
    C = torch.randn(3, 4)
    module = Reparam(C, 0.5, r=16)
    assert torch.equal(module.training_contexts(2), C) and torch.equal(module.sample(3), C.expand(3, -1, -1))
    target = torch.randn(3, 4)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(300):
        loss = (module.training_contexts(1) - target).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss < 1e-3
    ddpt = DDPT(C, 0.5, r=16, T=10)
    count = lambda m: sum(p.numel() for p in m.parameters())
    extra = count(ddpt.denoiser.inp) + count(ddpt.denoiser.t_mlp)  # what DDPT has beyond it: W_in, the time MLP
    assert count(ddpt) - count(module) == extra - 16  # (less the constant u)


def test_checkpoints_say_what_each_method_cost(cache, tmp_path):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--method", "prompt-tuning", "prompt-tuning-vocab", "reparam", "--r", "8",
                "--batch-size", "4", "--steps", "2", "--eval-every", "2"])
    got = {m: checkpoint.load(out / "seed0" / f"{m}.pt") for m in ("prompt-tuning", "prompt-tuning-vocab", "reparam")}
    n, d = got["prompt-tuning"]["config"]["n"], got["prompt-tuning"]["config"]["d"]
    assert got["prompt-tuning"]["params"] == got["prompt-tuning-vocab"]["params"] == n * d
    assert got["reparam"]["params"] == 8 + 2 * (2 * 8 + 8 * 16 + 16 + 16 * 8 + 8) + 8 * n * d + n * d
    assert all(c["train_secs"] > 0 for c in got.values())
    assert not torch.equal(got["prompt-tuning-vocab"]["weights"]["context"], got["prompt-tuning"]["weights"]["context"])
