"""Train DDPT (and the soft-prompt-tuning baseline) against a frozen code LLM.

    python train.py                                       # offline: tiny model, demo data, both methods
    python train.py --model codet5p-220m --data conala --data-dir ../shared/data/conala --dtype bf16

    python train.py --seed 0 1 2                          # three seeds, one subfolder each

The run folder (--out) gets config.json (the run's config, built once) and, per training seed, a
folder seed<S> with log.jsonl and one checkpoint per method (<kind>.pt: ddpt.pt, prompt-tuning.pt, ...),
which holds all that sample.py needs. A seed sets a method's initialisation, batch order and noise,
each method on its own (the same whatever else the run trains); the data split is --split-seed's,
the same for every seed. --resume continues a stopped run exactly.

    torchrun --standalone --nproc_per_node 4 train.py -- --model codet5p-2b --dtype bf16 ...

runs it on 4 GPUs (runtime/distributed.py): the same global --batch-size split over the ranks, the same
result as one process, rank 0 writing. (The `--` keeps torchrun from reading --n and --r as its own
options' abbreviations.)
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from runtime import checkpoint
import data
from runtime import distributed
import llm
import prompts
from ddpt import objective
from models import tiny
from prompts import METHODS, count, rates

DEFAULT = ["ddpt", "prompt-tuning"]  # what train.py trains when --method is not given: the paper's and its baseline
VALID_DRAWS = 4  # contexts a stochastic method's held-out loss averages over


def parse(argv=None):
    """The options: the run's own here, each method's from its class (prompts.Option, when="train")."""
    prompts.discover()
    data.discover()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="python train.py [options]  (--help lists them)")
    a = p.add_argument
    a("--model", default="tiny", help="short name (codet5p-220m ... instructcodet5p-16b, tiny), hub id or local folder")
    a("--data", default=tiny.CORPUS, choices=data.names("train"), help="data set (default: the offline demo task)")
    a("--data-dir", default=None, help="local copy of the data set (default: download into the cache)")
    a("--method", nargs="+", default=DEFAULT, choices=list(METHODS), metavar="METHOD",
      help=f"what to train, in order: any of {', '.join(METHODS)} (default: {' '.join(DEFAULT)})")
    a("--n", type=count, default=10, help="context length in tokens")
    a("--prompt", default=None, help="manual prompt text (default: the data set's own, if it has one; for chat "
      f"models {llm.CHAT_PROMPT!r}; else the paper's {llm.PAPER_PROMPT!r})")
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
    return p.parse_args(argv)


def configure(args, *, tok, out, device, reproducible, cut):
    """The run's config, built once from the options and what they resolve to (the folder, the manual
    prompt, each method's rate, the device): written to config.json and into every checkpoint."""
    methods = list(dict.fromkeys(args.method))
    return {k: v for k, v in vars(args).items() if k != "resume"} | {
        "method": methods, "seed": list(dict.fromkeys(args.seed)), "out": out, "device": device,
        "reproducible": reproducible, "prompt": args.prompt or llm.default_prompt(args.data, tok),
        "rates": {name: rates(args.lr, methods).get(name, METHODS[name].lr) for name in methods},
        "truncated_train_pairs": cut, "processes": distributed.world()[1]}


@dataclass
class Run:
    """What every method of a run is trained with: the config, the frozen LLM and the encoded splits."""
    cfg: dict
    resumed: bool  # --resume: each method continues from its checkpoint
    model: object
    tok: object
    train_ex: list
    valid_ex: list
    feats: dict  # {"train", "valid"} instruction features for a method that reads them (`conditional`), or None


