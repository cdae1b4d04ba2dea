"""Train DDPT (and the soft-prompt-tuning baseline) against a frozen code LLM.

    python train.py                                       # offline: tiny model, demo data, both methods
    python train.py --model codet5p-220m --data conala --data-dir ../shared/data/conala --dtype bf16

    python train.py --seed 0 1 2                          # three seeds, one subfolder each

The run folder (--out) gets config.json (a record of the options) and, per training seed, a folder
seed<S> with log.jsonl and one checkpoint per method (ddpt.pt, prompt-tuning.pt, ...: methods.py
names them), which holds all that sample.py needs. A seed sets the initialisation, the batch order
and the noise; the data split is --split-seed's, the same for every seed. --resume continues a
stopped run exactly.

    torchrun --standalone --nproc_per_node 4 train.py -- --model codet5p-2b --dtype bf16 ...

runs it on 4 GPUs (tools/distributed.py): the same global --batch-size split over the ranks, the same
result as one process, rank 0 writing. (The `--` keeps torchrun from reading --n and --r as its own
options' abbreviations.)
"""
import argparse
import contextlib
import json
import math
import os
import sys

import torch
from torch import nn
from tqdm import tqdm

import checkpoint
import data
import llm
import prompts
from ddpt import objective
from models import tiny
from prompts import METHODS, count
from tools import distributed

DEFAULT = ["ddpt", "prompt-tuning"]  # what train.py trains when --method is not given: the paper's and its baseline
VALID_DRAWS = 4  # contexts a stochastic method's held-out loss averages over


