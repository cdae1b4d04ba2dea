"""mcl.py: DDPT trained through its DDIM chain with winner-takes-all or the K-sample likelihood bound."""
import json

import pytest
import torch

from runtime import checkpoint
import prompts
import sample
import train
from methods.mcl import DDPTMCL


def tiny(**kw):
    """A small DDPT-MCL in float64 with a non-zero output layer (at init it is exactly the manual prompt)."""
    torch.manual_seed(0)
    model = DDPTMCL(torch.randn(2, 3), 0.5, T=20, r=4, blocks=1, **kw).double()
    torch.nn.init.normal_(model.denoiser.out.weight, std=0.3)
    return model


def test_untrained_every_draw_is_the_manual_prompt():
    model = DDPTMCL(torch.randn(2, 3), 0.5, T=20, r=4, chain=4)
    score = lambda ctx: torch.rand(ctx.shape[0])
    assert torch.equal(model.training_contexts(6, torch.Generator().manual_seed(1), score), model.C.expand(6, -1, -1))
    assert torch.equal(model.sample(3), model.C.expand(3, -1, -1))


@pytest.mark.parametrize("truncate", [None, 1])
def test_gradients_through_the_chain_equal_finite_differences(truncate):
    """f = <R, C + s x0(x_T)> with x0 from the 4-step DDIM chain. Truncated to the last step, the
    earlier steps are held where they are: the finite differences move the last step alone."""
    model = tiny(chain=4, truncate=truncate)
    x_T, R = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        steps = list(model.diffusion.trajectory(model.denoiser, x_T, steps=4))
    (t_last, _), (_, x_before) = model.diffusion.timesteps(4)[-1], steps[-2]

    def f():
        if truncate:  # the last step from the held x_before: x0 = denoiser(x_before, t_last)
            x0 = model.denoiser(x_before, torch.full((3,), t_last))
        else:
            x0 = model.diffusion.sample(model.denoiser, x_T, steps=4)
        return (R * model.prompt(x0)).sum()

    model.zero_grad()
    (R * model.prompt(model.chain_x0(x_T))).sum().backward()
    for p in (model.denoiser.inp.weight, model.denoiser.blocks[0].fc1.bias, model.denoiser.out.weight):
        for idx in [(0, 0), (1, 2)] if p.dim() == 2 else [(0,), (5,)]:
            with torch.no_grad():
                p[idx] += 1e-6
                up = f().item()
                p[idx] -= 2e-6
                down = f().item()
                p[idx] += 1e-6
            fd = (up - down) / 2e-6
            assert abs(p.grad[idx].item() - fd) <= 1e-6 * max(1.0, abs(fd)), (p.shape, idx, p.grad[idx].item(), fd)
    assert model.denoiser.inp.weight.grad.abs().sum() > 0


def test_winner_takes_all_returns_each_pairs_best_draw():
    model = tiny(chain=3, K=4)
    target = torch.randn(5, 2, 3, dtype=torch.float64)
    seen = []

    def score(ctx):  # a pair's loss: its context's distance to the pair's target
        seen.append(ctx.detach().clone())
        return (ctx - target).pow(2).sum((1, 2))
    chosen = model.training_contexts(5, torch.Generator().manual_seed(0), score)
    draws = torch.stack(seen)  # (K, B, n, d)
    best = (draws - target).pow(2).sum((2, 3)).argmin(0)
    assert torch.equal(chosen.detach(), draws[best, torch.arange(5)]) and chosen.requires_grad
    assert len({tuple(b.flatten().tolist()) for b in draws[:, 0]}) == 4  # the K draws differ


def test_weights_of_each_objective():
    L = torch.tensor([[3.0, 1.0], [1.0, 2.0], [2.0, 4.0]])  # (K = 3, B = 2)
    wta = tiny(K=3).weights(L)
    assert torch.equal(wta, torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype=torch.float64))
    relaxed = tiny(K=3, relax=0.1).weights(L)
    assert torch.allclose(relaxed[:, 0], torch.tensor([0.05, 0.9, 0.05], dtype=torch.float64))
    bound = tiny(K=3, objective="likelihood").weights(L)
    assert torch.allclose(bound, torch.softmax(-L.double(), 0)) and torch.allclose(bound.sum(0), torch.ones(2, dtype=torch.float64))


def test_spread_sees_what_cosine_hides():
    m = torch.tensor([10.0, 0.0, 0.0])
    one_line = torch.stack([m + t * torch.tensor([0.0, 1.0, 0.0]) for t in (-1.0, 0.0, 1.0)])
    s = prompts.spread(one_line)
    assert s["mean_pairwise_cosine"] > 0.99 and abs(s["participation"] - 1.0) < 1e-9
    assert abs(s["rms_spread"] - (2 / 3) ** 0.5 / 10) < 1e-9
    plane = torch.stack([m + v for v in torch.eye(3)[1:]] + [m - v for v in torch.eye(3)[1:]])
    assert abs(prompts.spread(plane)["participation"] - 2.0) < 1e-9
    same = prompts.spread(m.expand(4, -1))
    assert same["rms_spread"] == 0.0 and same["participation"] is None


def test_train_and_sample_with_the_stored_chain(cache, tmp_path):
    out = tmp_path / "run"
    train.main(["--out", str(out), "--method", "ddpt-mcl", "--T", "50", "--r", "16", "--chain", "3", "--K", "3",
                "--batch-size", "4", "--steps", "3", "--eval-every", "3", "--objective", "likelihood"])
    ckpt = checkpoint.load(out / "seed0" / "ddpt-mcl.pt")
    assert ckpt["config"]["chain"] == 3 and ckpt["config"]["objective"] == "likelihood" and "x0" not in ckpt["config"]
    assert DDPTMCL.from_checkpoint(ckpt).config() == ckpt["config"]
    sample.main(["--out", str(out), "--limit", "6", "--k", "2", "--max-new-tokens", "16"])
    rows = {r["method"]: r for r in json.load(open(out / "seed0" / "results.json"))["rows"]}
    top1 = rows["DDPT-MCL (DDIM-3) top-1"]
    assert 0.0 <= top1["differ"] <= 1.0 and rows["manual prompt"]["differ"] is None
