"""Sample prompts from a trained DDPT, generate code for the test split, score it.

    python sample.py                          # the run train.py made with no arguments
    python sample.py --out out/X --sampler ddim --steps 50

One table on the same test pairs: no context, the manual prompt, soft prompt tuning (when
trained), DDPT top-1, DDPT best-of-k by the LLM's own likelihood, DDPT oracle best-of-k.
Every row's generations go through the same code extraction (`llm.extract_code`: the first
fenced block, else the text) before scoring. Written to results.md / results.json in the run
folder, with the prompts' nearest tokens, how different the k prompts are, and example
generations (generations.jsonl keeps the raw text too).
"""
import argparse
import itertools
import json
import os
import sys
import time

import torch

import data
import llm
import metrics
from ddpt import DDPT, load_checkpoint


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--out", default="out/tiny-demo", help="run folder written by train.py")
    a("--k", type=int, default=5, help="DDPT prompts sampled (noise draws)")
    a("--sampler", default="ddpm", choices=["ddpm", "ddim"], help="DDPM over all T steps, or DDIM")
    a("--steps", type=int, default=50, help="DDIM steps")
    a("--eta", type=float, default=0.0, help="DDIM eta (0: deterministic)")
    a("--max-new-tokens", type=int, default=128, help="generation length")
    a("--num-beams", type=int, default=1, help="1 = greedy, the paper's setting")
    a("--batch-size", type=int, default=32, help="test pairs per generation batch")
    a("--limit", type=int, default=None, help="score only the first N test pairs")
    a("--seed", type=int, default=0, help="seed of the noise draws")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device")
    return p.parse_args(argv)


def run_prompt(model, tok, ctx, examples, args, raw_by=None, name=None):
    """Extracted code and per-pair held-out losses of one context over the test pairs (the raw
    generations go to raw_by[name])."""
    raw, losses = [], []
    with torch.inference_mode():
        for b in data.batches(examples, args.batch_size, tok):
            raw += llm.generate(model, tok, ctx, b, args.max_new_tokens, args.num_beams)
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
    cfg = json.load(open(cfg_path))
    model, tok = llm.load(cfg["model"], cfg["dtype"], args.device, cfg["data"], cfg["device_map"], cfg["data_dir"])
    test = data.load(cfg["data"], cfg["data_dir"], cfg["seed"])["test"][:args.limit]
    if not test:
        sys.exit("the test split is empty: check --data-dir, or --limit")
    examples, cut = data.encode(test, tok, max_code=cfg["max_code"])
    refs = [p["code"] for p in test]
    d = llm.embeddings(model).shape[1]
    rows, gens_by, raw_by = [], {}, {}

    def score(name, ctx, secs=0.0):
        gens, losses = run_prompt(model, tok, ctx, examples, args, raw_by, name)
        rows.append(row(name, gens, refs, sum(losses) / len(losses), secs))
        gens_by[name] = gens
        return gens, losses

    score("no context", torch.zeros(0, d))
    score("manual prompt", llm.text_context(model, tok, cfg["prompt"]))
    pt_path = os.path.join(args.out, "prompt-tuning.pt")
    if os.path.exists(pt_path):
        ckpt = load_checkpoint(pt_path)
        if ckpt["meta"]["d"] != d:
            sys.exit(f"{pt_path} was trained for width d={ckpt['meta']['d']}, this model has d={d}")
        score("soft prompt tuning", ckpt["weights"]["context"])

    C, s = llm.context_from_text(model, tok, cfg["prompt"], cfg["n"])
    ddpt = DDPT(C, s, cfg["T"], cfg["schedule"], cfg["r"], cfg["blocks"], cfg["x0"]).to(llm.embeddings(model).device)
    ddpt.load_checkpoint(load_checkpoint(os.path.join(args.out, "ddpt.pt")))
    g = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    steps = args.steps if args.sampler == "ddim" else None
    contexts, x0 = ddpt.sample(args.k, steps=steps, eta=args.eta if steps else None, generator=g)
    secs = (time.perf_counter() - t0) / args.k
    runs = [run_prompt(model, tok, c, examples, args, raw_by, f"DDPT draw {j}") for j, c in enumerate(contexts)]
    own = [own_likelihood(model, tok, c, examples, gens, args) for c, (gens, _) in zip(contexts, runs)]
    name = f"DDPT ({args.sampler.upper()}-{steps or cfg['T']})"
    rows.append(row(f"{name} top-1", runs[0][0], refs, sum(runs[0][1]) / len(refs), secs))
    pick = [min(range(args.k), key=lambda j: own[j][i]) for i in range(len(refs))]
    rows.append(row(f"{name} best-of-{args.k}, LLM likelihood", [runs[j][0][i] for i, j in enumerate(pick)], refs,
                    sum(runs[j][1][i] for i, j in enumerate(pick)) / len(refs), secs))
    oracle = [max(range(args.k), key=lambda j: (runs[j][0][i].strip() == refs[i].strip(),
                                                 metrics.bleu4([runs[j][0][i]], [refs[i]], smooth=True)))
              for i in range(len(refs))]
    rows.append(row(f"{name} oracle best-of-{args.k}", [runs[j][0][i] for i, j in enumerate(oracle)], refs, None, secs))
    gens_by["DDPT top-1"] = runs[0][0]

    # how different are the k prompts? (one constant prompt is what the LLM loss alone rewards)
    unit = torch.nn.functional.normalize(x0.float(), dim=-1)
    pairs = list(itertools.combinations(range(args.k), 2))
    cos = sum((unit[a] @ unit[b]).item() for a, b in pairs) / len(pairs) if pairs else 1.0
    differ = sum(len({runs[j][0][i] for j in range(args.k)}) > 1 for i in range(len(refs))) / len(refs)
    near = [llm.nearest_tokens(model, tok, c, k=3) for c in contexts]
    write(args, cfg, rows, cos, differ, near, gens_by, raw_by, test, cut, x0)


