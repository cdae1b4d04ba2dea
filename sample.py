"""Sample prompts from a trained DDPT, generate code for the test split, score it.

    python sample.py                          # the run train.py made with no arguments
    python sample.py --out out/X --sample-steps 50            # DDIM-50 instead of DDPM over all T
    python sample.py --out out/X --data humaneval --max-new-tokens 300   # pass@1, pass@k in the sandbox
    python sample.py --out out/X --guidance 1             # ddpt-cond: guided draws, into results-w1.md

For each training seed of the run (its seed<S> folder), one table on the same test pairs: no
context, the manual prompt, then every method the seed folder holds a checkpoint of (methods.py):
one row for a deterministic method (soft prompt tuning); for a stochastic one (DDPT) its k draws'
top-1, best-of-k by the LLM's own likelihood, the learned pick (selector.py) and the oracle
best-of-k, with how much the draws differ. Each method is rebuilt from its checkpoint alone
(config.json is only a record). Every row's generations go through the same code extraction
(`llm.extract_code`: the first fenced block, else the text) before scoring. Written to results.md /
results.json in the seed folder (the noise draws are seeded by the training seed), with the
prompts' nearest tokens and example generations (generations.jsonl keeps the raw text too). With
--data humaneval (results-humaneval.md ...), every row also gets pass@1 (its programs run against
the tests in execution.py's sandbox), and DDPT's k prompts (one greedy program each) meet the
manual prompt's k temperature samples in pass@k. The run folder gets the table over seeds (tables.py).
"""
import argparse
import json
import os
import re
import sys
import time

import torch

import checkpoint
import cond
import data
import execution
import llm
import metrics
import selector
import tables
from diffusion import steps_arg
from methods import METHODS
from prompts import spread
from train import count


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="python sample.py [options]  (--help lists them)")
    a = p.add_argument
    a("--out", default="out/tiny-demo", help="run folder written by train.py")
    a("--k", type=count, default=5, help="prompts sampled from a stochastic method (noise draws)")
    a("--sample-steps", type=steps_arg, default=None, metavar="K|all",
      help="DDIM over K steps, or all: DDPM over all T steps (default, the paper's)")
    a("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic)")
    a("--guidance", type=float, default=0.0, help="classifier-free guidance weight w of a method that reads "
      "the instruction (cond.py; 0: the conditional model)")
    a("--max-new-tokens", type=count, default=128, help="generation length")
    a("--num-beams", type=count, default=1, help="1 = greedy, the paper's setting")
    a("--batch-size", type=count, default=32, help="test pairs per generation batch")
    a("--limit", type=count, default=None, help="score only the first N test pairs")
    a("--select-pairs", type=count, default=500, help="training pairs the learned pick among k draws is fitted on")
    a("--data", default=None, choices=["humaneval"], help="test on HumanEval instead of the run's own test split")
    a("--temperature", type=float, default=0.8, help="HumanEval: the manual prompt's k samples, with --top-p")
    a("--top-p", type=float, default=0.95, help="HumanEval: nucleus of the manual prompt's k samples")
    a("--timeout", type=float, default=10.0, help="HumanEval: seconds per program in the sandbox")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    return p.parse_args(argv)


def run_prompt(model, tok, ctx, *, examples, args, raw_by=None, name=None, temperature=None):
    """Extracted code and per-pair held-out losses of one context (n, d), or one per pair (N, n, d),
    over the test pairs (the raw generations go to raw_by[name]); greedy, or sampled at a temperature."""
    raw, losses = [], []
    with torch.inference_mode():
        for b, c in data.batches_with(examples, ctx, args.batch_size, tok):
            raw += llm.generate(model, tok, c, b, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                                temperature=temperature, top_p=args.top_p)
            losses += llm.example_losses(model, c, b).tolist()
    if raw_by is not None:
        raw_by[name] = raw
    return [llm.extract_code(r) for r in raw], losses


def row(name, gens, refs, *, loss, secs):
    return {"method": name, **metrics.evaluate(gens, refs), "pair_loss": loss, "sec_per_prompt": secs,
            **dict.fromkeys(tables.DIAGNOSTICS)}