@torch.inference_mode()
def heldout_loss(model, tok, ctx, examples, batch_size=32):
    """The held-out *token* loss: cross-entropy summed over every code token of every pair, divided
    by the number of tokens (sample.py's test loss is the mean over pairs of each pair's mean).
    ctx: one context (n, d), or one per pair (N, n, d). Under torchrun each rank scores every W-th
    pair and the sums are added up."""
    rank, W = distributed.world()
    total = tokens = 0
    for b, c in data.batches_with(examples[rank::W], ctx if ctx.dim() == 2 else ctx[rank::W], batch_size, tok):
        ce, real = llm.token_losses(model, c, b)
        total, tokens = total + ce.sum().item(), tokens + real.sum().item()
    total, tokens = distributed.all_sum(total, tokens)
    return total / tokens


def scorer(model, batch, mine, B):
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


def setup(name, run, seed):
    """A new module of method `name`, its optimiser and its generator (the one stream of batches and
    noise, the same on every rank), all from `seed` alone: the same whatever else the run trains."""
    cfg, Method = run.cfg, METHODS[name]
    C, s = llm.context_from_text(run.model, run.tok, cfg["prompt"], cfg["n"])
    torch.manual_seed(seed)  # the module's initialisation (the same on every rank)
    module = Method.from_config(C, s, cfg).to(llm.embeddings(run.model).device)
    adapted = module.adapt(run.model)  # a method that changes the LLM (methods/lora.py) builds its parts here
    opt = torch.optim.AdamW(module.parameters(), lr=cfg["rates"][name], weight_decay=cfg["weight_decay"])
    return module, adapted, opt, torch.Generator().manual_seed(seed)


def resume(module, opt, g, path, cfg):
    """The step a stopped run continues from (0, or its checkpoint's) and the seconds spent before it,
    with the module's weights, the optimiser's state and the generator's position restored (rank 0
    reads it, every rank gets it)."""
    ckpt = checkpoint.load(path) if distributed.is_main() and os.path.exists(path) else None
    ckpt = distributed.broadcast(ckpt)
    if ckpt is None:
        return 0, 0.0
    checkpoint.check(ckpt, module.kind, module.config() | {"model": cfg["model"], "prompt": cfg["prompt"]})
    module.load_state_dict(ckpt["weights"])
    opt.load_state_dict(ckpt["optimizer"])
    g.set_state(ckpt["rng"])
    return ckpt["step"], ckpt.get("train_secs", 0.0)


def step(ddp, module, opt, run, g, *, name):
    """One optimiser step on a fresh batch: the objective (Eq. 3) and its gradient. Returns L."""
    cfg, B = run.cfg, run.cfg["batch_size"]
    mine, W = distributed.share(B), distributed.world()[1]
    idx = torch.randint(len(run.train_ex), (B,), generator=g).tolist()
    batch = data.collate([run.train_ex[i] for i in idx[mine]], run.tok)
    f = run.feats["train"][idx] if module.conditional else None  # the whole batch's: every rank draws the same
    ce, tokens = objective(ddp, run.model, batch, B=B, generator=g, share=mine,
                           score=scorer(run.model, batch, mine, B), features=f)
    total, tokens = distributed.all_sum(ce.item(), tokens)
    loss = total / tokens  # L, the global batch's mean token cross-entropy
    if not math.isfinite(loss):
        raise FloatingPointError(f"{name}: the loss became {loss}; the last good checkpoint is kept. "
                                 "Lower --lr or use --dtype fp32.")
    (ce / tokens * W).backward()  # W ranks, whose gradients DDP averages: the gradient of L
    nn.utils.clip_grad_norm_(module.parameters(), cfg["clip"])
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def evaluate(module, run):
    """The held-out token loss of the contexts sample.py would draw now (fixed noise, so evaluations
    compare), averaged over VALID_DRAWS draws for a stochastic method."""
    given = {"features": run.feats["valid"]} if module.conditional else {}
    contexts = module.sample(VALID_DRAWS if module.stochastic else 1, generator=torch.Generator().manual_seed(0), **given)
    losses = [heldout_loss(run.model, run.tok, c, run.valid_ex) for c in contexts]
    return sum(losses) / len(losses)


