"""CodeT5+ 2B / 6B / 16B (and InstructCodeT5+ 16B) in plain PyTorch, loading the official weights.

Those checkpoints ship their architecture as remote code written for transformers 4.2x, which no
longer loads; here it is written anew (no remote code runs), with the checkpoints' parameter names.

An encoder and a decoder of CodeGen-style blocks. Each block has one LayerNorm feeding attention
and MLP in parallel:

    h = x + attn(ln(x)) + mlp(ln(x))                       (+ crossattn(ln(x)) in the decoder's last block)

Attention: a fused qkv_proj, split into 4 model-parallel groups, each holding query, value, key in
that order; GPT-J rotary embedding on the first rotary_dim dimensions of each head; scores in
float32. The encoder attends both ways, the decoder causally. The cross-attention (last decoder
block only) has its own q_attn, and a qkv_proj giving value, key from the encoder states; as in
the official code, keys are rotated by their encoder position and queries by their decoder
position. enc_to_dec_proj maps encoder width to decoder width (2B: 1024 -> 2560); lm_head has a bias.

The official config leaves pad_token_id and decoder_start_token_id null; the tokenizer's only
special token is <|endoftext|> (50256). We start the decoder from it and pad with it (padded
label positions are -100 and never scored), unless the config names other ids.
"""
import json
import math
import os
from types import SimpleNamespace

import torch
from torch import nn

NAMES = {n: f"Salesforce/{n}" for n in ("codet5p-2b", "codet5p-6b", "codet5p-16b", "instructcodet5p-16b")}


def is_codet5p(path):
    """A short name, an official hub id, or a local folder whose config.json says codet5p."""
    if path in NAMES or path in NAMES.values():
        return True
    cfg = os.path.join(path, "config.json")
    if not os.path.exists(cfg):
        return False
    try:
        with open(cfg, encoding="utf-8") as f:
            return json.load(f).get("model_type") == "codet5p"
    except (ValueError, AttributeError) as e:  # not JSON, not UTF-8, or not a JSON object
        raise ValueError(f"{cfg} is not a valid config ({e})") from None


def rotate(x, pos):
    """GPT-J rotary embedding of x (B, L, H, r) at positions pos (L,): pairs (x0, x1), (x2, x3), ...
    each turned by angle pos / 10000^(2i/r)."""
    r = x.shape[-1]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, r, 2, device=x.device, dtype=torch.float32) / r))
    angles = pos.float()[:, None] * inv_freq[None]
    sin = angles.sin().repeat_interleave(2, -1)[None, :, None]
    cos = angles.cos().repeat_interleave(2, -1)[None, :, None]
    turned = torch.stack([-x[..., 1::2], x[..., ::2]], -1).flatten(-2)
    return x.float() * cos + turned.float() * sin  # kept in float32, as the official code does


