"""Sample prompts from a trained DDPT, generate code for the test split, score it.

    python sample.py                          # the run train.py made with no arguments
    python sample.py --out out/X --sampler ddim --steps 50
    python sample.py --out out/X --data humaneval --max-new-tokens 300   # pass@1, pass@k in the sandbox

One table on the same test pairs: no context, the manual prompt, soft prompt tuning (when
trained), DDPT top-1, DDPT best-of-k by the LLM's own likelihood, DDPT oracle best-of-k.
Every row's generations go through the same code extraction (`llm.extract_code`: the first
fenced block, else the text) before scoring. Written to results.md / results.json in the run
folder, with the prompts' nearest tokens, how different the k prompts are, and example
generations (generations.jsonl keeps the raw text too). With --data humaneval (written to
results-humaneval.md ...), every row also gets pass@1 (its programs run against the tests in
execution.py's sandbox), and DDPT's k prompts (one greedy program each) meet the manual
prompt's k temperature samples in pass@k.
"""
import argparse
import itertools
import json
import os
import sys
import time

import torch

import data
import execution
import llm
import metrics
from ddpt import DDPT, load_checkpoint
from train import count, lock_run, write_atomic


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="python sample.py [options]  (--help lists them)")
    a = p.add_argument
    a("--out", default="out/tiny-demo", help="run folder written by train.py")
    a("--k", type=count, default=5, help="DDPT prompts sampled (noise draws)")
    a("--sampler", default="ddpm", choices=["ddpm", "ddim"], help="DDPM over all T steps, or DDIM")
    a("--steps", type=count, default=50, help="DDIM steps")
    a("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic)")
    a("--max-new-tokens", type=count, default=128, help="generation length")
    a("--num-beams", type=count, default=1, help="1 = greedy, the paper's setting")
    a("--batch-size", type=count, default=32, help="test pairs per generation batch")
    a("--limit", type=count, default=None, help="score only the first N test pairs")
    a("--seed", type=int, default=0, help="seed of the noise draws (and of the temperature samples)")
    a("--data", default=None, choices=["humaneval"], help="test on HumanEval instead of the run's own test split")
    a("--temperature", type=float, default=0.8, help="HumanEval: the manual prompt's k samples, with --top-p")
    a("--top-p", type=float, default=0.95, help="HumanEval: nucleus of the manual prompt's k samples")
    a("--timeout", type=float, default=10.0, help="HumanEval: seconds per program in the sandbox")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    return p.parse_args(argv)


def run_prompt(model, tok, ctx, examples, args, raw_by=None, name=None, temperature=None):
    """Extracted code and per-pair held-out losses of one context over the test pairs (the raw
    generations go to raw_by[name]); greedy, or sampled at a temperature."""
    raw, losses = [], []
    with torch.inference_mode():
        for b in data.batches(examples, args.batch_size, tok):
            raw += llm.generate(model, tok, ctx, b, args.max_new_tokens, args.num_beams,
                                temperature=temperature, top_p=args.top_p)
            losses += llm.example_losses(model, ctx, b).tolist()
    if raw_by is not None:
        raw_by[name] = raw
    return [llm.extract_code(r) for r in raw], losses


def own_likelihood(model, tok, ctx, examples, gens, args):
    """The LLM's mean token loss of its *own* (extracted) code for each pair: lower = more confident."""
    own, _ = data.encode([{"nl": "", "code": g} for g in gens], tok, max_code=args.max_new_tokens + 1)
    mine = [(nl, code) for (nl, _), (_, code) in zip(examples, own)]
    out = []
    with torch.inference_mode():
        for b in data.batches(mine, args.batch_size, tok):
            out += llm.example_losses(model, ctx, b).tolist()
    return out


def row(name, gens, refs, loss, secs):
    return {"method": name, **metrics.evaluate(gens, refs), "loss": loss, "sec_per_prompt": secs}