def train(name, run, *, seed, folder, log):
    """One method's plain loop: draw a batch, the objective (Eq. 3) on it, a step; every --eval-every
    steps the held-out loss and a checkpoint."""
    cfg, is_main = run.cfg, distributed.is_main()
    module, adapted, opt, g = setup(name, run, seed)
    path = os.path.join(folder, f"{name}.pt")
    start, before = resume(module, opt, g, path, cfg) if run.resumed else (0, 0.0)
    t0 = time.perf_counter()
    clock = lambda: before + time.perf_counter() - t0  # this method's training seconds, validation included
    manual = heldout_loss(run.model, run.tok, llm.text_context(run.model, run.tok, cfg["prompt"]), run.valid_ex)
    ddp = distributed.wrap(module)
    with adapted, tqdm(range(start, cfg["steps"]), initial=start, total=cfg["steps"], desc=f"{name}, seed {seed}",
                       disable=not is_main) as bar:
        for i in bar:  # (the bar is closed on Ctrl-C too)
            try:
                loss = step(ddp, module, opt, run, g, name=name)
            except FloatingPointError as e:
                sys.exit(f"{e} (step {i}, {path})")
            bar.set_postfix(loss=f"{loss:.4f}")
            record = {"method": name, "step": i + 1, "loss": loss}
            due = (i + 1) % cfg["eval_every"] == 0 or i + 1 == cfg["steps"]
            if due:
                record |= {"valid_token_loss": evaluate(module, run), "valid_token_loss_manual": manual}
                if is_main:
                    bar.write(f"{name} seed {seed} step {i + 1}: held-out token loss "
                              f"{record['valid_token_loss']:.4f} (manual prompt {manual:.4f})")
            log.write(json.dumps(record) + "\n")
            log.flush()
            if due and is_main:  # after the log row: a run killed in between redoes (and re-logs) the step on --resume
                save(module, opt, g, run, seed=seed, step=i + 1, secs=clock(), path=path)
        if hasattr(module, "fit"):  # a method that also learns from targets its loop's result makes (methods/ddpt_pd.py)
            found = module.fit(model=run.model, tok=run.tok, examples=run.train_ex, features=run.feats["train"],
                               generator=g, cache=folder if is_main else None)
            if found is not None:  # (None: fitted already, a resumed run)
                record = {"method": name, "step": cfg["steps"], "fit": found, "valid_token_loss": evaluate(module, run),
                          "valid_token_loss_manual": manual}
                if is_main:
                    bar.write(f"{name} seed {seed} fitted: held-out token loss {record['valid_token_loss']:.4f}")
                    log.write(json.dumps(record) + "\n")
                    save(module, opt, g, run, seed=seed, step=cfg["steps"], secs=clock(), path=path)
    return module


def save(module, opt, g, run, *, seed, step, secs, path):
    """The checkpoint: the module's own (kind, config, weights), the run's config, what --resume needs,
    and what it cost: trainable parameters and training seconds so far."""
    checkpoint.save(module.checkpoint() | {"run": run.cfg, "seed": seed, "optimizer": opt.state_dict(),
                                           "rng": g.get_state(), "step": step, "train_secs": secs,
                                           "params": sum(p.numel() for p in module.parameters())}, path)


