"""Benchmarks that print tables (speed targets are checked here, not in timed tests).

    python bench.py sampling   # DDPM-2000 and DDIM-50 seconds per prompt at D = 10 240, r = 512
    python bench.py metrics    # each metric against its reference library on ~10,000 CoNaLa pairs
    python bench.py train      # the denoiser's share of a DDPT training step (tiny LLM)
"""
import argparse
import json
import os
import random
import re
import time

import torch


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
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "data", "conala")
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

    import metrics
    hyps, refs = conala_pairs()
    ht, rt = [metrics.tokenize_code(h) for h in hyps], [metrics.tokenize_code(r) for r in refs]
    hj, rj = [" ".join(t) for t in ht], [" ".join(t) for t in rt]

    class Tok:
        tokenize = staticmethod(metrics.tokenize_code)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Tok())
    wn = metrics._wordnet()
    rows = [
        ("BLEU-4 (tokens given)", lambda: metrics._bleu(ht, rt),
         lambda: sacrebleu.corpus_bleu(hj, [rj], tokenize="none", smooth_method="none")),
        ("ChrF", lambda: metrics.chrf(hyps, refs), lambda: sacrebleu.corpus_chrf(hyps, [refs])),
        ("Rouge-L (from strings)", lambda: metrics.rouge_l(hyps, refs),
         lambda: [scorer.score(r, h) for h, r in zip(hyps, refs)]),
        ("CodeBLEU", lambda: metrics.codebleu(hyps, refs), lambda: calc_codebleu(refs, hyps, "python")),
        ("METEOR (both nltk)", lambda: metrics._meteor(ht, rt),
         lambda: [meteor_score([r], h, wordnet=wn) for h, r in zip(ht, rt)]),
    ]
    print(f"metrics on {len(hyps)} CoNaLa pairs, seconds (best of 3)")
    print("| metric | ours | reference | ratio |")
    print("| --- | --- | --- | --- |")
    for name, ours, ref in rows:
        a, b = timed(ours, 3), timed(ref, 1 if "METEOR" in name or "CodeBLEU" in name else 3)
        print(f"| {name} | {a:.3f} | {b:.3f} | {a / b:.2f} |")
    t = timed(lambda: metrics.evaluate(hyps, refs, with_meteor=False), 3)
    print(f"| evaluate() without METEOR | {t:.3f} | | |")


def bench_train(steps=20):
    import data
    import llm
    from ddpt import DDPT
    model, tok = llm.load("tiny")
    C, s = llm.context_from_text(model, tok, "Write code:", 10)
    ddpt = DDPT(C, s)
    batch = data.collate(data.encode(data.load("demo")["train"][:16], tok)[0], tok.pad_token_id)
    opt = torch.optim.AdamW(ddpt.denoiser.parameters(), lr=1e-4)
    den = llm_t = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        ctx = ddpt.training_contexts(16)
        t1 = time.perf_counter()
        loss = llm.loss(model, ctx, batch)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        den, llm_t = den + (t1 - t0) + (time.perf_counter() - t2), llm_t + (t2 - t1)
    big = DDPT(torch.randn(10, 1024), 1.0)  # the paper's D = 10 240: the denoiser half alone
    big_opt = torch.optim.AdamW(big.denoiser.parameters(), lr=1e-4)
    def big_step():
        big.training_contexts(16).pow(2).mean().backward()
        big_opt.step()
        big_opt.zero_grad()
    big_ms = timed(big_step, 10) * 1e3
    print(f"DDPT denoiser half of a training step at D = 10240, r = 512, batch 16: {big_ms:.1f} ms "
          "(to compare with one forward+backward of the LLM)")
    print(f"DDPT training step, tiny LLM, batch 16, D = {C.numel()}: denoiser {den / steps * 1e3:.1f} ms, "
          f"LLM forward+backward {llm_t / steps * 1e3:.1f} ms, denoiser share {den / (den + llm_t):.1%}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="*", default=["sampling", "metrics", "train"], help="which benchmarks")
    for what in p.parse_args().what:
        {"sampling": bench_sampling, "metrics": bench_metrics, "train": bench_train}[what]()