def write(args, cfg, rows, cos, differ, near, gens_by, raw_by, test, cut, x0):
    fmt = lambda v: "—" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)
    cols = ["bleu4", "codebleu", "meteor", "chrf", "rouge_l", "exact_match", "loss", "sec_per_prompt"]
    lines = [f"Test pairs: {len(test)} ({cfg['data']}, model {cfg['model']}; {cut} references cut to "
             f"{cfg['max_code']} tokens for the loss). Manual prompt: {cfg['prompt']!r}.", "",
             "| method | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
    lines += [f"| {r['method']} | " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    lines += ["", f"DDPT's {args.k} prompts: mean pairwise cosine of their directions {cos:.4f}, "
              f"direction norm {x0.norm(dim=-1).mean().item():.3f}; test pairs whose {args.k} generations "
              f"are not all the same: {differ:.1%}.", "",
              "Nearest vocabulary tokens (cosine) of DDPT's first prompt, per context position:", ""]
    lines += [f"{i}: " + ", ".join(repr(t) for t in toks) for i, toks in enumerate(near[0])]
    lines += ["", "Examples (instruction / reference / manual prompt / DDPT top-1):", ""]
    for i in range(min(3, len(test))):
        lines += [f"- {test[i]['nl']!r}", f"  - reference: `{test[i]['code']}`",
                  f"  - manual: `{gens_by['manual prompt'][i]}`", f"  - DDPT: `{gens_by['DDPT top-1'][i]}`"]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"rows": rows, "mean_pairwise_cosine": cos, "share_pairs_generations_differ": differ,
                   "nearest_tokens": near, "sampler": args.sampler, "k": args.k}, f, indent=2)
    with open(os.path.join(args.out, "generations.jsonl"), "w") as f:
        for i, p in enumerate(test):
            f.write(json.dumps({**{k: v for k, v in p.items() if k != "combo"},
                                **{m: g[i] for m, g in gens_by.items()},
                                "raw": {m: g[i] for m, g in raw_by.items()}}) + "\n")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, ValueError, OSError) as e:  # bad input: one line that says what to do
        sys.exit(f"error: {e}")