def main(argv=None):
    args = parse(argv)
    cfg_path = os.path.join(args.out, "config.json")
    if not os.path.exists(cfg_path):
        sys.exit(f"no run in {args.out}: train one first with python train.py --out {args.out}")
    with lock_run(args.out):
        run(args, json.load(open(cfg_path)))


def trained(path, cfg):
    """A method's checkpoint, or None when train.py has not saved one (a partly trained run is
    sampled with what it has, and says so)."""
    if not os.path.exists(path):
        print(f"note: no {os.path.basename(path)} in {os.path.dirname(path)}: its rows are left out")
        return None
    ckpt = load_checkpoint(path)
    if ckpt["step"] < cfg["steps"]:
        print(f"note: {path} is from step {ckpt['step']} of {cfg['steps']}: train.py --resume finishes it")
    return ckpt


def run(args, cfg):
    ckpts = {m: trained(os.path.join(args.out, f"{m}.pt"), cfg) for m in ("prompt-tuning", "ddpt")}
    if not any(ckpts.values()):
        sys.exit(f"no checkpoint in {args.out} yet: train.py writes one every --eval-every steps")
    humaneval = args.data == "humaneval"
    test = (data.humaneval() if humaneval else data.load(cfg["data"], cfg["data_dir"], cfg["seed"])["test"])[:args.limit]
    model, tok = llm.load(cfg["model"], cfg["dtype"], args.device, cfg["data"], cfg["device_map"], cfg["data_dir"])
    d = llm.embeddings(model).shape[1]
    for m, ckpt in ckpts.items():
        if ckpt and ckpt["meta"]["d"] != d:
            sys.exit(f"{args.out}/{m}.pt was trained for width d={ckpt['meta']['d']}, this model has d={d}")
    examples, cut = data.encode(test, tok, max_nl=1024 if humaneval else 128, max_code=cfg["max_code"])
    refs = [p["code"] for p in test]
    rows, gens_by, raw_by = [], {}, {}

    def score(name, ctx, secs=0.0):
        gens, losses = run_prompt(model, tok, ctx, examples, args, raw_by, name)
        rows.append(row(name, gens, refs, sum(losses) / len(losses), secs))
        gens_by[name] = gens
        return gens, losses

    score("no context", torch.zeros(0, d))
    manual = llm.text_context(model, tok, cfg["prompt"])
    score("manual prompt", manual)
    if ckpts["prompt-tuning"]:
        score("soft prompt tuning", ckpts["prompt-tuning"]["weights"]["context"])
    spread, extra = None, {}
    if ckpts["ddpt"]:
        spread = ddpt_rows(model, tok, ckpts["ddpt"], cfg, examples, refs, args, rows, gens_by, raw_by)
    check = execution.humaneval_program if humaneval else execution.demo_program if cfg["data"] == "demo" else None
    if check:  # run every row's programs against their tests (HumanEval) or against the reference (demo)
        passed = tester(check, test, args.timeout)
        outcomes = {r["method"]: passed(gens_by[r["method"]]) for r in rows}
        for r in rows:
            r["pass@1" if humaneval else "exec"] = sum(outcomes[r["method"]]) / len(test)
    if humaneval:
        torch.manual_seed(args.seed)
        samples = [run_prompt(model, tok, manual, examples, args, raw_by, f"manual sample {j}",
                              temperature=args.temperature)[0] for j in range(args.k)]
        extra = {"pass_at_k": pass_at_k(args, gens_by, samples, passed)}
    elif check:
        extra = {"exec_vs_exact_match": disagreements(test, rows, gens_by, outcomes)}
    write(args, cfg, rows, spread, extra, gens_by, raw_by, test, cut)


def tester(check, test, timeout):
    """passed(gens): whether each pair's generated code passes check(pair, code) in the sandbox
    (execution.py); each distinct program runs once however many rows share it."""
    status = {}

    def passed(gens):
        programs = [check(p, g) for p, g in zip(test, gens)]
        new = [q for q in dict.fromkeys(programs) if q not in status]
        status.update(zip(new, execution.run(new, timeout=timeout)))
        return [status[q]["status"] == "passed" for q in programs]
    return passed


