"""CodeFusion (Singh et al., EMNLP 2023): a diffusion model that writes the program itself.

DDPT diffuses a prompt for a frozen LLM; CodeFusion diffuses the program's embeddings, conditioned
on the encoded utterance s, and reads tokens off the denoised embeddings at the end:

    E  encoder of the utterance                  E(s)
    L  code-token embedding                      x0 = L(y)   (n positions, padded)
    N  denoiser: self-attention over x_t, cross-attention to E(s), conditioned on t
    D  decoder: self-attention over x0_hat, cross-attention to E(s)       D_s = D(x0_hat, E(s))
    H  head: one linear layer to the vocabulary, argmax per position

    L_t = ||eps_hat - eps||^2 + ||D_s - L(y)||^2 - log p(y | D_s)           (mean squared errors)

N predicts x0_hat (as Diffusion-LM, whose code CodeFusion builds on); the noise it implies,
eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t), is what the first term compares: the
same loss, without dividing by sqrt(abar_t) ~ 6e-4 at t = T when sampling. Square-root noise
schedule, T = 1200, from diffusion.py.
"""
import io
import re
import tokenize as pytokenize

import torch
from torch import nn

from evaluation import code_repair
from diffusion import Diffusion, timestep_embedding

MASK = "<mask>"


def cpd_mask(code, lang):
    """Continuous paragraph denoising input: every identifier and built-in keyword of the language
    replaced by <mask>; strings, numbers, operators and (in Bash) option flags kept."""
    if lang == "python":
        try:
            toks = list(pytokenize.generate_tokens(io.StringIO(code).readline))
        except (pytokenize.TokenError, IndentationError, SyntaxError):
            toks = None
        if toks is not None:
            lines, out = code.splitlines(keepends=True), []
            offsets = [0]
            for line in lines:
                offsets.append(offsets[-1] + len(line))
            last = 0
            for tok in toks:
                if tok.type == pytokenize.NAME:  # identifiers and keywords alike
                    start = offsets[tok.start[0] - 1] + tok.start[1]
                    end = offsets[tok.end[0] - 1] + tok.end[1]
                    out += [code[last:start], MASK]
                    last = end
            return "".join(out) + code[last:]
    # Bash, CF rules, or Python that does not tokenize: words outside quotes, not flags or numbers
    parts = re.split(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""", code)
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"(?<![\w-])[A-Za-z_][\w]*", MASK, parts[i])
    return "".join(parts)


def _layers(cls, layer_cls, d, heads, n, **kw):
    return cls(layer_cls(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True), n, **kw)


class CodeFusion(nn.Module):
    def __init__(self, *, vocab, pad_id, d=128, heads=4, enc_layers=2, den_layers=4, dec_layers=2, n=64,
                 max_src=64, T=1200, encoder=None):
        """encoder: a pre-trained encoder to use as E (the paper: CodeT5-small's, a transformers
        T5EncoderModel); by default a small transformer encoder is trained with the rest. `config`
        keeps every other argument, so a checkpoint rebuilds the model (`from_checkpoint`)."""
        super().__init__()
        self.n, self.pad_id, self.d = n, pad_id, d
        self.config = dict(vocab=vocab, pad_id=pad_id, d=d, heads=heads, enc_layers=enc_layers,
                           den_layers=den_layers, dec_layers=dec_layers, n=n, max_src=max_src, T=T)
        if encoder is None:
            self.src_emb, self.src_pos = nn.Embedding(vocab, d), nn.Embedding(max_src, d)
            self.E = _layers(nn.TransformerEncoder, nn.TransformerEncoderLayer, d, heads, enc_layers,
                             enable_nested_tensor=False)
        else:
            self.E, width = encoder, encoder.config.d_model
            self.E_proj = nn.Linear(width, d) if width != d else nn.Identity()
        self.L = nn.Embedding(vocab, d)
        # Unit-scale positions: x_t has unit variance, and N has no other way to tell positions
        # apart. At the usual 0.02 they drown in the noise (CF, 1,500 steps: 13% vs 46% exact
        # match on training pairs, measured).
        self.pos = nn.Parameter(torch.randn(n, d))
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.N = _layers(nn.TransformerDecoder, nn.TransformerDecoderLayer, d, heads, den_layers)
        self.D = _layers(nn.TransformerDecoder, nn.TransformerDecoderLayer, d, heads, dec_layers)
        self.H = nn.Linear(d, vocab)
        self.diffusion = Diffusion(T, "sqrt")

    def encode(self, src):
        """E(s) for token ids (B, S) padded with pad_id; returns memory and its padding mask."""
        pad = src == self.pad_id
        if hasattr(self, "E_proj"):  # pre-trained encoder
            return self.E_proj(self.E(input_ids=src, attention_mask=(~pad).long()).last_hidden_state), pad
        x = self.src_emb(src) + self.src_pos(torch.arange(src.shape[1], device=src.device))
        return self.E(x, src_key_padding_mask=pad), pad

    def denoise(self, x_t, t, mem, mem_pad=None):
        h = x_t + self.pos + self.t_mlp(timestep_embedding(t, self.d))[:, None]
        return self.N(h, mem, memory_key_padding_mask=mem_pad)  # no tgt mask: full self-attention

    def decode(self, x0_hat, mem, mem_pad=None):
        return self.D(x0_hat + self.pos, mem, memory_key_padding_mask=mem_pad)

    def losses(self, y, mem, mem_pad=None, generator=None):
        """The three terms of L_t for code ids y (B, n), given E(s) (or noise in its place)."""
        dif, B = self.diffusion, y.shape[0]
        t = torch.randint(1, dif.T + 1, (B,), generator=generator).to(y.device)
        eps = torch.randn(B, self.n, self.d, generator=generator).to(y.device)
        x0 = self.L(y)
        x_t = dif.q_sample(x0, t, eps)
        x0_hat = self.denoise(x_t, t, mem, mem_pad)
        eps_hat = dif.eps_from_x0(x_t, t, x0_hat)
        D_s = self.decode(x0_hat, mem, mem_pad)
        ce = nn.functional.cross_entropy(self.H(D_s).transpose(1, 2), y)
        return {"eps": (eps_hat - eps).pow(2).mean(), "dec": (D_s - x0).pow(2).mean(), "ce": ce}

    def tokens(self, x0_hat, mem, mem_pad=None, ground=False):
        """Tokens from denoised embeddings: D then H (argmax), or grounding (nearest row of L)."""
        if ground:
            return torch.cdist(x0_hat, self.L.weight[None].expand(x0_hat.shape[0], -1, -1)).argmin(-1)
        return self.H(self.decode(x0_hat, mem, mem_pad)).argmax(-1)

    @torch.no_grad()
    def sample(self, src, k=1, steps=None, generator=None, ground=False):
        """k programs per utterance from k noise draws: ids (B * k, n), utterance-major; DDPM over
        all T (steps=None) or DDIM-K (eta = 0), as `Diffusion.trajectory` decides."""
        for _, x, mem, pad in self.trajectory(src, k=k, steps=steps, generator=generator):
            pass  # keep only the last step's x_0
        return self.tokens(x, mem, pad, ground)

    @torch.no_grad()
    def trajectory(self, src, k=1, steps=None, generator=None):
        """The reverse process for k draws per utterance: (s, x_s, memory, its padding mask) per step."""
        mem, pad = self.encode(src.repeat_interleave(k, 0))
        x_T = torch.randn(mem.shape[0], self.n, self.d, generator=generator).to(src.device)
        den = lambda x, t: self.denoise(x, t, mem, pad)
        for s, x in self.diffusion.trajectory(den, x_T, steps=steps, generator=generator):
            yield s, x, mem, pad

    def checkpoint(self):
        return {"kind": "codefusion", "config": self.config, "weights": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt, encoder=None):
        """The model a checkpoint holds (pass the same pre-trained `encoder` when it was trained with one)."""
        model = cls(**ckpt["config"], encoder=encoder)
        model.load_state_dict(ckpt["weights"])
        return model


def valid_syntax(code, lang, functions=()):
    """Python: ast.parse; Bash: `bash -n`; CF: balanced parentheses and only known rule functions."""
    if lang == "python":
        return code_repair.parses(code)
    if lang == "bash":
        import subprocess
        return subprocess.run(["bash", "-n"], input=code, text=True, capture_output=True).returncode == 0
    depth = 0
    for ch in re.sub(r'"[^"]*"', "", code):
        depth += (ch == "(") - (ch == ")")
        if depth < 0:
            return False
    called = re.findall(r"([A-Za-z_]\w*)\s*\(", code)
    return depth == 0 and bool(called) and all(f in functions for f in called)
