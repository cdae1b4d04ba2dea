"""Sample prompts from trained checkpoints, generate code for the test split, score it.

    python sample.py                          # the run train.py made with no arguments
    python sample.py --out out/X --sample-steps 50            # DDIM-50 instead of DDPM over all T
    python sample.py --out out/X --data humaneval --max-new-tokens 300   # pass@1, pass@k in the sandbox (tasks/)
    python sample.py --out out/X --guidance 1             # ddpt-cond: guided draws, into results-w1.md

For each training seed (seed<S> folder), one table on the same test pairs: no context, the manual
prompt, then every method with a checkpoint there, rebuilt from the checkpoint alone: one row for a
deterministic method (soft prompt tuning); for a stochastic one (DDPT) its k draws' top-1, each pick
of prompts.PICKS (methods/selector.py: best-of-k by the LLM's likelihood, a learned pick) and the
oracle best-of-k, with how much the draws differ; for a method that has one (`oracle`: DDPT-PD), its
upper bound fitted to each test reference. Every generation goes through one code extraction (`llm.extract_code`) before scoring;
programs run only in evaluation/execution.py's sandbox. evaluation/tables.py writes each seed's
results.md / results.json / generations.jsonl and the run folder's table over seeds.
"""
import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from runtime import checkpoint
import data
import llm
import metrics
import prompts
from evaluation import checks, execution, tables
from evaluation.tables import Row, SeedResult
from prompts import METHODS, PICKS, count, spread


def parse(argv=None):
    """The options: sampling's own here, each method's from its class (prompts.Option, when="sample"),
    the evaluation sets from the data registry (data.register)."""
    prompts.discover()
    tests = [name for name in data.names("test") if data.get(name).test_only]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="python sample.py [options]  (--help lists them)")
    a = p.add_argument
    a("--out", default="out/tiny-demo", help="run folder written by train.py")
    a("--k", type=count, default=5, help="prompts sampled from a stochastic method (noise draws)")
    a("--max-new-tokens", type=count, default=128, help="generation length")
    a("--num-beams", type=count, default=1, help="1 = greedy, the paper's setting")
    a("--batch-size", type=count, default=32, help="test pairs per generation batch")
    a("--limit", type=count, default=None, help="score only the first N test pairs")
    a("--seed", type=int, nargs="+", default=None, help="score only these training seeds' checkpoints (default: every seed<S> folder)")
    a("--select-pairs", type=count, default=500, help="training pairs a learned pick among k draws is fitted on")
    a("--data", default=None, choices=tests, help="test on an evaluation set instead of the run's own test split")
    a("--temperature", type=float, default=0.8, help="humaneval: the manual prompt's k samples, with --top-p")
    a("--top-p", type=float, default=0.95, help="humaneval: nucleus of the manual prompt's k samples")
    a("--peft", nargs="+", default=[], metavar="FOLDER", help="PEFT prompt-tuning adapters to score as rows beside "
      "the baselines (a prompt tuned elsewhere; tools/export.py writes ours)")
    a("--timeout", type=float, default=10.0, help="seconds per program in the sandbox (a data set that runs its code)")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    prompts.add_options(p.add_argument_group("options of the methods (each names its --method)"), "sample")
    return p.parse_args(argv)


@dataclass
class Setup:
    """What every seed is scored with: the run's record, the test pairs and the LLM."""
    args: argparse.Namespace
    cfg: dict
    tested: data.Dataset  # the data set whose test pairs are scored: the run's own, or --data's
    test: list
    cut: int
    model: object
    tok: object
    examples: list
    train_examples: list
    passed: object  # passed(gens) -> [bool] per test pair (execution.tester), or None
    features: dict = None  # {"test", "train"} instruction features, if a method reads them
    where: str = ""  # "seed S: " while a seed is scored, for the progress bar
    bar: object = None  # the progress bar (stderr): pairs generated, what is being done, time left


def doing(setup, what):
    """Says on the progress bar (stderr, never in a results file) what sample.py is doing now."""
    if setup.bar is not None:
        setup.bar.set_description_str(what, refresh=True)