def disagreements(test, rows, gens_by, outcomes):
    """Where exec and exact match disagree, over every row's pairs, with two examples each way."""
    ways = {"runs like the reference, other text": [], "same text, runs otherwise": []}
    for r in rows:
        for p, g, ok in zip(test, gens_by[r["method"]], outcomes[r["method"]]):
            if ok != (g.strip() == p["code"].strip()):
                ways[list(ways)[not ok]].append({"method": r["method"], "nl": p["nl"], "reference": p["code"],
                                                 "generated": g})
    return {way: {"count": len(found), "examples": list({e["generated"]: e for e in found}.values())[:2]}
            for way, found in ways.items()}


def pass_at_k(args, gens_by, samples, passed):
    """pass@1 and pass@k of DDPT's k prompts (one greedy program each) against the manual
    prompt's k temperature samples: k programs against k programs."""
    k, groups = args.k, {f"manual prompt, {args.k} samples (T {args.temperature}, top-p {args.top_p})": samples}
    if "DDPT draw 0" in gens_by:
        groups[f"DDPT, {k} prompts (greedy)"] = [gens_by[f"DDPT draw {j}"] for j in range(k)]
    out = []
    for name, draws in groups.items():
        c = [sum(col) for col in zip(*(passed(g) for g in draws))]  # programs that passed, per problem
        out.append({"method": name, "pass@1": sum(metrics.pass_at_k(k, n, 1) for n in c) / len(c),
                    f"pass@{k}": sum(metrics.pass_at_k(k, n, k) for n in c) / len(c)})
    return out


def ddpt_rows(model, tok, ckpt, cfg, examples, refs, args, rows, gens_by, raw_by):
    """DDPT's k prompts: top-1, best-of-k by the LLM's likelihood and the oracle best-of-k rows, and
    how different the k prompts are (one constant prompt is what the LLM loss alone rewards)."""
    C, s = llm.context_from_text(model, tok, cfg["prompt"], cfg["n"])
    ddpt = DDPT(C, s, cfg["T"], cfg["schedule"], cfg["r"], cfg["blocks"], cfg["x0"]).to(llm.embeddings(model).device)
    ddpt.load_checkpoint(ckpt)
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    steps = args.steps if args.sampler == "ddim" else None
    contexts, x0 = ddpt.sample(args.k, steps=steps, eta=args.eta if steps else None, generator=g)
    secs = (time.perf_counter() - t0) / args.k
    runs = [run_prompt(model, tok, c, examples, args, raw_by, f"DDPT draw {j}") for j, c in enumerate(contexts)]
    own = [own_likelihood(model, tok, c, examples, gens, args) for c, (gens, _) in zip(contexts, runs)]
    name = f"DDPT ({args.sampler.upper()}-{steps or cfg['T']})"
    pick = [min(range(args.k), key=lambda j: own[j][i]) for i in range(len(refs))]
    oracle = [max(range(args.k), key=lambda j: (runs[j][0][i].strip() == refs[i].strip(),
                                                 metrics.bleu4([runs[j][0][i]], [refs[i]], smooth=True)))
              for i in range(len(refs))]
    for method, chosen in ((f"{name} top-1", [0] * len(refs)), (f"{name} best-of-{args.k}, LLM likelihood", pick),
                           (f"{name} oracle best-of-{args.k}", oracle)):  # the oracle peeks at refs: no loss
        gens_by[method] = [runs[j][0][i] for i, j in enumerate(chosen)]
        loss = None if chosen is oracle else sum(runs[j][1][i] for i, j in enumerate(chosen)) / len(refs)
        rows.append(row(method, gens_by[method], refs, loss, secs))
    gens_by |= {f"DDPT draw {j}": gens for j, (gens, _) in enumerate(runs)}
    unit = torch.nn.functional.normalize(x0.float(), dim=-1)
    pairs = list(itertools.combinations(range(args.k), 2))
    return {"mean_pairwise_cosine": sum((unit[a] @ unit[b]).item() for a, b in pairs) / len(pairs) if pairs else 1.0,
            "direction_norm": x0.norm(dim=-1).mean().item(),
            "share_pairs_generations_differ":
                sum(len({runs[j][0][i] for j in range(args.k)}) > 1 for i in range(len(refs))) / len(refs),
            "nearest_tokens": llm.nearest_tokens(model, tok, contexts[0], k=3)}