class Attention(nn.Module):
    def __init__(self, cfg, cross=False):
        super().__init__()
        d = cfg["n_embd"]
        self.heads, self.rot = cfg["n_head"], cfg.get("rotary_dim")
        self.qkv_proj = nn.Linear(d, 2 * d if cross else 3 * d, bias=False)
        if cross:
            self.q_attn = nn.Linear(d, d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)

    def _heads(self, x, parts):
        """(B, L, parts * d) -> `parts` tensors (B, L, H, hd), from 4 groups of [part1 | part2 | ...]."""
        B, L, _ = x.shape
        groups = x.view(B, L, 4, parts, -1)  # 4 model-parallel groups, each `parts` slices of d/4
        return [groups[:, :, :, i].reshape(B, L, self.heads, -1) for i in range(parts)]

    def _rope(self, x, pos):
        r = self.rot or x.shape[-1]
        return torch.cat([rotate(x[..., :r], pos), x[..., r:].float()], -1)

    def forward(self, x, pos, mask=None, causal=False, cache=None, enc=None, enc_mask=None):
        """x (B, L, d) at positions pos (L,); mask (B, S) of keys; cache: this layer's past (k, v)."""
        if enc is None:
            q, v, k = self._heads(self.qkv_proj(x), 3)
            q, k = self._rope(q, pos), self._rope(k, pos)
            if cache is not None:
                k, v = torch.cat([cache[0], k], 1), torch.cat([cache[1], v], 1)
            new_cache = (k, v)
        else:
            (q,) = self._heads(self.q_attn(x), 1)
            q = self._rope(q, pos)
            if cache is None:  # encoder keys and values: computed once per generation
                v, k = self._heads(self.qkv_proj(enc), 2)
                cache = (self._rope(k, torch.arange(enc.shape[1], device=enc.device)), v)
            (k, v), new_cache, mask = cache, cache, enc_mask
        scores = torch.einsum("blhd,bshd->bhls", q.float(), k.float()) / math.sqrt(q.shape[-1])
        if causal:  # query i (at pos[i]) sees keys 0..pos[i]
            keep = torch.arange(k.shape[1], device=x.device)[None, :] <= pos[:, None]
            scores = scores.masked_fill(~keep, torch.finfo(torch.float32).min)
        if mask is not None:
            scores = scores + (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        out = torch.einsum("bhls,bshd->blhd", scores.softmax(-1).to(v.dtype), v)
        return self.out_proj(out.flatten(2)), new_cache


class MLP(nn.Module):
    def __init__(self, d, inner):
        super().__init__()
        self.fc_in, self.fc_out = nn.Linear(d, inner), nn.Linear(inner, d)

    def forward(self, x):
        return self.fc_out(nn.functional.gelu(self.fc_in(x), approximate="tanh"))  # gelu_new


class Block(nn.Module):
    def __init__(self, cfg, cross=False):
        super().__init__()
        d, inner = cfg["n_embd"], cfg.get("n_inner") or 4 * cfg["n_embd"]
        self.ln_1 = nn.LayerNorm(d, eps=cfg.get("layer_norm_epsilon", 1e-5))
        self.attn = Attention(cfg)
        self.mlp = MLP(d, inner)
        if cross:
            self.crossattention = Attention(cfg, cross=True)

    def forward(self, x, pos, mask, causal, cache=(None, None), enc=None, enc_mask=None):
        h = self.ln_1(x)
        a, self_cache = self.attn(h, pos, mask, causal, cache[0])
        out, cross_cache = x + a + self.mlp(h), None
        if enc is not None and hasattr(self, "crossattention"):
            c, cross_cache = self.crossattention(h, pos, cache=cache[1], enc=enc, enc_mask=enc_mask)
            out = out + c
        return out, (self_cache, cross_cache)


class Stack(nn.Module):
    """Token embedding, blocks, final LayerNorm (CodeGen's `transformer`)."""

    def __init__(self, cfg, cross_last=False):
        super().__init__()
        self.wte = nn.Embedding(cfg["vocab_size"], cfg["n_embd"])
        n = cfg["n_layer"]
        self.h = nn.ModuleList(Block(cfg, cross=cross_last and i == n - 1) for i in range(n))
        self.ln_f = nn.LayerNorm(cfg["n_embd"], eps=cfg.get("layer_norm_epsilon", 1e-5))

    def forward(self, x, mask=None, causal=False, enc=None, enc_mask=None, cache=None, start=0):
        pos = torch.arange(start, start + x.shape[1], device=x.device)
        cache = cache or [(None, None)] * len(self.h)
        new = []
        for block, c in zip(self.h, cache):
            x, c = block(x, pos, mask, causal, c, enc, enc_mask)
            new.append(c)
        return self.ln_f(x), new


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.transformer = Stack(cfg, cross_last=True)
        self.lm_head = nn.Linear(cfg["n_embd"], cfg["vocab_size"])

    def forward(self, ids, enc=None, enc_mask=None, cache=None, start=0):
        h, cache = self.transformer(self.transformer.wte(ids), None, True, enc, enc_mask, cache, start)
        return self.lm_head(h).float(), cache


class CodeT5p(nn.Module):
    """The encoder-decoder, with the few methods llm.py uses of a Hugging Face model."""

    def __init__(self, config):
        super().__init__()
        enc, dec = config["encoder"], config["decoder"]
        given = lambda key, default: default if config.get(key) is None else config[key]
        eos = given("eos_token_id", 50256)
        self.config = SimpleNamespace(
            is_encoder_decoder=True, hidden_size=enc["n_embd"], vocab_size=dec["vocab_size"],
            decoder_start_token_id=given("decoder_start_token_id", eos), pad_token_id=given("pad_token_id", eos),
            eos_token_id=eos)
        self.encoder, self.decoder = Stack(enc), Decoder(dec)
        if enc["n_embd"] != dec["n_embd"]:
            self.enc_to_dec_proj = nn.Linear(enc["n_embd"], dec["n_embd"])

    def get_input_embeddings(self):
        return self.encoder.wte

    def encode(self, inputs_embeds, attention_mask):
        h, _ = self.encoder(inputs_embeds, attention_mask)
        return self.enc_to_dec_proj(h) if hasattr(self, "enc_to_dec_proj") else h

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, labels=None):
        """Teacher forcing: the decoder reads [start ; labels[:-1]] and predicts labels."""
        x = self.encoder.wte(input_ids) if inputs_embeds is None else inputs_embeds
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device) if attention_mask is None else attention_mask
        enc = self.encode(x, mask)
        start = labels.new_full((labels.shape[0], 1), self.config.decoder_start_token_id)
        dec_in = torch.cat([start, labels[:, :-1]], 1)
        dec_in = dec_in.masked_fill(dec_in == -100, self.config.pad_token_id)
        logits, _ = self.decoder(dec_in, enc, mask)
        loss = nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
        return SimpleNamespace(logits=logits, loss=loss)

    @torch.no_grad()
    def generate(self, input_ids=None, inputs_embeds=None, attention_mask=None, max_new_tokens=128,
                 num_beams=1, do_sample=False, temperature=1.0, top_p=1.0, pad_token_id=None, use_cache=True, **_):
        """Greedy decoding, or nucleus sampling (do_sample: softmax(logits / temperature) cut to the
        smallest set of tokens whose probability reaches top_p), with a key-value cache
        (use_cache=False recomputes every step, as the official generate effectively did).
        Returns ids (B, 1 + new), the start token first."""
        if num_beams != 1:
            raise ValueError("codet5p.py decodes greedily or samples, without beams: use --num-beams 1")
        x = self.encoder.wte(input_ids) if inputs_embeds is None else inputs_embeds
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device) if attention_mask is None else attention_mask
        enc, eos = self.encode(x, mask), self.config.eos_token_id
        out = torch.full((x.shape[0], 1), self.config.decoder_start_token_id, device=x.device)
        done, cache = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device), None
        for step in range(max_new_tokens):
            if use_cache:
                logits, cache = self.decoder(out[:, -1:], enc, mask, cache, start=step)
            else:
                logits, _ = self.decoder(out, enc, mask)
            pad = self.config.pad_token_id if pad_token_id is None else pad_token_id
            nxt = _nucleus(logits[:, -1], temperature, top_p) if do_sample else logits[:, -1].argmax(-1)
            nxt = nxt.masked_fill(done, pad)
            out, done = torch.cat([out, nxt[:, None]], 1), done | (nxt == eos)
            if done.all():
                break
        return out


