"""Benchmarks that print tables (speed targets are checked here, not in timed tests).

    python -m tools.bench sampling   # DDPM-2000 and DDIM-50 seconds per prompt at D = 10 240, r = 512
    python -m tools.bench metrics    # each metric against its reference library on ~10,000 CoNaLa pairs
    python -m tools.bench train      # the denoiser's share of a DDPT training step (tiny LLM)
    python -m tools.bench llm        # SmolLM2-135M-Instruct: load, training step, generation (needs the wheel)
    python -m tools.bench codebleu   # our CodeBLEU against the codebleu package: 10,000 broken CoNaLa and CodeAlpaca pairs
    python -m tools.bench pretrain   # the tiny pre-training: bit-identical across OMP_NUM_THREADS, and what that costs
    python -m tools.bench finetune   # train.py on the CPU: the same checkpoint with 1, 2 and 4 threads (--reproducible), and its cost
    python -m tools.bench isa        # the tiny pre-training under other CPU code paths (another processor's): other weights
    python -m tools.bench lr         # the learning-rate sweep behind each method's default rate (demo, 3 seeds)
    python -m tools.bench ddp        # train.py's steps per second: one process, and torchrun with 1 and 2 processes
    python -m tools.bench memory     # each GPU's memory for CodeT5+ 2B / 6B / 16B in bf16 (bench_ddp.py has both)
    python -m tools.bench peft       # our soft prompt, LoRA and DDPT against PEFT's prompt tuning and LoRA (bench_peft.py)
"""
import argparse
import json
import os
import random
import re
import time

import torch

from tools import bench_codebleu, bench_ddp, bench_peft, bench_threads

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")


def shared_data(path):
    """A data set under ../shared/data, which the metric benchmarks read; without it, one clear line."""
    full = os.path.join(SHARED, path)
    if not os.path.exists(full):
        raise SystemExit(f"this benchmark reads {full}, which is absent: put the public data copies "
                         "(../shared/data, see its README) beside the repository")
    return full


def timed(fn, repeat=1):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_sampling(n=10, d=1024, r=512):
    from ddpt import DDPT
    torch.manual_seed(0)
    model = DDPT(torch.randn(n, d), 1.0, T=2000, r=r)
    torch.nn.init.normal_(model.denoiser.out.weight, std=0.01)  # a trained-like, non-zero output layer
    print(f"sampling, D = {n * d}, r = {r}, {torch.get_num_threads()} threads; seconds per prompt")
    print("| sampler | batch | straightforward loop | this code (r-dim chain) |")
    print("| --- | --- | --- | --- |")
    for name, steps in (("DDPM-2000", None), ("DDIM-50", 50)):
        for B in (1, 16):
            slow = timed(lambda: model.sample(B, steps=steps, fast=False)) / B
            fast = timed(lambda: model.sample(B, steps=steps), repeat=3) / B
            print(f"| {name} | {B} | {slow:.4f} | {fast:.4f} |")


def conala_pairs(n=10_000, seed=0):
    """CoNaLa snippets against perturbed copies (drop, swap, rename), n pairs."""
    root = shared_data("conala")
    snippets = [p["snippet"] for f in ("conala-train.json", "conala-test.json")
                for p in json.load(open(os.path.join(root, f)))]
    rng, hyps, refs = random.Random(seed), [], []
    while len(hyps) < n:
        s = rng.choice(snippets)
        parts = re.findall(r"\w+|[^\w\s]|\s+", s)
        idx = [j for j, p in enumerate(parts) if not p.isspace()]
        if len(idx) > 1:
            j = rng.randrange(len(idx) - 1)
            parts[idx[j]], parts[idx[j + 1]] = parts[idx[j + 1]], parts[idx[j]]
        hyps.append("".join(parts))
        refs.append(s)
    return hyps, refs


