"""LoPA-style instance-conditioned prompt (Jain et al., NeurIPS 2024, "Prompt Tuning Strikes Back"):
a shared soft prompt combined through a gate with a low-rank part computed from each instruction.

    Z(q)   = Z_S * g(Z_I(q))                 elementwise; Z_S (n x d): the shared soft prompt, from C
    Z_I(q) = U(q) V(q)                       rank rho: U(q) (n x rho), V(q) (rho x d)
    U(q)   = reshape(W_u h(q)),  V(q) = reshape(W_v h(q)),   h(q) = tanh(W_h LN(f(q)) + b_h)
    g(z)   = 2 sigmoid(z)                    (LoPA's gate is sigmoid(z); the factor 2 makes g(0) = 1)

f(q): the instruction's frozen summary, `llm.instruction_features` (the encoder's states averaged over
its tokens for an encoder-decoder LLM, its input embeddings averaged for a decoder-only one), LN without
scale or shift as in methods/cond.py. W_u starts at zero, so Z_I = 0, g = 1 and an untrained LoPA is
exactly the manual prompt for every instruction; Z_S starts at C, as soft prompt tuning does
(prompts.SoftPrompt). The per-instance part is low-rank, as LoPA's, so that its head W_v stays small
(hidden x rho*d) and the instruction can only bend the shared prompt, not replace it.

Deterministic: one prompt per instruction, no draws. It reads the instruction (`conditional`), so
train.py hands training_contexts the batch's features and sample.py the test pairs'.
"""
import torch
from torch import nn

from prompts import Option, PromptMethod, count, register


@register
class LoPA(PromptMethod):
    kind, title, lr = "lopa", "LoPA (instance-conditioned prompt)", 3e-3
    conditional = True
    options = {"lopa_rank": Option(4, "rank rho of the per-instance part Z_I(q) = U(q) V(q)", type=count),
               "lopa_hidden": Option(256, "width of h(q), the instruction's encoding", type=count)}

    def __init__(self, C, s, lopa_rank=4, lopa_hidden=256, feature_dim=None):
        super().__init__(C, s)
        self.rank, self.hidden, self.feature_dim = lopa_rank, lopa_hidden, feature_dim or self.d
        self.shared = nn.Parameter(self.C.clone())  # Z_S
        self.ln = nn.LayerNorm(self.feature_dim, elementwise_affine=False)
        self.encode = nn.Linear(self.feature_dim, lopa_hidden)  # W_h, b_h
        self.U = nn.Linear(lopa_hidden, self.n * lopa_rank)  # W_u: zero, so Z_I = 0 at first
        self.V = nn.Linear(lopa_hidden, lopa_rank * self.d)  # W_v
        nn.init.zeros_(self.U.weight)
        nn.init.zeros_(self.U.bias)

    def contexts(self, features):
        """Z(q) (N, n, d) for N instructions' features (N, feature_dim)."""
        h = torch.tanh(self.encode(self.ln(features.to(self.shared))))
        N = len(features)
        Z_I = self.U(h).view(N, self.n, self.rank) @ self.V(h).view(N, self.rank, self.d)
        return self.shared * 2 * torch.sigmoid(Z_I)

    def training_contexts(self, B, generator=None, score=None, features=None):
        if features is None or len(features) != B:
            raise ValueError(f"{self.kind} needs the features of the batch's {B} instructions (llm.instruction_features)")
        return self.contexts(features)

    @torch.inference_mode()
    def sample(self, k, generator=None, *, features=None):
        """The one prompt of each of N instructions, k times (k, N, n, d): the method draws nothing."""
        if features is None:
            raise ValueError(f"{self.kind} makes a prompt for each instruction: pass their features "
                             "(llm.instruction_features)")
        return self.contexts(features).expand(k, -1, -1, -1).clone()

    def config(self):
        return super().config() | {"feature_dim": self.feature_dim}  # (its options are recorded by the base)