def main(argv=None):
    args = parse(argv)
    if not os.path.isdir(args.out):
        sys.exit(f"no run in {args.out}: train one first with python train.py --out {args.out}")
    with checkpoint.lock(args.out):
        seeds = sorted(int(f[4:]) for f in os.listdir(args.out) if re.fullmatch(r"seed\d+", f))
        runs = {seed: ckpts for seed in seeds if (ckpts := trained(os.path.join(args.out, f"seed{seed}")))}
        if not runs:
            sys.exit(f"no checkpoint in {args.out} yet: train.py writes one every --eval-every steps")
        records = {json.dumps({k: v for k, v in c["run"].items() if k != "steps"}, sort_keys=True)
                   for ckpts in runs.values() for c in ckpts.values()}
        if args.guidance and not any(METHODS[m].conditional for ckpts in runs.values() for m in ckpts):
            sys.exit(f"--guidance is for a method that reads the instruction (ddpt-cond, ddpt-mcl-cond); "
                     f"{args.out} has none")
        if len(records) > 1:
            sys.exit(f"the checkpoints in {args.out} come from different runs (model, prompt or data differ): "
                     "sample each run from its own folder")
        run(args, runs)


def trained(folder):
    """{method: checkpoint} of every registered method saved in one seed's `folder`. A partly
    trained run is sampled with what it has, and says so."""
    ckpts, files = {}, {f for f in os.listdir(folder) if f.endswith(".pt")}
    for name in METHODS:
        if f"{name}.pt" in files:
            ckpts[name] = ckpt = checkpoint.load(os.path.join(folder, f"{name}.pt"))
            if ckpt["step"] < ckpt["run"]["steps"]:
                print(f"note: {folder}/{name}.pt is from step {ckpt['step']} of {ckpt['run']['steps']}: "
                      "train.py --resume finishes it")
    for f in sorted(files - {f"{name}.pt" for name in METHODS}):
        print(f"note: {folder}/{f} is no registered method (methods.py): its rows are left out")
    return ckpts


def run(args, runs):
    """Every seed's rows on the same test pairs (written to its seed folder), then the table over
    seeds with paired-bootstrap intervals (tables.py), written to the run folder."""
    cfg = next(iter(next(iter(runs.values())).values()))["run"]
    humaneval = args.data == "humaneval"
    splits = data.load(cfg["data"], cfg["data_dir"], cfg["split_seed"])
    test = (data.humaneval() if humaneval else splits["test"])[:args.limit]
    model, tok = llm.load(cfg["model"], dtype=cfg["dtype"], device=args.device, data_name=cfg["data"],
                          device_map=cfg["device_map"], data_dir=cfg["data_dir"])
    examples, cut = data.encode(test, tok, max_nl=1024 if humaneval else 128, max_code=cfg["max_code"])
    check = execution.humaneval_program if humaneval else execution.demo_program if cfg["data"] == "demo" else None
    train_examples = data.encode(splits["train"][:args.select_pairs], tok, max_code=cfg["max_code"])[0]
    lm = {"model": model, "tok": tok, "examples": examples, "fixed": {}, "train_examples": train_examples,
          "passed": execution.tester(check, test, args.timeout) if check else None}
    if any(METHODS[name].conditional for ckpts in runs.values() for name in ckpts):  # once for every seed
        lm["features"] = {"test": cond.features(model, tok, examples), "train": cond.features(model, tok, train_examples)}
    per_seed = {}
    for seed, ckpts in runs.items():
        res = {"cfg": cfg, "seed": seed, "test": test, "cut": cut, "rows": [], "gens": {}, "raw": {}, "spread": {},
               "extra": {}, "tuned": [], "top1": [], "picks": []}  # row names tables.py compares
        score_seed(args, ckpts, lm=lm, res=res)
        tables.write_seed(args, res, os.path.join(args.out, f"seed{seed}"))
        per_seed[seed] = res
    tables.write(args, per_seed)


