"""Benchmarks for many GPUs (bench.py runs them): train.py's steps per second under torchrun, and the
memory each GPU needs for CodeT5+ 2B / 6B / 16B in bf16.

    python -m tools.bench ddp                                                  # tiny, this CPU: 1 and 2 processes
    python -m tools.bench ddp --model t5-220m-random --device cuda --procs 1   # one GPU, CodeT5+ 220M's shape
    python -m tools.bench memory
"""
import os
import time

import torch


def random_t5_220m(folder):
    """A T5 of CodeT5+ 220M's shape (T5-base: 12 + 12 layers, d 768, 12 heads, vocabulary 32,100) with
    random weights, and a BPE tokenizer of the demo data: a step's time depends on the shape alone,
    and no hub is reachable here to fetch the real weights."""
    from transformers import T5Config, T5ForConditionalGeneration

    import data
    from models import demo
    tok = data.build_tokenizer([t for p in demo.splits()["train"] for t in (p["nl"], p["code"])])
    config = T5Config(vocab_size=32100, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
                      num_heads=12, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def bench_ddp(model="tiny", device="cpu", procs=(1, 2), steps=(10, 210)):
    """train.py's DDPT (batch 16, the defaults) in steps per second: `python train.py`, and torchrun with
    N processes (each with cores / N threads on a CPU). Each rate is the difference of a short and a
    long run, so start-up and the held-out evaluations (the same in both) cancel. Last column: the
    largest difference of the long run's trained weights from the first row's; the second row (one
    process, one thread: other float summation orders) shows how large float noise alone makes it."""
    import subprocess
    import sys
    import tempfile
    from runtime import checkpoint
    cores, cpu = os.cpu_count(), device == "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        if model == "t5-220m-random":
            model = os.path.join(tmp, model)
            random_t5_220m(model)
        print(f"train.py --method ddpt, model {os.path.basename(model)}, device {device}, batch 16, "
              f"{steps[1] - steps[0]} steps timed ({steps[1]} - {steps[0]}), {cores} cores")
        print("| launcher | processes | threads each | steps per second | max abs weight difference from row 1 |")
        print("| --- | --- | --- | --- | --- |")
        runs = [("python train.py", 1, cores)] + [("python train.py", 1, 1)] * cpu + \
            [("torchrun", n, max(1, cores // n)) for n in procs]
        reference = None
        for i, (launcher, n, threads) in enumerate(runs):
            seconds = []
            for s in steps:
                out = os.path.join(tmp, f"{i}-{s}")
                opts = ["--model", model, "--device", device, "--method", "ddpt", "--steps", str(s), "--eval-every", str(s), "--out", out]
                cmd = [sys.executable, "train.py", *opts] if launcher == "python train.py" else \
                    [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), "train.py", "--", *opts]
                t0 = time.perf_counter()
                subprocess.run(cmd, capture_output=True, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
                seconds.append(time.perf_counter() - t0)
            weights = checkpoint.load(os.path.join(out, "seed0", "ddpt.pt"))["weights"]
            reference = reference or weights
            diff = max((weights[k].float() - reference[k].float()).abs().max().item() for k in weights)
            print(f"| {launcher} | {n} | {threads} | {(steps[1] - steps[0]) / (seconds[1] - seconds[0]):.1f} | {diff:.1e} |")


# CodeGen shapes of the CodeT5+ decoders (their config.json files): width, layers, heads. The encoder
# of all three is CodeGen-350M's: width 1024, 20 layers, 16 heads.
DECODERS = {"codet5p-2b": (2560, 32, 32), "codet5p-6b": (4096, 33, 16), "codet5p-16b": (6144, 34, 24)}


def bench_memory(batch=(16, 4), enc_len=40, dec_len=64):
    """Each GPU's memory for train.py in bf16, counted on PyTorch's meta device (shapes, no memory):
    the frozen LLM's weights, the DDPT module with its gradients and AdamW moments (fp32), and the
    activations autograd keeps for backward through the frozen LLM to the context, for `batch` pairs
    per GPU (global batch / processes) of enc_len [context ; instruction] and dec_len code tokens."""
    from models import codet5p
    from ddpt import DDPT
    from torch.autograd.graph import saved_tensors_hooks
    gib = 2 ** 30
    enc = dict(n_embd=1024, n_layer=20, n_head=16, rotary_dim=32, n_inner=None, activation_function="gelu_new",
               layer_norm_epsilon=1e-5, vocab_size=51200, n_positions=2048)
    with torch.device("meta"):
        ddpt = sum(p.numel() for p in DDPT(torch.zeros(10, 1024), 1.0).parameters()) * 4 * 4 / gib  # weights, grads, 2 moments
    print(f"train.py --dtype bf16, n = 10 context tokens, {enc_len} encoder / {dec_len} code tokens a pair; GiB per GPU "
          f"(one LLM replica per GPU; DDPT module + AdamW: {ddpt:.2f} GiB)")
    print("| model | parameters | bf16 weights | " + " | ".join(f"activations, {b} pairs per GPU | total, {b} pairs" for b in batch) + " |")
    print("| --- | --- | --- |" + " --- | --- |" * len(batch))
    for name, (d, layers, heads) in DECODERS.items():
        dec = dict(enc, n_embd=d, n_layer=layers, n_head=heads, rotary_dim=64, add_cross_attention=True)
        with torch.device("meta"):
            model = codet5p.CodeT5p({"model_type": "codet5p", "encoder": enc, "decoder": dec}).to(torch.bfloat16)
        model.requires_grad_(False)
        n, weights = sum(p.numel() for p in model.parameters()), {id(p) for p in model.parameters()}

        def keep(t):  # a tensor autograd saves; the weights it saves are the model's own, not new memory
            if id(t) not in weights and id(t._base) not in weights:
                kept.append(t.numel() * t.element_size())
            return t
        cells = []
        for B in batch:
            kept = []
            with torch.device("meta"), saved_tensors_hooks(keep, lambda t: t):
                x = torch.zeros(B, enc_len, 1024, dtype=torch.bfloat16, requires_grad=True)
                model(inputs_embeds=x, attention_mask=torch.ones(B, enc_len, dtype=torch.long),
                      labels=torch.zeros(B, dec_len, dtype=torch.long))
            cells.append(f"{sum(kept) / gib:.2f} | {n * 2 / gib + sum(kept) / gib + ddpt:.1f}")
        print(f"| {name} | {n / 1e9:.2f} B | {n * 2 / gib:.1f} | " + " | ".join(cells) + " |")