def parse(argv=None):
    """The options: the run's own here, each method's from its class (prompts.Option, when="train")."""
    prompts.discover()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="python train.py [options]  (--help lists them)")
    a = p.add_argument
    a("--model", default="tiny", help="short name (codet5p-220m ... instructcodet5p-16b, tiny), hub id or local folder")
    a("--data", default="demo", choices=list(data.DATASETS), help="data set")
    a("--data-dir", default=None, help="local copy of the data set (default: download into the cache)")
    a("--method", nargs="+", default=DEFAULT, choices=list(METHODS), metavar="METHOD",
      help=f"what to train, in order: any of {', '.join(METHODS)} (default: {' '.join(DEFAULT)})")
    a("--n", type=count, default=10, help="context length in tokens")
    a("--prompt", default=None, help="manual prompt text (default: 'Write code:' on demo; for chat models "
      f"{llm.CHAT_PROMPT!r}; else the paper's {llm.PAPER_PROMPT!r})")
    a("--lr", nargs="+", default=[], metavar="RATE", help="learning rate: one for every method, or METHOD=RATE "
      "for some (each at its own tuned rate); the others keep their own ("
      + ", ".join(f"{k} {m.lr:g}" for k, m in METHODS.items()) + ")")
    a("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    a("--clip", type=float, default=1.0, help="gradient-norm clipping")
    a("--batch-size", type=count, default=16, help="pairs per step")
    a("--steps", type=count, default=600, help="optimiser steps per method")
    a("--eval-every", type=count, default=200, help="held-out loss and checkpoint every this many steps")
    a("--max-code", type=count, default=128, help="code tokens kept per pair (longer ones are cut and counted)")
    a("--seed", type=int, nargs="+", default=[0], help="training seeds (initialisation, batch order, noise), "
      "one run each in <out>/seed<S>")
    a("--split-seed", type=int, default=0, help="seed of the data split (train / validation / test), shared by all seeds")
    a("--out", default=None, help="run folder (default out/<model>-<data>)")
    a("--resume", action="store_true", help="continue the run in --out")
    a("--dtype", default="fp32", choices=list(llm.DTYPES), help="LLM weights dtype")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    a("--device-map", default=None, help="'auto' to shard a large LLM over the visible GPUs")
    a("--reproducible", action=argparse.BooleanOptionalAction, default=None,
      help="one thread and deterministic algorithms, so that the checkpoints do not depend on the thread "
      "count, on the CPU (default: on for the tiny model there; about 1.5x the time of 2 threads: docs/reliability.md)")
    prompts.add_options(p.add_argument_group("options of the methods (each names its --method)"), "train")
    args = p.parse_args(argv)
    if args.reproducible is None:
        args.reproducible = args.model == "tiny" and args.device == "cpu"
    args.out = args.out or os.path.join("out", f"{os.path.basename(args.model.rstrip('/'))}-{args.data}")
    return args


@torch.inference_mode()
def heldout_loss(model, tok, ctx, examples, batch_size=32):
    """The held-out *token* loss: cross-entropy summed over every code token of every pair, divided
    by the number of tokens (sample.py's test loss is the mean over pairs of each pair's mean).
    ctx: one context (n, d), or one per pair (N, n, d). Under torchrun each rank scores every W-th
    pair and the sums are added up."""
    rank, W = distributed.world()
    total = count = 0
    for b, c in data.batches_with(examples[rank::W], ctx if ctx.dim() == 2 else ctx[rank::W], batch_size, tok):
        ce, real = llm.token_losses(model, c, b)
        total, count = total + ce.sum().item(), count + real.sum().item()
    total, count = distributed.all_sum(total, count)
    return total / count


def pair_losses(model, batch, mine, B):
    """score(contexts (B, n, d)) -> the B pairs' losses (cross-entropy summed over each pair's code
    tokens), no gradients: how a method that chooses among draws (methods/mcl.py) compares them. Each rank
    scores its own share of the batch; the sums over ranks put the B losses together on every rank."""
    def score(contexts):
        with torch.no_grad():
            ce, _ = llm.token_losses(model, contexts[mine], batch)
        losses = torch.zeros(B, dtype=torch.float64)
        losses[mine] = ce.sum(1).double().cpu()
        return torch.tensor(distributed.all_sum(*losses.tolist()), dtype=torch.float64)
    return score


def run_record(args):
    """What every checkpoint of the run keeps beside the module: the LLM, prompt and data it was
    trained with, so that sample.py needs nothing else."""
    keys = ("model", "prompt", "dtype", "device_map", "data", "data_dir", "split_seed", "max_code", "steps")
    return {k: getattr(args, k) for k in keys}


def train(name, args, model, tok, *, seed, folder, train_ex, valid_ex, log, feats):
    """One method's plain loop: draw a batch, the objective (Eq. 3) on it, a step. feats: {"train",
    "valid"} instruction features for a method that reads them (its `conditional`), else None."""
    Method, device, main = METHODS[name], llm.embeddings(model).device, distributed.is_main()
    C, s = llm.context_from_text(model, tok, args.prompt, args.n)
    module = Method.from_args(C, s, args).to(device)
    adapted = module.adapt(model)  # a method that changes the LLM (methods/lora.py) builds its parts here
    params = list(module.parameters())
    opt = torch.optim.AdamW(params, lr=args.rates.get(name, Method.lr), weight_decay=args.weight_decay)
    g = torch.Generator().manual_seed(seed)  # the one stream of batches and noise, the same on every rank
    path, step = os.path.join(folder, f"{name}.pt"), 0
    ckpt = distributed.broadcast(checkpoint.load(path) if args.resume and main and os.path.exists(path) else None)
    if ckpt is not None:
        checkpoint.check(ckpt, name, module.config() | {"model": args.model, "prompt": args.prompt})
        module.load_state_dict(ckpt["weights"])
        opt.load_state_dict(ckpt["optimizer"])
        g.set_state(ckpt["rng"])
        step = ckpt["step"]

    def save(next_step):
        checkpoint.save(module.checkpoint() | {"run": run_record(args), "seed": seed, "optimizer": opt.state_dict(),
                                               "rng": g.get_state(), "step": next_step}, path)

    manual = heldout_loss(model, tok, llm.text_context(model, tok, args.prompt), valid_ex)
    draws = VALID_DRAWS if Method.stochastic else 1
    given = {"features": feats["valid"]} if Method.conditional else {}
    ddp, mine, W = distributed.wrap(module), distributed.share(args.batch_size), distributed.world()[1]
    with adapted, tqdm(range(step, args.steps), initial=step, total=args.steps, desc=f"{name}, seed {seed}",
                       disable=not main) as bar:
        for step in bar:  # (the bar is closed on Ctrl-C too)
            idx = torch.randint(len(train_ex), (args.batch_size,), generator=g).tolist()
            batch = data.collate([train_ex[i] for i in idx[mine]], tok)
            score = pair_losses(model, batch, mine, args.batch_size)
            f = feats["train"][idx] if Method.conditional else None  # the whole batch's: every rank draws the same
            ce, tokens = objective(ddp, model, batch, B=args.batch_size, generator=g, share=mine, score=score, features=f)
            total, tokens = distributed.all_sum(ce.item(), tokens)
            loss = total / tokens  # L, the global batch's mean token cross-entropy
            if not math.isfinite(loss):
                sys.exit(f"{name}: the loss became {loss} at step {step}; the last good checkpoint "
                         f"is kept in {path}. Lower --lr or use --dtype fp32.")
            (ce / tokens * W).backward()  # W ranks, whose gradients DDP averages: the gradient of L
            nn.utils.clip_grad_norm_(params, args.clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss:.4f}")
            record = {"method": name, "step": step + 1, "loss": loss}
            evaluate = (step + 1) % args.eval_every == 0 or step + 1 == args.steps
            if evaluate:  # the contexts sample.py would draw now (fixed noise, so evaluations compare)
                contexts = module.sample(draws, generator=torch.Generator().manual_seed(0), **given)
                losses = [heldout_loss(model, tok, c, valid_ex) for c in contexts]
                record |= {"valid_token_loss": sum(losses) / len(losses), "valid_token_loss_manual": manual}
                if main:
                    bar.write(f"{name} seed {seed} step {step + 1}: held-out token loss "
                              f"{record['valid_token_loss']:.4f} (manual prompt {manual:.4f})")
            log.write(json.dumps(record) + "\n")
            log.flush()
            if evaluate and main:  # after the log row: a run killed in between redoes (and re-logs) the step on --resume
                save(step + 1)
    return module


def trim_log(out):
    """Drops log rows written after a method's last checkpoint: the resumed run writes them again.
    A last line cut off by the kill goes too (its step, logged before its checkpoint, is redone)."""
    path, saved, rows = os.path.join(out, "log.jsonl"), {}, []
    if not os.path.exists(path):
        return
    lines = open(path).read().splitlines()
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise ValueError(f"{path} line {i + 1} is damaged: repair or delete that line, then --resume") from None
    for method in {r["method"] for r in rows}:
        ckpt = os.path.join(out, f"{method}.pt")
        saved[method] = checkpoint.load(ckpt)["step"] if os.path.exists(ckpt) else 0
    checkpoint.write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= saved[r["method"]]))