@dataclass
class Draws:
    """What a pick among a stochastic method's k prompts is given (prompts.PICKS)."""
    model: object
    tok: object
    contexts: torch.Tensor  # (k, n, d), or (k, N, n, d) for a method that reads the instruction
    gens: list  # k lists of extracted code
    examples: list
    instructions: list  # the test pairs' instruction texts (a pick never sees the references)
    train_examples: list
    contexts_for: object  # contexts_for("train") -> the k prompts for the training pairs
    batch_size: int
    max_new_tokens: int


def main(argv=None):
    args = parse(argv)
    if not os.path.isdir(args.out):
        sys.exit(f"no run in {args.out}: train one first with python train.py --out {args.out}")
    with checkpoint.lock(args.out):
        seeds = sorted(int(f[4:]) for f in os.listdir(args.out) if re.fullmatch(r"seed\d+", f))
        if args.seed is not None:
            if set(args.seed) - set(seeds):
                sys.exit(f"--seed {' '.join(map(str, sorted(set(args.seed) - set(seeds))))}: {args.out} has no such seed folder "
                         f"(it has {', '.join(map(str, seeds)) or 'none'})")
            seeds = [s for s in seeds if s in args.seed]
        runs = {seed: ckpts for seed in seeds if (ckpts := trained(os.path.join(args.out, f"seed{seed}")))}
        if not runs:
            sys.exit(f"no checkpoint in {args.out} yet: train.py writes one every --eval-every steps")
        unused = prompts.unused_option(args, "sample", {m for ckpts in runs.values() for m in ckpts})
        if unused:  # an option that would change nothing: say so
            sys.exit(f"{unused[0]} is an option of --method {' or '.join(unused[1])}, and {args.out} has no checkpoint of one")
        records = {json.dumps({k: c["run"][k] for k in checkpoint.RUN}, sort_keys=True)
                   for ckpts in runs.values() for c in ckpts.values()}
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
        print(f"note: {folder}/{f} is no registered method (prompts.METHODS): its rows are left out")
    return ckpts


def run(args, runs):
    """Every seed's rows on the same test pairs (written to its seed folder), then the table over
    seeds with paired-bootstrap intervals (evaluation/tables.py), written to the run folder."""
    cfg = next(iter(next(iter(runs.values())).values()))["run"]
    tested = data.get(args.data or cfg["data"])  # the data set whose test split is scored
    splits = data.load(cfg["data"], cfg["data_dir"], cfg["split_seed"])
    test = (tested.load(None, 0) if args.data else splits)["test"][:args.limit]
    model, tok = llm.load(cfg["model"], dtype=cfg["dtype"], device=args.device, data_name=cfg["data"],
                          device_map=cfg["device_map"], data_dir=cfg["data_dir"])
    examples, cut = data.encode(test, tok, max_nl=tested.max_nl, max_code=cfg["max_code"])
    train_examples = data.encode(splits["train"][:args.select_pairs], tok, max_code=cfg["max_code"])[0]
    passed = execution.tester(tested.program, test, args.timeout) if tested.program else None
    setup = Setup(args=args, cfg=cfg, tested=tested, test=test, cut=cut, model=model, tok=tok, examples=examples,
                  train_examples=train_examples, passed=passed)
    if any(METHODS[name].conditional for ckpts in runs.values() for name in ckpts):  # once for every seed
        setup.features = {"test": llm.instruction_features(model, tok, examples),
                          "train": llm.instruction_features(model, tok, train_examples)}
    # a method's generations per pair (a data set's report may generate k more: HumanEval's manual samples)
    generations = lambda name: (args.k if METHODS[name].stochastic else 1) + hasattr(METHODS[name], "oracle")
    per_pair = 2 + len(args.peft) + sum(sum(map(generations, ckpts)) + (args.k if tested.report else 0) for ckpts in runs.values())
    setup.bar = tqdm(total=len(test) * per_pair, unit="pair", file=sys.stderr, dynamic_ncols=True)
    baselines = [score(setup, "no context", torch.zeros(0, llm.embeddings(model).shape[1]), role="baseline"),
                 score(setup, "manual prompt", llm.text_context(model, tok, cfg["prompt"]), role="baseline")]
    baselines += [score(setup, f"PEFT prompt ({os.path.basename(folder.rstrip('/'))})",
                        llm.context_from_peft(model, tok, folder), role="baseline") for folder in args.peft]
    per_seed = {seed: score_seed(setup, ckpts, seed=seed, baselines=baselines) for seed, ckpts in runs.items()}
    setup.bar.close()
    for seed, res in per_seed.items():
        tables.write_seed(setup, res, os.path.join(args.out, f"seed{seed}"))
    tables.write(setup, per_seed)