def write(args, cfg, rows, spread, extra, gens_by, raw_by, test, cut):
    fmt = lambda v: "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
    cols = ["bleu4", "codebleu", "meteor", "chrf", "rouge_l", "exact_match", "loss", "sec_per_prompt"]
    cols += [c for c in ("exec", "pass@1") if c in rows[0]]
    pass_k = extra.get("pass_at_k")
    lines = [f"Test pairs: {len(test)} ({args.data or cfg['data']}, model {cfg['model']}; {cut} references cut to "
             f"{cfg['max_code']} tokens for the loss). Manual prompt: {cfg['prompt']!r}.", "",
             "| method | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
    lines += [f"| {r['method']} | " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    if pass_k:
        lines += ["", f"k = {args.k} programs per problem, run against its tests ({args.timeout:g} s each):", "",
                  "| programs | " + " | ".join(list(pass_k[0])[1:]) + " |", "| --- | --- | --- |"]
        lines += [f"| {r['method']} | " + " | ".join(fmt(v) for v in list(r.values())[1:]) + " |" for r in pass_k]
    for way, found in extra.get("exec_vs_exact_match", {}).items():
        lines += ["", f"exec against exact match, over every row's pairs: {way}: {found['count']}"]
        lines += [f"  - {e['method']}: {e['nl']!r}: reference `{e['reference']}`, generated `{e['generated']}`"
                  for e in found["examples"]]
    if spread:
        lines += ["", f"DDPT's {args.k} prompts: mean pairwise cosine of their directions "
                  f"{spread['mean_pairwise_cosine']:.4f}, direction norm {spread['direction_norm']:.3f}; test pairs "
                  f"whose {args.k} generations are not all the same: {spread['share_pairs_generations_differ']:.1%}.",
                  "", "Nearest vocabulary tokens (cosine) of DDPT's first prompt, per context position:", ""]
        lines += [f"{i}: " + ", ".join(repr(t) for t in toks) for i, toks in enumerate(spread["nearest_tokens"])]
    tuned = next((r["method"] for r in rows if r["method"].endswith("top-1")), rows[-1]["method"])
    lines += ["", f"Examples (instruction / reference / manual prompt / {tuned}):", ""]
    for i in range(min(3, len(test))):
        lines += [f"- {test[i]['nl']!r}", f"  - reference: `{test[i]['code']}`",
                  f"  - manual: `{gens_by['manual prompt'][i]}`", f"  - {tuned}: `{gens_by[tuned][i]}`"]
    text = "\n".join(lines) + "\n"
    print(text)
    generations = [json.dumps({**{k: v for k, v in p.items() if k != "combo"}, **{m: g[i] for m, g in gens_by.items()},
                               "raw": {m: g[i] for m, g in raw_by.items()}}) + "\n" for i, p in enumerate(test)]
    results = json.dumps({"rows": rows, **(spread or {}), **extra, "sampler": args.sampler, "k": args.k}, indent=2)
    tag = f"-{args.data}" if args.data else ""  # another test set never overwrites the run's own results
    for name, content in ((f"results{tag}.md", text), (f"results{tag}.json", results),
                          (f"generations{tag}.jsonl", "".join(generations))):
        write_atomic(os.path.join(args.out, name), content)


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, ValueError, OSError) as e:  # bad input: one line that says what to do
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:  # the results files are written atomically at the end, so none is half-written
        sys.exit("interrupted: no results file was changed")