def rates(values, methods):
    """--lr's values -> {method: rate}: one RATE for every method trained, or METHOD=RATE pairs."""
    out = {}
    for value in values:
        method, _, rate = value.rpartition("=")
        try:
            rate = float(rate)
        except ValueError:
            sys.exit(f"--lr {value}: expected a rate (3e-4) or METHOD=RATE (lora=3e-4)")
        if not rate > 0:
            sys.exit(f"--lr must be positive, got {rate}")
        if len(values) == 1 and not method:  # one rate for every method
            return dict.fromkeys(methods, rate)
        if method not in methods:
            sys.exit(f"--lr {value}: {method or 'a rate without METHOD='} is not trained in this run "
                     f"(--method {' '.join(methods)}): give one rate, or METHOD=RATE for a trained method")
        out[method] = rate
    return out


def main(argv=None):
    args = parse(argv)
    args.rates = rates(args.lr, args.method)
    unused = prompts.unused_option(args, "train", args.method)
    if unused:  # an option that would change nothing: say so
        sys.exit(f"{unused[0]} is an option of --method {' or '.join(unused[1])}, which this run does not train")
    if args.resume and not os.path.exists(os.path.join(args.out, "config.json")):  # before the lock makes the folder
        sys.exit(f"{args.out} holds no run to resume (no config.json): check --out, or drop --resume to start one")
    if args.reproducible and not args.device.startswith("cpu"):
        sys.exit(f"--reproducible is for the CPU (one thread), not --device {args.device}: drop it")
    args.device, max_memory = distributed.setup(args.device, args.device_map)
    if args.batch_size < distributed.world()[1]:
        sys.exit(f"--batch-size {args.batch_size} is smaller than the {distributed.world()[1]} processes: "
                 "each needs a pair; raise --batch-size (it is the global batch)")
    try:
        with checkpoint.lock(args.out) if distributed.is_main() else contextlib.nullcontext(), \
                tiny.reproducible() if args.reproducible else contextlib.nullcontext():
            run(args, max_memory)
    finally:
        distributed.teardown()


