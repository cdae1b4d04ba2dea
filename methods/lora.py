"""LoRA (Hu et al. 2022), the ceiling a prompt method is measured against: not a prompt, but low-rank
updates of the frozen LLM's own attention weights. The context stays the manual one, C.

For each adapted projection W (out x in) of the frozen model (by default the queries and the values,
as in the LoRA paper), with x the projection's input,

    h = W x + (alpha / r) B A x,      A (r x in): Kaiming-uniform,  B (out x r): zero

so an untrained LoRA *is* the manual prompt's model (B = 0 adds exactly nothing), and the update is
the same as running the merged weight W + (alpha / r) B A (both in tests/test_lora.py). Only A and B
are trained; W stays frozen. The update runs as a forward hook on each projection, installed while
`adapt(model)`'s context is open (train.py trains and sample.py generates inside it) and removed
after, so the frozen model is left as it was: no weight is ever overwritten.

The layers are found by the last part of their module name (`--lora-targets`): Llama/SmolLM2
`q_proj` and `v_proj`, T5 (the tiny model) `q` and `v`, CodeT5+ 2B-16B's fused `qkv_proj`. A
checkpoint records every adapted layer's name and shape and loads only onto a model that has them.
"""
import contextlib
import math

import torch
from torch import nn

from prompts import Option, PromptMethod, count, register


@register
class LoRA(PromptMethod):
    kind, title, lr = "lora", "LoRA (attention)", 1e-3
    options = {"lora_rank": Option(8, "rank r of each low-rank update B A", type=count),
               "lora_alpha": Option(16.0, "scale: the update is (alpha / r) B A", type=float),
               "lora_targets": Option("q_proj,v_proj,q,v,qkv_proj", "comma-separated last names of the linear "
                                      "layers adapted (Llama: q_proj,v_proj; T5: q,v; CodeT5+ 2B-16B: qkv_proj)")}

    def __init__(self, C, s, lora_rank=8, lora_alpha=16.0, lora_targets="q_proj,v_proj,q,v,qkv_proj", shapes=None):
        super().__init__(C, s)
        self.rank, self.alpha, self.targets = lora_rank, float(lora_alpha), lora_targets
        self.scale = self.alpha / self.rank
        self.shapes = {}  # layer name -> [in, out], filled by build (here or at adapt)
        self.A, self.B = nn.ParameterDict(), nn.ParameterDict()
        if shapes:  # from a checkpoint: the layers are known before the model is
            self.build(shapes)

    @staticmethod
    def key(name):
        return name.replace(".", "/")  # a ParameterDict key may not hold a dot

    def build(self, shapes):
        """A (r x in), Kaiming-uniform as nn.Linear's own weights; B (out x r) zero: the update is 0."""
        for name, (d_in, d_out) in shapes.items():
            A = torch.empty(self.rank, d_in, device=self.C.device)
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))
            self.A[self.key(name)] = nn.Parameter(A)
            self.B[self.key(name)] = nn.Parameter(torch.zeros(d_out, self.rank, device=self.C.device))
        self.shapes = {name: list(shape) for name, shape in shapes.items()}

    def layers(self, model):
        """{name: the nn.Linear} of every layer of `model` that --lora-targets names."""
        names = set(self.targets.split(","))
        found = {name: m for name, m in model.named_modules()
                 if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in names}
        if not found:
            raise ValueError(f"lora: the model has no linear layer named {self.targets.replace(',', ' or ')}: pass "
                             "--lora-targets with the last names of its attention projections")
        return found

    def adapt(self, model):
        found = self.layers(model)
        shapes = {name: [m.in_features, m.out_features] for name, m in found.items()}
        if not self.shapes:
            self.build(shapes)
        elif shapes != self.shapes:
            raise ValueError("lora: the checkpoint's adapted layers do not match this model's: sample it with the "
                             "model it was trained on")
        return self._hooked(found)

    def delta(self, name, x):
        """(alpha / r) B A x for layer `name`, computed in the adapter's dtype (float32)."""
        A, B = self.A[self.key(name)], self.B[self.key(name)]
        return self.scale * (x.to(A.dtype) @ A.T) @ B.T

    @contextlib.contextmanager
    def _hooked(self, found):
        hooks = [m.register_forward_hook(lambda m, inputs, h, name=name: h + self.delta(name, inputs[0]).to(h.dtype))
                 for name, m in found.items()]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    def training_contexts(self, B, generator=None, score=None):
        return self.C  # the manual context, untouched: LoRA trains the model's weights instead

    @torch.inference_mode()
    def sample(self, k, generator=None):
        return self.C.expand(k, -1, -1).clone()

    def config(self):
        return super().config() | {"shapes": self.shapes}  # (its options are recorded by the base)
