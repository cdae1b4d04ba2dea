"""The offline `tiny` model: a 1M-parameter T5 with a byte-level BPE of 600 tokens that this project
pre-trains itself on the demo corpus (models/demo.py). The pre-trained weights ship in the repository
(models/tiny-demo/, about 4 MB): pre-training is bit-identical across thread counts on one machine
(`reproducible`) but not across processors (another CPU's vector code rounds otherwise and 3,000 steps
make that another model), so every machine fine-tunes the same shipped weights. The command that
wrote them, and writes them again (about 4 minutes on two CPU cores):

    python -m models.tiny                         # RECIPE -> models/tiny-demo/ (+ pretraining.json)
    python -m models.tiny --seed 1 --out /tmp/t   # another pre-training, to see how much the demo moves

A tiny model for another data set (--model tiny --data conala) is pre-trained into the cache on first use.
"""
import argparse
import contextlib
import json
import os

import torch
from tqdm import tqdm

from runtime import checkpoint
import data
from models import demo

CORPUS = "demo"  # what `tiny` is pre-trained on unless a run names another data set
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny-demo")  # its weights, in the repository
RECIPE = {"steps": 3000, "n_pairs": 20_000, "seed": 0, "batch_size": 64}  # what `python -m models.tiny` runs
CHECK_PROMPT, CHECK_PAIRS = "Python:", 64  # the fixed pairs whose loss pretraining.json records


def path(data_name):
    """The tiny model's folder: the shipped one for its own corpus, else one in the cache."""
    return SHIPPED if data_name == CORPUS else os.path.join(data.CACHE, f"tiny-{data_name}")


def t5_config(vocab_size):
    from transformers import T5Config
    return T5Config(vocab_size=vocab_size, d_model=128, d_kv=32, d_ff=512, num_layers=2, num_decoder_layers=2,
                    num_heads=4, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


@contextlib.contextmanager
def reproducible():
    """One thread and deterministic algorithms while inside, restored after. A sum split over threads
    rounds differently with their number, and thousands of steps turn that rounding into another
    model: this makes the `tiny` pre-training, and train.py on the CPU (--reproducible), bit-identical
    whatever OMP_NUM_THREADS says."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def pretrain(path, data_name=CORPUS, *, steps=RECIPE["steps"], n_pairs=RECIPE["n_pairs"], seed=RECIPE["seed"],
             batch_size=RECIPE["batch_size"], data_dir=None):
    """Build a small byte-level BPE and a 2+2-layer T5, pre-train it for `steps` on the (tagged
    instruction, code) pairs of the data set's train split, save it with save_pretrained. The same
    seed gives the same model on any run of a machine (`reproducible`)."""
    with reproducible():
        _pretrain(path, data_name, steps=steps, n_pairs=n_pairs, seed=seed, batch_size=batch_size, data_dir=data_dir)


def _pretrain(path, data_name, *, steps, n_pairs, seed, batch_size, data_dir):
    from transformers import T5ForConditionalGeneration

    from llm import PAPER_PROMPT  # (llm imports this module)
    if data_name == CORPUS:
        pairs = demo.pretraining(n_pairs, seed)
    else:  # a real data set: its own train split, under the default manual prompt
        pairs = [(PAPER_PROMPT, p["nl"], p["code"]) for p in data.load(data_name, data_dir, seed)["train"]]
    torch.manual_seed(seed)
    tok = data.build_tokenizer([t for p in pairs for t in p])
    model = T5ForConditionalGeneration(t5_config(len(tok)))
    # the prompt and the instruction are tokenized apart, as DDPT feeds them: [prompt ; instruction]
    examples, _ = data.encode([{"nl": nl, "code": code} for _, nl, code in pairs], tok, max_nl=64, max_code=64)
    prompts = {p: tok(p, add_special_tokens=False)["input_ids"] for p, _, _ in pairs}
    examples = [(prompts[p] + a, b) for (p, _, _), (a, b) in zip(pairs, examples)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g, step = torch.Generator().manual_seed(seed), 0
    bar = tqdm(total=steps, desc=f"pre-training tiny on {data_name} (one-off)")
    while step < steps:  # a fixed number of steps, so the same seed gives the same model
        for batch in data.batches(examples, batch_size, tok, shuffle=True, generator=g):
            E = model.get_input_embeddings()
            out = model(inputs_embeds=E(batch["input_ids"]), attention_mask=batch["attention_mask"],
                        labels=batch["labels"])
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{out.loss.item():.3f}", refresh=False)
            if step == steps:
                break
    bar.close()
    with checkpoint.atomic(path) as tmp:  # a crash mid-save leaves no half-written model behind
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


@torch.inference_mode()
def check_loss(folder):
    """The model's mean token loss on fixed demo test pairs under the tag CHECK_PROMPT: a number that
    says which weights a folder holds (pretraining.json records it; tests/test_llm.py checks it)."""
    from transformers import AutoTokenizer, T5ForConditionalGeneration
    model, tok = T5ForConditionalGeneration.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    pairs = demo.splits(0)["test"][:CHECK_PAIRS]
    examples, _ = data.encode(pairs, tok, max_nl=64, max_code=64)
    prompt = tok(CHECK_PROMPT, add_special_tokens=False)["input_ids"]
    batch = data.collate([(prompt + a, b) for a, b in examples], tok)
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss.item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=SHIPPED, help="where to write the model (default: the shipped folder)")
    p.add_argument("--seed", type=int, default=RECIPE["seed"], help="pre-training seed (tokenizer corpus, init, batches)")
    p.add_argument("--steps", type=int, default=RECIPE["steps"], help="optimiser steps")
    args = p.parse_args(argv)
    recipe = RECIPE | {"seed": args.seed, "steps": args.steps}
    pretrain(args.out, CORPUS, **recipe)
    record = {"command": "python -m models.tiny" + (f" --seed {args.seed}" if args.seed != RECIPE["seed"] else "")
              + (f" --steps {args.steps}" if args.steps != RECIPE["steps"] else ""), "recipe": recipe,
              "torch": torch.__version__, "check_loss": check_loss(args.out)}
    checkpoint.write_atomic(os.path.join(args.out, "pretraining.json"), json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