def bench_metrics():
    import sacrebleu
    from codebleu import calc_codebleu
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer

    from evaluation import code_ast
    import metrics
    hyps, refs = conala_pairs()
    ht, rt = [metrics.tokenize_code(h) for h in hyps], [metrics.tokenize_code(r) for r in refs]
    hj, rj = [" ".join(t) for t in ht], [" ".join(t) for t in rt]

    class Tok:
        tokenize = staticmethod(metrics.tokenize_code)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Tok())
    wn = metrics._wordnet()

    def cold(fn, **kw):  # CodeBLEU's structures are cached by text: every timed run starts without them
        code_ast.structure.cache_clear()
        return fn(hyps, refs, **kw)
    rows = [
        ("BLEU-4 (tokens given)", lambda: metrics._bleu(ht, rt),
         lambda: sacrebleu.corpus_bleu(hj, [rj], tokenize="none", smooth_method="none")),
        ("ChrF", lambda: metrics.chrf(hyps, refs), lambda: sacrebleu.corpus_chrf(hyps, [refs])),
        ("Rouge-L (from strings)", lambda: metrics.rouge_l(hyps, refs),
         lambda: [scorer.score(r, h) for h, r in zip(hyps, refs)]),
        ("CodeBLEU", lambda: cold(metrics.codebleu), lambda: calc_codebleu(refs, hyps, "python")),
        ("METEOR (both nltk)", lambda: metrics._meteor(ht, rt),
         lambda: [meteor_score([r], h, wordnet=wn) for h, r in zip(ht, rt)]),
    ]
    print(f"metrics on {len(hyps)} CoNaLa pairs, seconds (best of 3)")
    print("| metric | ours | reference | ratio |")
    print("| --- | --- | --- | --- |")
    for name, ours, ref in rows:
        a, b = timed(ours, 3), timed(ref, 1 if "METEOR" in name or "CodeBLEU" in name else 3)
        print(f"| {name} | {a:.3f} | {b:.3f} | {a / b:.2f} |")
    t = timed(lambda: cold(metrics.evaluate, with_meteor=False), 3)
    print(f"| evaluate() without METEOR | {t:.3f} | | |")


def bench_train(steps=20):
    """Training steps with the tiny LLM, batch 16: DDPT (its denoiser half timed apart) and DDPT-MCL
    (K = 5 no-grad LLM forwards to pick each pair's draw, a 10-step chain, one forward and backward);
    and DDPT's denoiser half alone at the paper's D = 10 240."""
    import data
    import llm
    import train
    from ddpt import DDPT
    from methods.mcl import DDPTMCL
    model, tok = llm.load("tiny")
    C, s = llm.context_from_text(model, tok, "Write code:", 10)
    batch = data.collate(data.encode(data.load("demo")["train"][:16], tok)[0], tok)
    score = train.scorer(model, batch, slice(None), 16)
    split = {}
    for module in (DDPT(C, s), DDPTMCL(C, s)):
        opt, den, llm_t, t_start = torch.optim.AdamW(module.parameters(), lr=1e-4), 0.0, 0.0, time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            ctx = module.training_contexts(16, None, score)
            t1 = time.perf_counter()
            llm.loss(model, ctx, batch).backward()
            t2 = time.perf_counter()
            opt.step()
            opt.zero_grad()
            den, llm_t = den + (t1 - t0) + (time.perf_counter() - t2), llm_t + (t2 - t1)
        split[module.title] = (den / steps * 1e3, llm_t / steps * 1e3, (time.perf_counter() - t_start) / steps * 1e3)
    big = DDPT(torch.randn(10, 1024), 1.0)  # the paper's D = 10 240: the denoiser half alone
    big_opt = torch.optim.AdamW(big.denoiser.parameters(), lr=1e-4)
    def big_step():
        big.training_contexts(16).pow(2).mean().backward()
        big_opt.step()
        big_opt.zero_grad()
    big_ms = timed(big_step, 10) * 1e3
    print("| training step, batch 16, r = 512 | D | contexts (+ AdamW), ms | LLM forward + backward (through to the denoiser), ms | whole step, ms |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| DDPT, the denoiser half alone, at the paper's size | {big.D} | {big_ms:.1f} | — | — |")
    print(f"| DDPT, tiny LLM | {C.numel()} | " + " | ".join(f"{v:.1f}" for v in split["DDPT"]) + " |")
    print(f"| DDPT-MCL (K = 5 scoring forwards and a 10-step chain in the contexts), tiny LLM | {C.numel()} | "
          + " | ".join(f"{v:.1f}" for v in split["DDPT-MCL"]) + " |")


def codebleu_on_shared():
    """tools/bench_codebleu.py on the public CoNaLa and CodeAlpaca copies."""
    shared_data("conala"), shared_data("codealpaca")  # an absent one ends here, in one line
    bench_codebleu.bench_codebleu(SHARED)


