"""Two more soft prompts, the rungs between soft prompt tuning and DDPT on the ladder (tools/ladder.py):

    prompt-tuning-vocab   soft prompt tuning started at n tokens sampled from the vocabulary instead of
                          the manual prompt (PEFT's PromptTuningInit.SAMPLE_VOCAB: token ids uniform over
                          the embedding table's rows, their embeddings the start), which PEFT's benchmark
                          found worth more than a random start
    reparam               DDPT's network without the noise: the same zero-initialised map from r dims to
                          D = n*d, fed a learned constant instead of a noisy prompt and a timestep,

                              context = C + s x0,   x0 = W_out blocks(u) + b_out,   u (r) learned, N(0, I) at first

                          W_out and b_out start at zero, so an untrained one is the manual prompt, as DDPT.
                          It has DDPT's capacity less W_in and the time MLP: if it scores as DDPT does,
                          the diffusion adds nothing but a reparametrisation of one prompt.
"""
import torch
from torch import nn

import llm
from ddpt import DDPT, Block
from prompts import PromptMethod, SoftPrompt, register


@register
class VocabSoftPrompt(SoftPrompt):
    """SoftPrompt whose context starts at the embeddings of n token ids drawn uniformly from the vocabulary
    (the global generator, seeded per method by train.py), drawn when the LLM is first at hand (`adapt`)."""
    kind, title = "prompt-tuning-vocab", "soft prompt tuning, vocabulary start"

    def __init__(self, C, s):
        super().__init__(C, s)
        self.register_buffer("drawn", torch.zeros((), dtype=torch.bool))  # the start is drawn once, never at sampling

    def adapt(self, model):
        if not self.drawn:
            E = llm.embeddings(model)
            ids = torch.randint(0, E.shape[0], (self.n,))
            with torch.no_grad():
                self.context.copy_(E[ids.to(E.device)].float())
            self.drawn.fill_(True)
        return super().adapt(model)


@register
class Reparam(PromptMethod):
    kind, title, lr = "reparam", "reparametrised soft prompt (DDPT's map, no noise)", 3e-5
    options = {name: DDPT.options[name] for name in ("r", "blocks")}  # the capacity of DDPT's denoiser

    def __init__(self, C, s, *, r=512, blocks=2):
        super().__init__(C, s)
        self.u = nn.Parameter(torch.randn(r))
        self.blocks = nn.Sequential(*(Block(r) for _ in range(blocks)))
        self.out = nn.Linear(r, self.n * self.d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def training_contexts(self, B, generator=None, score=None):
        return self.prompt(self.out(self.blocks(self.u)))[0]

    @torch.inference_mode()
    def sample(self, k, generator=None):
        return self.training_contexts(k).expand(k, -1, -1).clone()