def score_seed(args, ckpts, *, lm, res):
    """One seed's rows: no context and the manual prompt (the same for every seed: scored once),
    then each trained method, its noise drawn from the seed."""
    model, tok, examples, seed, refs = lm["model"], lm["tok"], lm["examples"], res["seed"], [p["code"] for p in res["test"]]
    device, d = llm.embeddings(model).device, llm.embeddings(model).shape[1]

    def score(name, ctx, secs=0.0, fixed=False):
        if name not in lm["fixed"]:
            gens, losses = run_prompt(model, tok, ctx, examples=examples, args=args, raw_by=res["raw"], name=name)
            done = (row(name, gens, refs, loss=sum(losses) / len(losses), secs=secs), gens, res["raw"][name])
            if not fixed:
                return keep(*done)
            lm["fixed"][name] = done
        keep(*lm["fixed"][name])

    def keep(r, gens, raw):
        res["rows"].append(dict(r))
        res["gens"][r["method"]], res["raw"][r["method"]] = gens, raw

    manual = llm.text_context(model, tok, res["cfg"]["prompt"])
    score("no context", torch.zeros(0, d), fixed=True)
    score("manual prompt", manual, fixed=True)
    for name in sorted(ckpts, key=lambda m: METHODS[m].stochastic):  # one-row methods first
        module = METHODS[name].from_checkpoint(ckpts[name]).to(device)
        if module.stochastic:
            res["spread"][name] = draw_rows(model, tok, module, lm=lm, args=args, res=res)
        else:
            t0 = time.perf_counter()
            ctx = module.sample(1, generator=torch.Generator().manual_seed(seed))[0]
            score(module.label(), ctx, time.perf_counter() - t0)
            res["tuned"].append(module.label())
            res["spread"][name] = {"nearest_tokens": llm.nearest_tokens(model, tok, ctx, k=3)}
    passed, humaneval = lm["passed"], args.data == "humaneval"
    if passed:  # run every row's programs against their tests (HumanEval) or against the reference (demo)
        outcomes = {r["method"]: passed(res["gens"][r["method"]]) for r in res["rows"]}
        for r in res["rows"]:
            r["pass@1" if humaneval else "exec"] = sum(outcomes[r["method"]]) / len(refs)
    if humaneval:
        torch.manual_seed(seed)
        samples = [run_prompt(model, tok, manual, examples=examples, args=args, raw_by=res["raw"],
                              name=f"manual sample {j}", temperature=args.temperature)[0] for j in range(args.k)]
        res["extra"] = {"pass_at_k": pass_at_k(args, res, samples=samples, passed=passed)}
    elif passed:
        res["extra"] = {"exec_vs_exact_match": disagreements(res, outcomes)}


def disagreements(res, outcomes):
    """Where exec and exact match disagree, over every row's pairs, with two examples each way."""
    ways = {"runs like the reference, other text": [], "same text, runs otherwise": []}
    for r in res["rows"]:
        for p, g, ok in zip(res["test"], res["gens"][r["method"]], outcomes[r["method"]]):
            if ok != (g.strip() == p["code"].strip()):
                ways[list(ways)[not ok]].append({"method": r["method"], "nl": p["nl"], "reference": p["code"],
                                                 "generated": g})
    return {way: {"count": len(found), "examples": list({e["generated"]: e for e in found}.values())[:2]}
            for way, found in ways.items()}


def pass_at_k(args, res, *, samples, passed):
    """pass@1 and pass@k of each stochastic method's k prompts (one greedy program each) against the
    manual prompt's k temperature samples: k programs against k programs."""
    k, groups = args.k, {f"manual prompt, {args.k} samples (T {args.temperature}, top-p {args.top_p})": samples}
    for name in res["spread"]:
        if f"{name} draw 0" in res["gens"]:
            groups[f"{METHODS[name].title}, {k} prompts (greedy)"] = [res["gens"][f"{name} draw {j}"] for j in range(k)]
    out = []
    for name, draws in groups.items():
        c = [sum(col) for col in zip(*(passed(g) for g in draws))]  # programs that passed, per problem
        out.append({"method": name, "pass@1": sum(metrics.pass_at_k(k, n, 1) for n in c) / len(c),
                    f"pass@{k}": sum(metrics.pass_at_k(k, n, k) for n in c) / len(c)})
    return out