def bench_llm(data_dir="conala"):
    """SmolLM2-135M-Instruct on CoNaLa pairs: load cold (GGUF -> safetensors) and cached; a DDPT
    training step with the LM head on every position (before) and on labelled positions only (now);
    bf16 on this CPU; seconds per test pair of sample.py's generation + loss pass."""
    import tempfile
    from types import SimpleNamespace
    import data
    import llm
    import sample
    from ddpt import DDPT
    old = data.CACHE
    with tempfile.TemporaryDirectory() as cache:
        data.CACHE = cache
        cold = timed(lambda: llm.load("smollm2-135m"))
        cached = timed(lambda: llm.load("smollm2-135m"), 3)
        data.CACHE = old
    print(f"| SmolLM2-135M-Instruct, {torch.get_num_threads()} threads: load | seconds |")
    print("| --- | --- |")
    print(f"| cold (the GGUF file converted to safetensors) | {cold:.1f} |")
    print(f"| cached | {cached:.2f} |")
    splits = data.load("conala", shared_data(data_dir))

    def full_head_loss(model, ctx, batch):  # what llm.token_losses did before: logits at every position
        seq, att, labels = llm._causal(model, ctx, batch)
        logits = model(inputs_embeds=seq, attention_mask=att).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels[:, 1:], ignore_index=-100)

    print()
    print("| training step (DDPT, CoNaLa train pairs) | dtype | batch | seconds |")
    print("| --- | --- | --- | --- |")
    for dtype in ("fp32", "bf16"):
        model, tok = llm.load("smollm2-135m", dtype=dtype)
        C, s = llm.context_from_text(model, tok, llm.CHAT_PROMPT, 10)
        ddpt = DDPT(C, s)
        opt = torch.optim.AdamW(ddpt.denoiser.parameters(), lr=3e-5)
        for B in (8, 16) if dtype == "fp32" else (8,):
            batch = data.collate(data.encode(splits["train"][:B], tok)[0], tok)
            for name, fn in (("LM head at every position", full_head_loss), ("LM head at labels only", llm.loss)):
                if dtype == "bf16" and fn is full_head_loss:
                    continue
                def step():
                    fn(model, ddpt.training_contexts(B), batch).backward()
                    opt.step()
                    opt.zero_grad()
                print(f"| {name} | {dtype} | {B} | {timed(step, 3):.2f} |")
    model, tok = llm.load("smollm2-135m")
    examples, _ = data.encode(splits["test"][:32], tok)
    ctx = llm.text_context(model, tok, llm.CHAT_PROMPT)
    print()
    print("| sample.py: generate (greedy, <= 128 new tokens) + loss, 32 CoNaLa test pairs | batch | seconds per pair |")
    print("| --- | --- | --- |")
    for B in (8, 16, 32):
        args = SimpleNamespace(batch_size=B, max_new_tokens=128, num_beams=1, top_p=1.0)
        print(f"| manual prompt | {B} | {timed(lambda: sample.generate(SimpleNamespace(args=args, model=model, tok=tok, examples=examples), ctx)) / 32:.2f} |")


def bench_lr(steps=300, seeds=(0, 1, 2)):
    """The sweep behind each method's default rate (its class's `lr`): held-out token loss on the demo's
    validation split after `steps` steps of batch 16, mean ± std over training seeds (tools/sweep.py's run)."""
    import statistics
    import tempfile
    from tools import sweep
    rates = {"ddpt": (1e-5, 3e-5, 1e-4, 3e-4), "prompt-tuning": (3e-3, 3e-2, 1e-1)}
    print(f"| method | lr | held-out token loss after {steps} steps, mean ± std over seeds {' '.join(map(str, seeds))} |")
    print("| --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for method, lrs in rates.items():
            for lr in lrs:
                losses, manual, _ = sweep.run(method, lr, seeds, ["--steps", str(steps), "--eval-every", str(steps)], tmp)
                print(f"| {method} | {lr:g} | {statistics.mean(losses):.4f} ± {statistics.stdev(losses):.4f} |")
        print(f"| manual prompt | — | {manual:.4f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="*", default=["sampling", "metrics", "train"], help=f"any of {', '.join(BENCHMARKS)}")
    p.add_argument("--model", default="tiny", help="ddp: the LLM (tiny, t5-220m-random: CodeT5+ 220M's shape, "
                   "or train.py's --model)")
    p.add_argument("--device", default="cpu", help="ddp: cpu or cuda")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="ddp: torchrun's process counts")
    args = p.parse_args(argv)
    unknown = [what for what in args.what if what not in BENCHMARKS]
    if unknown:
        p.error(f"no benchmark {unknown[0]!r}: use any of {', '.join(BENCHMARKS)}")
    for what in args.what:
        BENCHMARKS[what](args)


BENCHMARKS = {"sampling": lambda a: bench_sampling(), "metrics": lambda a: bench_metrics(), "train": lambda a: bench_train(),
              "llm": lambda a: bench_llm(), "codebleu": lambda a: codebleu_on_shared(),
              "pretrain": lambda a: bench_threads.bench_pretrain(), "finetune": lambda a: bench_threads.bench_finetune(),
              "isa": lambda a: bench_threads.bench_isa(), "lr": lambda a: bench_lr(),
              "memory": lambda a: bench_ddp.bench_memory(), "ddp": lambda a: bench_ddp.bench_ddp(a.model, a.device, a.procs),
              "peft": lambda a: bench_peft.bench_peft()}

if __name__ == "__main__":
    main()