def main(argv=None):
    args = parse(argv)
    out = args.out or os.path.join("out", f"{os.path.basename(args.model.rstrip('/'))}-{args.data}")
    rates(args.lr, args.method)  # a bad --lr stops here, before anything loads
    unused = prompts.unused_option(args, "train", args.method)
    if unused:  # an option that would change nothing: say so
        sys.exit(f"{unused[0]} is an option of --method {' or '.join(unused[1])}, which this run does not train")
    if args.resume and not os.path.exists(os.path.join(out, "config.json")):  # before the lock makes the folder
        sys.exit(f"{out} holds no run to resume (no config.json): check --out, or drop --resume to start one")
    reproducible = args.reproducible if args.reproducible is not None else args.model == "tiny" and args.device == "cpu"
    if reproducible and not args.device.startswith("cpu"):
        sys.exit(f"--reproducible is for the CPU (one thread), not --device {args.device}: drop it")
    device, max_memory = distributed.setup(args.device, args.device_map)
    if args.batch_size < distributed.world()[1]:
        sys.exit(f"--batch-size {args.batch_size} is smaller than the {distributed.world()[1]} processes: "
                 "each needs a pair; raise --batch-size (it is the global batch)")
    try:
        with checkpoint.lock(out) if distributed.is_main() else contextlib.nullcontext(), \
                tiny.reproducible() if reproducible else contextlib.nullcontext():
            launch(args, out=out, device=device, max_memory=max_memory, reproducible=reproducible)
    finally:
        distributed.teardown()


def launch(args, *, out, device, max_memory, reproducible):
    """Loads the data and the LLM, builds the config once, then trains every method of every seed."""
    is_main = distributed.is_main()
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(cfg_path) and not args.resume:
        sys.exit(f"{out} already holds a run: pass --resume to continue it, or another --out")
    distributed.barrier()  # every rank has looked before rank 0 writes config.json
    with distributed.main_first():  # rank 0 fills the caches (data, tiny pre-training, GGUF conversion)
        splits = data.load(args.data, args.data_dir, args.split_seed)  # before the model: bad data fails in a second
        model, tok = llm.load(args.model, dtype=args.dtype, device=device, data_name=args.data,
                              device_map=args.device_map, data_dir=args.data_dir, max_memory=max_memory)
    train_ex, cut = data.encode(splits["train"], tok, max_code=args.max_code)
    valid_ex, _ = data.encode(splits["valid"], tok, max_code=args.max_code)
    cfg = configure(args, tok=tok, out=out, device=device, reproducible=reproducible, cut=cut)
    n_prompt = len(tok(cfg["prompt"], add_special_tokens=False)["input_ids"])
    if is_main:
        if n_prompt != cfg["n"]:  # then an untrained DDPT is not exactly the manual prompt row
            print(f"note: the manual prompt has {n_prompt} tokens, the context n = {cfg['n']}: it is "
                  f"{'cut' if n_prompt > cfg['n'] else 'padded with the pad token'} (--n {n_prompt} would fit it exactly)")
        print(f"{len(train_ex)} training pairs ({cut} cut to --max-code {cfg['max_code']}), {len(valid_ex)} validation pairs")
        if not os.path.exists(cfg_path):  # a resumed run keeps the config it started with
            checkpoint.write_atomic(cfg_path, json.dumps(cfg, indent=2))
    feats = None  # the instructions' frozen features, once, for the methods that read them
    if any(METHODS[name].conditional for name in cfg["method"]):
        feats = {"train": llm.instruction_features(model, tok, train_ex), "valid": llm.instruction_features(model, tok, valid_ex)}
    run = Run(cfg=cfg, resumed=args.resume, model=model, tok=tok, train_ex=train_ex, valid_ex=valid_ex, feats=feats)
    for seed in cfg["seed"]:
        folder = os.path.join(out, f"seed{seed}")
        if is_main:
            os.makedirs(folder, exist_ok=True)
            if args.resume:
                checkpoint.trim_log(folder)
        with open(os.path.join(folder, "log.jsonl") if is_main else os.devnull, "a") as log:  # rank 0 logs
            for name in cfg["method"]:  # each once, in the order given
                train(name, run, seed=seed, folder=folder, log=log)
    if is_main:
        print(f"checkpoints in {out}: next, python sample.py --out {out}")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, ValueError, OSError) as e:  # bad input: one line that says what to do
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:  # Ctrl-C: checkpoints are written atomically, so each one is whole
        sys.exit("interrupted: the checkpoints written so far are kept; the same command with --resume continues")
