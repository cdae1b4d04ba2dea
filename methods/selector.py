"""A learned pick of one of a stochastic method's k prompts for each test pair, without the reference.

sample.py scores the picks registered in prompts.PICKS beside top-1 (the first draw) and the oracle
(the draw whose code is closest to the reference, an upper bound no real system has). This module
registers two:

    best-of-k, LLM likelihood    the draw whose own generation the LLM finds most likely
    selected                     a learned pick: which draw wins for this instruction

The selector is trained on training pairs, for the very k prompts sample.py drew, after they are
fixed (the method's own training is left as it is):

    target_i = argmin_j L_ij          L_ij: the LLM's loss of training pair i's reference under prompt j
    p(j | q) = softmax_j(W f(q) + b)  f(q): the mean input embedding of the instruction's tokens (frozen,
                                      llm.instruction_features), standardised with the training pairs' mean and spread
    fit: cross-entropy to the targets, full-batch AdamW; test pair -> argmax_j p(j | q)

A linear head on frozen features is the smallest thing that can learn "this kind of instruction
goes with that draw"; its training accuracy and the share of the most frequent winner (what a
constant pick would get) are reported beside it.
"""
import torch
from torch import nn

import data
import llm
from prompts import PICKS


@torch.inference_mode()
def pair_losses(model, tok, ctx, examples, batch_size=32):
    """Each pair's mean token loss of its code under the context ctx (one, or one per pair), as a list."""
    return [loss for b, c in data.batches_with(examples, ctx, batch_size, tok)
            for loss in llm.example_losses(model, c, b).tolist()]


def losses(model, tok, contexts, examples, batch_size=32):
    """L (N, k): each pair's mean token loss of its reference under each of the k contexts (each
    one for all pairs, or one per pair: methods/cond.py)."""
    return torch.tensor([pair_losses(model, tok, c, examples, batch_size) for c in contexts]).T


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
    features = lambda examples: llm.instruction_features(model, tok, examples, encoder=False)
    target = losses(model, tok, contexts, train_examples, batch_size).argmin(1)
    predict, accuracy = fit(features(train_examples), target, len(contexts))
    majority = torch.bincount(target, minlength=len(contexts)).max().item() / len(target)
    return predict(features(test_examples)), {"train_accuracy": accuracy, "majority_share": majority,
                                                      "train_pairs": len(target)}


def likelihood(draws):
    """prompts.PICKS's "best-of-k, LLM likelihood": for each pair the draw whose own (extracted) code
    the LLM finds most likely under its prompt (lowest mean token loss). No training."""
    own = []
    for ctx, gens in zip(draws.contexts, draws.gens):
        code, _ = data.encode([{"nl": "", "code": g} for g in gens], draws.tok, max_code=draws.max_new_tokens + 1)
        pairs = [(nl, c) for (nl, _), (_, c) in zip(draws.examples, code)]
        own.append(pair_losses(draws.model, draws.tok, ctx, pairs, draws.batch_size))
    return [min(range(len(own)), key=lambda j: own[j][i]) for i in range(len(draws.examples))], None


def pick(draws):
    """prompts.PICKS's "selected": fitted on the training pairs' losses under the k prompts (for a
    method that reads the instruction, the k prompts drawn for those pairs)."""
    chosen, report = selected(draws.model, draws.tok, draws.contexts_for("train"), train_examples=draws.train_examples,
                              test_examples=draws.examples, batch_size=draws.batch_size)
    text = (f"Selector: training accuracy {report['train_accuracy']:.1%} on {report['train_pairs']} pairs, "
            f"the most frequent winner's share {report['majority_share']:.1%}.")
    return chosen, report | {"text": text}


PICKS["best-of-{k}, LLM likelihood"] = likelihood  # first: the order of the rows
PICKS["selected"] = pick