def _nucleus(logits, temperature, top_p):
    """One token per row, drawn from the top-p nucleus of softmax(logits / temperature)."""
    probs, ids = torch.sort(torch.softmax(logits.float() / temperature, -1), -1, descending=True)
    probs[probs.cumsum(-1) - probs >= top_p] = 0  # keep the tokens before the mass reaches top_p
    return ids.gather(-1, torch.multinomial(probs, 1)).squeeze(-1)


def from_pretrained(path, *, dtype=torch.float32, device_map=None, max_memory=None):
    """Config from config.json (its `encoder` / `decoder` sections), weights from safetensors or
    pytorch_model.bin, sharded or not; a hub id is fetched with huggingface_hub first. The model
    is built on the meta device and filled with tensors cast to `dtype` one by one, so a bf16
    load never holds an fp32 copy. device_map="auto" shards it over the GPUs with accelerate (those in
    max_memory, if given)."""
    if not os.path.isdir(path):
        from huggingface_hub import snapshot_download
        path = snapshot_download(NAMES.get(path, path), allow_patterns=["*.json", "*.txt", "*.safetensors", "*.bin"])
    config = json.load(open(os.path.join(path, "config.json")))
    with torch.device("meta"):
        model = CodeT5p(config)
    state = {}
    for name in ("model.safetensors", "pytorch_model.bin"):
        index = os.path.join(path, name + ".index.json")
        files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else \
            [name] if os.path.exists(os.path.join(path, name)) else []
        for f in files:
            if f.endswith(".safetensors"):
                from safetensors.torch import load_file
                part = load_file(os.path.join(path, f))
            else:
                part = torch.load(os.path.join(path, f), map_location="cpu", weights_only=True, mmap=True)
            state.update({k: v.to(dtype) for k, v in part.items() if not k.endswith("causal_mask")})
        if state:
            break
    if not state:
        raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin (or their index) in {path}")
    model.load_state_dict(state, strict=True, assign=True)
    if device_map is not None:
        from accelerate import dispatch_model, infer_auto_device_map
        device_map = infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=["Block"], dtype=dtype)
        model = dispatch_model(model, device_map)
    return model
