"""A trained method of a run as a Hugging Face PEFT adapter folder, the format people share and serve.

    python -m tools.export out/tiny-demo --method ddpt                 # seed 0's top-1 prompt (draw 0)
    python -m tools.export out/tiny-demo --method ddpt --draw 3 --seed 1 --out adapters/ddpt-d3
    python -m tools.export out/smollm2-conala-ceiling --method lora    # a LoRA run: a PEFT LoRA adapter

A prompt method's sampled context becomes a prompt-tuning adapter: adapter_config.json (PROMPT_TUNING,
one transformer submodule: the virtual tokens go before the encoder's input, or before the whole
sequence of a decoder-only model, exactly where this project puts its context) and
adapter_model.safetensors ({"prompt_embeddings": (N, d)}). Draw j (of --k, sample.py's) is the one
sample.py scores as draw j of that training seed (its generator seeded with the seed). A chat model's context sits
inside the user turn, after the template's system turn and user header; PEFT puts its virtual
tokens before everything, so the export's virtual tokens are [that header's embeddings ; context],
and the input is the rest of the template (the model card shows how): the same sequence, exactly.
A method with one prompt per instruction (LoPA, DDPT-Cond) has no single prompt to export: refused.

LoRA becomes a LoRA adapter (r, alpha, the adapted layers' names; lora_A = A, lora_B = B, no
dropout): PEFT's update (alpha / r) B A x is methods/lora.py's. Each folder gets a README.md model
card: the method, the run, the seed, the draw and that seed's row of results.json where there is one.
Tests: tests/test_export.py loads each kind with PEFT and compares losses, generations, merged weights.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

from runtime import checkpoint
import data
import llm
import prompts

PEFT_TASK = {True: "SEQ_2_SEQ_LM", False: "CAUSAL_LM"}  # by the model's config.is_encoder_decoder


def virtual_tokens(module, model, tok, *, seed, draw, k=5):
    """(N, d) float32: the embeddings PEFT prepends, for draw `draw` of a prompt method's k draws (drawn
    together, as sample.py --k k draws them: DDPM's noise at each step depends on k)."""
    if module.conditional:
        raise ValueError(f"{module.kind} makes one prompt per instruction; a PEFT prompt-tuning adapter holds one "
                         "prompt for every input: export a method with one prompt (prompt-tuning, ddpt, ddpt-mcl)")
    if draw and not module.stochastic:
        raise ValueError(f"{module.kind} has one prompt, not draws: drop --draw")
    if draw >= k:
        raise ValueError(f"--draw {draw} of --k {k} draws: pick a draw below --k")
    k = k if module.stochastic else 1
    with torch.inference_mode():
        context = module.sample(k, generator=torch.Generator().manual_seed(seed))[draw].float().cpu()
    chat = data.chat_parts(tok)
    if chat:  # [system turn and user header ; context]: the layout of llm._inputs, as PEFT runs it
        E = llm.embeddings(model).detach().float().cpu()
        context = torch.cat([E[torch.tensor(chat[0], dtype=torch.long)], context])
    return context.contiguous()


def prompt_adapter(tokens, model, base):
    return {"peft_type": "PROMPT_TUNING", "task_type": PEFT_TASK[model.config.is_encoder_decoder],
            "num_virtual_tokens": tokens.shape[0], "token_dim": tokens.shape[1], "num_transformer_submodules": 1,
            "prompt_tuning_init": "RANDOM", "inference_mode": True, "base_model_name_or_path": base,
            "tokenizer_name_or_path": base}


def lora_adapter(module, model, base):
    """(adapter_config, tensors) of a LoRA module, PEFT's key names."""
    tensors = {}
    for name in module.shapes:
        A, B = module.A[module.key(name)], module.B[module.key(name)]
        tensors[f"base_model.model.{name}.lora_A.weight"] = A.detach().float().cpu().contiguous()
        tensors[f"base_model.model.{name}.lora_B.weight"] = B.detach().float().cpu().contiguous()
    targets = sorted({name.rsplit(".", 1)[-1] for name in module.shapes})
    config = {"peft_type": "LORA", "task_type": PEFT_TASK[model.config.is_encoder_decoder], "r": module.rank,
              "lora_alpha": module.alpha, "lora_dropout": 0.0, "bias": "none", "target_modules": targets,
              "fan_in_fan_out": False, "inference_mode": True, "base_model_name_or_path": base}
    return config, tensors