def draw_rows(model, tok, module, *, lm, args, res):
    """A stochastic method's k prompts: top-1, best-of-k by the LLM's likelihood, the learned pick
    (selector.py) and the oracle best-of-k rows, and how different the k prompts are (one constant
    prompt is what the LLM loss alone rewards). A method that reads the instruction (cond.py) draws
    k prompts for each test pair, and k for each of the selector's training pairs from the same seed."""
    examples, train_examples, refs, k = lm["examples"], lm["train_examples"], [p["code"] for p in res["test"]], args.k
    draw = lambda split: module.sample(k, generator=torch.Generator().manual_seed(res["seed"]), steps=args.sample_steps,
                                       eta=args.eta, **({"features": lm["features"][split], "w": args.guidance}
                                                        if module.conditional else {}))
    t0 = time.perf_counter()
    contexts = draw("test")
    secs = (time.perf_counter() - t0) / k / (len(refs) if module.conditional else 1)
    train_contexts = draw("train") if module.conditional else contexts
    runs = [run_prompt(model, tok, c, examples=examples, args=args, raw_by=res["raw"], name=f"{module.kind} draw {j}")
            for j, c in enumerate(contexts)]
    own = [selector.own_likelihood(model, tok, c, examples=examples, gens=gens, batch_size=args.batch_size,
                                   max_code=args.max_new_tokens + 1) for c, (gens, _) in zip(contexts, runs)]
    learned, report = selector.selected(model, tok, train_contexts, train_examples=train_examples,
                                        test_examples=examples, batch_size=args.batch_size)
    name = module.label(args.sample_steps) + (f", w {args.guidance:g}" if module.conditional and args.guidance else "")
    pick = [min(range(k), key=lambda j: own[j][i]) for i in range(len(refs))]
    oracle = [max(range(k), key=lambda j: (runs[j][0][i].strip() == refs[i].strip(),
                                           metrics.bleu4([runs[j][0][i]], [refs[i]], smooth=True)))
              for i in range(len(refs))]
    res["top1"].append(f"{name} top-1")
    res["picks"] += [f"{name} best-of-{k}, LLM likelihood", f"{name} selected", f"{name} oracle best-of-{k}"]
    for method, chosen in ((f"{name} top-1", [0] * len(refs)), (f"{name} best-of-{k}, LLM likelihood", pick),
                           (f"{name} selected", learned),
                           (f"{name} oracle best-of-{k}", oracle)):  # the oracle peeks at refs: no loss
        res["gens"][method] = [runs[j][0][i] for i, j in enumerate(chosen)]
        loss = None if chosen is oracle else sum(runs[j][1][i] for i, j in enumerate(chosen)) / len(refs)
        res["rows"].append(row(method, res["gens"][method], refs, loss=loss, secs=secs))
    res["gens"] |= {f"{module.kind} draw {j}": gens for j, (gens, _) in enumerate(runs)}
    diagnostics = spread(module.directions(contexts))
    diagnostics["selector"] = report
    first = contexts[0] if contexts.dim() == 3 else contexts[0, 0]  # draw 0 (of the first test pair)
    diagnostics["nearest_tokens"] = llm.nearest_tokens(model, tok, first, k=3)
    diagnostics["differ"] = sum(len({runs[j][0][i] for j in range(k)}) > 1 for i in range(len(refs))) / len(refs)
    top1 = next(r for r in res["rows"] if r["method"] == f"{name} top-1")
    top1 |= {c: diagnostics[c] for c in tables.DIAGNOSTICS}
    return diagnostics


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, ValueError, OSError) as e:  # bad input: one line that says what to do
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:  # the results files are written atomically at the end, so none is half-written
        sys.exit("interrupted: no results file was changed")
