"""The offline `tiny` model: a 1M-parameter T5 with a byte-level BPE of 600 tokens that this project
pre-trains itself on the demo corpus (models/demo.py) the first time it is asked for, then caches.
Bit-identical on any machine (`reproducible`), so the demo tables come back elsewhere too."""
import contextlib
import os
import shutil

import torch
from tqdm import tqdm

import data
from models import demo

def path(data_name):
    return os.path.join(data.CACHE, f"tiny-{data_name}")


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


def pretrain(path, data_name="demo", *, steps=3000, n_pairs=20_000, seed=0, batch_size=64, data_dir=None):
    """Build a small byte-level BPE and a 2+2-layer T5, pre-train it for `steps` on the (tagged
    instruction, code) pairs of the data set's train split, save it with save_pretrained. The same
    seed gives the same model on any run of a machine (`reproducible`)."""
    with reproducible():
        _pretrain(path, data_name, steps=steps, n_pairs=n_pairs, seed=seed, batch_size=batch_size, data_dir=data_dir)


def _pretrain(path, data_name, *, steps, n_pairs, seed, batch_size, data_dir):
    from transformers import T5Config, T5ForConditionalGeneration

    from llm import PAPER_PROMPT  # (llm imports this module)
    if data_name == "demo":
        pairs = demo.pretraining(n_pairs, seed)
    else:  # a real data set: its own train split, under the default manual prompt
        pairs = [(PAPER_PROMPT, p["nl"], p["code"]) for p in data.load(data_name, data_dir, seed)["train"]]
    torch.manual_seed(seed)
    tok = data.build_tokenizer([t for p in pairs for t in p])
    config = T5Config(vocab_size=len(tok), d_model=128, d_kv=32, d_ff=512, num_layers=2, num_decoder_layers=2,
                      num_heads=4, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config)
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
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)  # a crash mid-save leaves no half-written model behind