def generate(setup, ctx, *, temperature=None):
    """Raw generations and per-pair losses of one context (n, d), or one per pair (N, n, d), over
    the test pairs; greedy, or sampled at a temperature."""
    raw, losses, args = [], [], setup.args
    with torch.inference_mode():
        for b, c in data.batches_with(setup.examples, ctx, args.batch_size, setup.tok):
            raw += llm.generate(setup.model, setup.tok, c, b, max_new_tokens=args.max_new_tokens,
                                num_beams=args.num_beams, temperature=temperature, top_p=args.top_p)
            losses += llm.example_losses(setup.model, c, b).tolist()
            if setup.bar is not None:
                setup.bar.update(len(b["labels"]))
    return raw, losses


def make_row(setup, name, gens, *, role, loss, secs, diagnostics=None):
    """A Row: every metric of its code, its loss, its sampling time, the data set's own extra metrics
    (CoNaLa's official score, metrics.conala_bleu), and the share of its programs that pass where the
    data set runs them (the demo: against the reference's behaviour; HumanEval: its tests)."""
    refs = [p["code"] for p in setup.test]
    doing(setup, f"{setup.where}{name}: scoring")
    scores = {**metrics.evaluate(gens, refs), "pair_loss": loss, "sec_per_prompt": secs,
              **(diagnostics or dict.fromkeys(tables.DIAGNOSTICS))}
    scores |= {metric: getattr(metrics, metric)(gens, refs) for metric in setup.tested.metrics}
    if setup.passed:
        doing(setup, f"{setup.where}{name}: running its programs in the sandbox")
        scores[setup.tested.column] = sum(setup.passed(gens)) / len(refs)
    return Row(name=name, role=role, gens=gens, scores=scores)


def score(setup, name, ctx, *, role, secs=0.0):
    """(the Row of one fixed context, its raw generations)."""
    doing(setup, f"{setup.where}{name}: generating")
    raw, losses = generate(setup, ctx)
    return make_row(setup, name, [llm.extract_code(r) for r in raw], role=role, loss=sum(losses) / len(losses),
                    secs=secs), raw


def score_seed(setup, ckpts, *, seed, baselines):
    """One seed's SeedResult: the baselines (the same for every seed: scored once), then each trained
    method, its noise drawn from the seed; one-row methods first."""
    res = SeedResult(seed=seed, rows=[r for r, _ in baselines], raw={r.name: raw for r, raw in baselines})
    setup.where = f"seed {seed}: "
    device = llm.embeddings(setup.model).device
    for name in sorted(ckpts, key=lambda m: METHODS[m].stochastic):
        module = METHODS[name].from_checkpoint(ckpts[name]).to(device)
        options = {option: getattr(setup.args, option) for option in module.declared("sample")}
        started = time.perf_counter()
        with module.adapt(setup.model):  # the LLM as the method changed it (methods/lora.py); a prompt: as it is
            if module.stochastic:
                rows, raw, drawn, res.spread[name] = draw_rows(setup, module, options=options, seed=seed)
                res.rows += rows
                res.raw |= raw
                res.draws |= drawn
            else:
                t0 = time.perf_counter()
                given = {"features": setup.features["test"]} if module.conditional else {}  # one prompt per pair
                ctx = module.sample(1, generator=torch.Generator().manual_seed(seed), **options, **given)[0]
                label = module.label(**options)
                row, res.raw[label] = score(setup, label, ctx, role="control" if module.control else "tuned",
                                            secs=time.perf_counter() - t0)
                res.rows.append(row)
                first = ctx if ctx.dim() == 2 else ctx[0]  # (that of the first test pair)
                res.spread[name] = {"title": module.title,
                                    "nearest_tokens": llm.nearest_tokens(setup.model, setup.tok, first, k=3)}
        res.spread[name]["secs"] = time.perf_counter() - started  # its prompts, generations, picks and scores
        if hasattr(module, "oracle"):  # an upper bound fitted to each test pair's reference (methods/ddpt_pd.py)
            doing(setup, f"{setup.where}{module.title}: the oracle, fitted to the references")
            label, ctx = module.oracle(setup.model, setup.tok, setup.examples)
            row, res.raw[label] = score(setup, label, ctx, role="oracle")
            res.rows.append(row)
    if setup.tested.report:
        doing(setup, f"{setup.where}the data set's own report")
        res.extra = setup.tested.report(setup, res, generate)
    elif setup.passed:
        res.extra = {"exec_vs_exact_match": checks.disagreements(res.rows, setup.test, setup.passed)}
    return res