def run(args, max_memory=None):
    main = distributed.is_main()
    if os.path.exists(os.path.join(args.out, "config.json")) and not args.resume:
        sys.exit(f"{args.out} already holds a run: pass --resume to continue it, or another --out")
    distributed.barrier()  # every rank has looked before rank 0 writes config.json
    with distributed.main_first():  # rank 0 fills the caches (data, tiny pre-training, GGUF conversion)
        splits = data.load(args.data, args.data_dir, args.split_seed)  # before the model: bad data fails in a second
        model, tok = llm.load(args.model, dtype=args.dtype, device=args.device, data_name=args.data,
                              device_map=args.device_map, data_dir=args.data_dir, max_memory=max_memory)
    args.prompt = args.prompt or llm.default_prompt(args.data, tok)
    n_prompt = len(tok(args.prompt, add_special_tokens=False)["input_ids"])
    if n_prompt != args.n and main:  # then an untrained DDPT is not exactly the manual prompt row
        print(f"note: the manual prompt has {n_prompt} tokens, the context n = {args.n}: it is "
              f"{'cut' if n_prompt > args.n else 'padded with the pad token'} (--n {n_prompt} would fit it exactly)")
    train_ex, cut = data.encode(splits["train"], tok, max_code=args.max_code)
    valid_ex, _ = data.encode(splits["valid"], tok, max_code=args.max_code)
    if main:
        print(f"{len(train_ex)} training pairs ({cut} cut to --max-code {args.max_code}), {len(valid_ex)} validation pairs")
    feats = None  # the instructions' frozen features, once, for the methods that read them
    if any(METHODS[name].conditional for name in args.method):
        feats = {"train": llm.instruction_features(model, tok, train_ex),
                 "valid": llm.instruction_features(model, tok, valid_ex)}
    cfg = os.path.join(args.out, "config.json")
    if main and not os.path.exists(cfg):  # a resumed run keeps the config it started with
        record = vars(args) | {"truncated_train_pairs": cut, "processes": distributed.world()[1]}
        checkpoint.write_atomic(cfg, json.dumps(record, indent=2))
    for seed in dict.fromkeys(args.seed):
        folder = os.path.join(args.out, f"seed{seed}")
        torch.manual_seed(seed)  # the denoiser's initialisation (the same on every rank)
        if main:
            os.makedirs(folder, exist_ok=True)
            if args.resume:
                trim_log(folder)
        with open(os.path.join(folder, "log.jsonl") if main else os.devnull, "a") as log:  # rank 0 logs
            for name in dict.fromkeys(args.method):  # each once, in the order given
                train(name, args, model, tok, seed=seed, folder=folder, train_ex=train_ex, valid_ex=valid_ex, log=log,
                      feats=feats)
    if main:
        print(f"checkpoints in {args.out}: next, python sample.py --out {args.out}")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, ValueError, OSError) as e:  # bad input: one line that says what to do
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:  # Ctrl-C: checkpoints are written atomically, so each one is whole
        sys.exit("interrupted: the checkpoints written so far are kept; the same command with --resume continues")