def card(ckpt, *, run, seed, draw, config, chat):  # chat: data.chat_parts of the tokenizer, or None
    """README.md of the adapter: what it is, where it came from, that seed's scores."""
    lines = [f"# {ckpt['kind']} from {run}, training seed {seed}" + (f", draw {draw}" if draw else ""), "",
             f"A PEFT {config['peft_type']} adapter exported by `python -m tools.export` (DDPT, plain PyTorch) "
             f"for the base model `{config['base_model_name_or_path']}`, trained on `{ckpt['run']['data']}` "
             f"for {ckpt['step']} steps with the manual prompt {ckpt['run']['prompt']!r}.", ""]
    results, title = os.path.join(run, f"seed{seed}", "results.json"), prompts.METHODS[ckpt["kind"]].title
    if os.path.exists(results) and draw == 0:  # its top-1 row (a one-prompt method's only row) is this prompt's
        rows = json.load(open(results))["rows"]
        row = next((r for r in rows if r["method"] == title or
                    (r["method"].startswith(title + " (") and r["method"].endswith(" top-1"))), None)
        if row:
            cols = [c for c in ("bleu4", "codebleu", "exact_match", "pair_loss") if row.get(c) is not None]
            lines += [f"Its row in {results}:", "", "| method | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1),
                      f"| {row['method']} | " + " | ".join(f"{row[c]:.4f}" for c in cols) + " |", ""]
    lines += ["```python", "from peft import PeftModel", "model = PeftModel.from_pretrained(base_model, ADAPTER_FOLDER)"]
    if chat:  # the rest of the template, as data.encode builds it
        lines += ["# the virtual tokens hold the chat template's system turn and user header, then the prompt;",
                  "# the input is the rest of the user turn and the assistant header:",
                  f"ids = tok('\\n' + instruction, add_special_tokens=False)['input_ids'] + {list(chat[1])}",
                  "out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=128, do_sample=False)"]
    lines += ["```", ""]
    return "\n".join(lines)


def export(run, method, *, seed=0, draw=0, k=5, out=None):
    """Writes the adapter folder; returns its path."""
    prompts.discover()
    path = os.path.join(run, f"seed{seed}", f"{method}.pt")
    if method not in prompts.METHODS:
        raise ValueError(f"unknown --method {method!r}: use one of {', '.join(prompts.METHODS)}")
    ckpt = checkpoint.load(path)
    cfg = ckpt["run"]
    model, tok = llm.load(cfg["model"], data_name=cfg["data"], data_dir=cfg["data_dir"])
    module = prompts.METHODS[ckpt["kind"]].from_checkpoint(ckpt)
    base = model.name_or_path or cfg["model"]  # the folder or hub id it was loaded from (a short name resolved)
    if ckpt["kind"] == "lora":
        config, tensors = lora_adapter(module, model, base)
    else:
        tokens = virtual_tokens(module, model, tok, seed=seed, draw=draw, k=k)
        config, tensors = prompt_adapter(tokens, model, base), {"prompt_embeddings": tokens}
    out = out or os.path.join(run, "peft", f"{method}-seed{seed}" + (f"-draw{draw}" if draw else ""))
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with checkpoint.atomic(out) as tmp:
        os.makedirs(tmp)
        with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
            json.dump(config, f, indent=2)
        save_file(tensors, os.path.join(tmp, "adapter_model.safetensors"))
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write(card(ckpt, run=run, seed=seed, draw=draw, config=config, chat=data.chat_parts(tok)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run folder of train.py")
    p.add_argument("--method", required=True, help="the trained method to export (its checkpoint's kind)")
    p.add_argument("--seed", type=int, default=0, help="the training seed (seed<S> folder); also seeds the draws")
    p.add_argument("--draw", type=int, default=0, help="which of a stochastic method's draws (0: the top-1 row's)")
    p.add_argument("--k", type=int, default=5, help="the draws sample.py took (its --k): draw j is drawn among k")
    p.add_argument("--out", default=None, help="the adapter folder (default RUN/peft/METHOD-seedS[-drawJ])")
    args = p.parse_args(argv)
    if args.draw < 0:
        sys.exit(f"--draw must be 0 or more, got {args.draw}")
    try:
        print(f"wrote {export(args.run, args.method, seed=args.seed, draw=args.draw, k=args.k, out=args.out)}")
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
