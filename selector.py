"""Picking one of a stochastic method's k prompts for each test pair, without looking at the reference.

sample.py scores three picks beside top-1 (the first draw) and the oracle (the draw whose code is
closest to the reference, an upper bound no real system has):

    best-of-k, LLM likelihood    the draw whose own generation the LLM finds most likely
    selected                     a learned pick: which draw wins for this instruction

The selector is trained on training pairs, for the very k prompts sample.py drew, after they are
fixed (the method's own training is left as it is):

    target_i = argmin_j L_ij          L_ij: the LLM's loss of training pair i's reference under prompt j
    p(j | q) = softmax_j(W f(q) + b)  f(q): the mean input embedding of the instruction's tokens (frozen,
                                      cond.features), standardised with the training pairs' mean and spread
    fit: cross-entropy to the targets, full-batch AdamW; test pair -> argmax_j p(j | q)

A linear head on frozen features is the smallest thing that can learn "this kind of instruction
goes with that draw"; its training accuracy and the share of the most frequent winner (what a
constant pick would get) are reported beside it.
"""
import torch
from torch import nn

import cond
import data
import llm


@torch.inference_mode()
def pair_losses(model, tok, ctx, examples, batch_size=32):
    """Each pair's mean token loss of its code under the context ctx (one, or one per pair), as a list."""
    return [loss for b, c in data.batches_with(examples, ctx, batch_size, tok)
            for loss in llm.example_losses(model, c, b).tolist()]


def losses(model, tok, contexts, examples, batch_size=32):
    """L (N, k): each pair's mean token loss of its reference under each of the k contexts (each
    one for all pairs, or one per pair: cond.py)."""
    return torch.tensor([pair_losses(model, tok, c, examples, batch_size) for c in contexts]).T


def own_likelihood(model, tok, ctx, *, examples, gens, batch_size=32, max_code=129):
    """The LLM's mean token loss of its *own* (extracted) code for each pair: lower = more confident."""
    own, _ = data.encode([{"nl": "", "code": g} for g in gens], tok, max_code=max_code)
    return pair_losses(model, tok, ctx, [(nl, code) for (nl, _), (_, code) in zip(examples, own)], batch_size)


def fit(f, target, k, steps=300, lr=1e-2, weight_decay=1e-2, seed=0):
    """A linear head on standardised features, trained to predict the winning draw; returns
    predict(f_test) -> chosen indices, and the training accuracy."""
    torch.manual_seed(seed)
    mean, std = f.mean(0), f.std(0).clamp(min=1e-6)
    head = nn.Linear(f.shape[1], k)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    x = (f - mean) / std
    for _ in range(steps):
        loss = nn.functional.cross_entropy(head(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad()

    @torch.no_grad()
    def predict(f_test):
        return head((f_test - mean) / std).argmax(1).tolist()
    return predict, sum(a == b for a, b in zip(predict(f), target.tolist())) / len(target)


def selected(model, tok, contexts, *, train_examples, test_examples, batch_size=32):
    """The learned pick for each test pair, and a report: training accuracy, the most frequent
    winner's share (a constant pick's accuracy) and the training pairs it learned from. contexts:
    the k prompts, for a method that reads the instruction those of the training pairs (k, N, n, d)."""
    features = lambda examples: cond.features(model, tok, examples, encoder=False)
    target = losses(model, tok, contexts, train_examples, batch_size).argmin(1)
    predict, accuracy = fit(features(train_examples), target, len(contexts))
    majority = torch.bincount(target, minlength=len(contexts)).max().item() / len(target)
    return predict(features(test_examples)), {"train_accuracy": accuracy, "majority_share": majority,
                                                      "train_pairs": len(target)}