def draw_rows(setup, module, *, options, seed):
    """A stochastic method's k prompts: its rows (top-1, best-of-k by likelihood, each registered pick,
    the oracle best-of-k), the raw and extracted code of each draw, and how different the k prompts
    are (one constant prompt is what the LLM loss alone rewards). A method that reads the instruction
    draws k prompts for each test pair (and for each training pair a pick may learn from)."""
    args, k, refs = setup.args, setup.args.k, [p["code"] for p in setup.test]
    drawn = {}

    def contexts_for(split):  # one set of k prompts for every pair, unless the method reads the instruction
        key, given = (split, {"features": setup.features[split]}) if module.conditional else ("all", {})
        if key not in drawn:
            drawn[key] = module.sample(k, generator=torch.Generator().manual_seed(seed), **options, **given)
        return drawn[key]
    t0 = time.perf_counter()
    contexts = contexts_for("test")
    secs = (time.perf_counter() - t0) / k / (len(refs) if module.conditional else 1)
    runs = []
    for j, c in enumerate(contexts):
        doing(setup, f"{setup.where}{module.label(**options)} draw {j + 1} of {k}: generating")
        runs.append(generate(setup, c))
    gens = [[llm.extract_code(r) for r in raw] for raw, _ in runs]
    draws = Draws(model=setup.model, tok=setup.tok, contexts=contexts, gens=gens, examples=setup.examples,
                  instructions=[p["nl"] for p in setup.test], train_examples=setup.train_examples,
                  contexts_for=contexts_for, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    diagnostics = spread(module.directions(contexts)) | {"title": module.title, "picks": {}}
    first = contexts[0] if contexts.dim() == 3 else contexts[0, 0]  # draw 0 (of the first test pair)
    diagnostics["nearest_tokens"] = llm.nearest_tokens(setup.model, setup.tok, first, k=3)
    diagnostics["differ"] = sum(len({gens[j][i] for j in range(k)}) > 1 for i in range(len(refs))) / len(refs)
    name = module.label(**options)
    chosen = {f"{name} top-1": [0] * len(refs)}
    for pick_name, pick in PICKS.items():
        doing(setup, f"{setup.where}{module.label(**options)}: {pick_name.format(k=k)}")
        chosen[f"{name} {pick_name.format(k=k)}"], report = pick(draws)
        if report is not None:
            diagnostics["picks"][pick_name] = report
    oracle = [max(range(k), key=lambda j: (gens[j][i].strip() == refs[i].strip(),
                                           metrics.bleu4([gens[j][i]], [refs[i]], smooth=True))) for i in range(len(refs))]
    chosen[f"{name} oracle best-of-{k}"] = oracle
    rows = [make_row(setup, row_name, [gens[j][i] for i, j in enumerate(picked)], role="top-1" if n == 0 else "pick",
                     loss=None if picked is oracle else sum(runs[j][1][i] for i, j in enumerate(picked)) / len(refs),
                     secs=secs, diagnostics={c: diagnostics[c] for c in tables.DIAGNOSTICS} if n == 0 else None)
            for n, (row_name, picked) in enumerate(chosen.items())]  # (the oracle peeks at the references: no loss)
    raw = {f"{module.kind} draw {j}": r for j, (r, _) in enumerate(runs)}
    return rows, raw, {f"{module.kind} draw {j}": g for j, g in enumerate(gens)}, diagnostics


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, ValueError, OSError) as e:  # bad input: one line that says what to do
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:  # the results files are written atomically at the end, so none is half-written
        sys.exit("interrupted: no results file was changed")
