"""The prompt-method interface and its registry, and soft prompt tuning (Lester et al. 2021), its simplest member.

Every prompt method produces contexts, n x d embeddings placed before the instruction, and starts
exactly at the manual prompt's context C = E[c] (s = RMS of the embedding table, the natural step):

    context = C + s * x0        x0 = 0 at initialisation: the manual prompt

train.py and sample.py see a method only through these members:

    kind, title, lr                     registry name (--method, checkpoint file), table row, default rate
    stochastic                          its k draws differ: sample.py adds best-of-k, pick and oracle rows
    conditional                         it reads the instruction: training_contexts(..., features) and
                                        sample(..., features=) get the pairs' llm.instruction_features,
                                        and sample returns (k, N, n, d), k prompts for each of N pairs
    options                             {name: Option}: its own command-line options. when="train": a
                                        constructor keyword, saved in the checkpoint; when="sample": a
                                        keyword of sample() and label(). Inherited; None removes one.
    Method.from_config(C, s, cfg)       a new module from train.py's config (its "train" options' values)
    module.training_contexts(B, g, score)
                                        contexts (B, n, d) or (n, d) for one training step, with gradients;
                                        score(contexts (B, n, d)) -> the batch's B per-pair losses, no
                                        gradients, for a method that chooses among draws (methods/mcl.py)
                                        (also module(B, g, score), the call that DDP wraps)
    module.sample(k, generator, **sample options)
                                        k contexts (k, n, d) for test time
    module.label(**sample options)      the name of its rows
    module.checkpoint()                 {"kind", "config", "weights"}: all it needs to rebuild itself
    Method.from_checkpoint(ckpt)        the module again, from that dict alone
    module.fit(model=, tok=, examples=, features=, generator=, cache=)
                                        optional: run after train.py's loop by a method that also learns
                                        from targets that its loop's result makes (methods/ddpt_pd.py);
                                        returns a report for the log, or None if there was nothing to do
    module.oracle(model, tok, examples) optional: (a row name, contexts (N, n, d)) fitted to the test
                                        pairs' references, an upper bound sample.py scores beside the rows
    control                             a one-row method that is another's control (DDPT-PD's regressor):
                                        the tables compare stochastic methods' top-1 rows with it too
    module.adapt(model)                 a context manager under which the LLM carries the method's own
                                        change to it (methods/lora.py); a prompt changes nothing. Called
                                        before the optimiser is made: the module may build its parts here

The trained parameters are the module's `parameters()`; C rides along as a buffer. A method is known
by `register`-ing its class in METHODS; train.py and sample.py call `discover()`, which imports every
module of the methods/ folder (each registers its own), so the core names no method beyond the paper.
PICKS holds the ways of choosing one of a stochastic method's k draws per test pair (sample.py).
"""
import argparse
import contextlib
import sys
from dataclasses import dataclass

import torch
from torch import nn

import data


def spread(x0):
    """How different k prompt directions x0 (k, D) are. The mean pairwise cosine hides a lot (DDPT-MCL on
    the demo: 0.9998 where 77.5% of test pairs get different code), so also the scatter against the
    common part and the number of directions it spans:

        rms_spread    = sqrt(mean_k |x0_k - m|^2) / |m|,   m = mean_k x0_k      (0: one prompt)
        participation = (sum_j l_j)^2 / sum_j l_j^2,  l_j the eigenvalues of the draws' covariance
                        (1: they vary along one direction; k - 1 at most; noise alone if rms_spread ~ 0)

    For (k, N, D), the k prompts of each of N instructions (cond.py): each number is the mean over the
    instructions, and across_instructions is the rms spread of the N first draws, how far the prompt
    moves with the instruction.
    """
    if x0.dim() == 3:
        each = [spread(x0[:, i]) for i in range(x0.shape[1])]
        mean = {key: sum(e[key] for e in each) / len(each) if None not in [e[key] for e in each] else None
                for key in each[0]}
        return mean | {"across_instructions": spread(x0[0])["rms_spread"]}
    x0 = x0.double()
    k, m = x0.shape[0], x0.mean(0)
    unit = nn.functional.normalize(x0, dim=-1)
    dev = x0 - m
    lam = torch.linalg.svdvals(dev) ** 2
    return {"mean_pairwise_cosine": (unit @ unit.T)[torch.triu_indices(k, k, 1).unbind()].mean().item() if k > 1 else 1.0,
            "direction_norm": x0.norm(dim=-1).mean().item(),
            "rms_spread": (dev.pow(2).sum(1).mean().sqrt() / m.norm()).item() if m.norm() > 0 else None,
            "participation": (lam.sum() ** 2 / lam.pow(2).sum()).item() if lam.sum() > 0 else None}


def count(text):
    """argparse type of sizes and step counts: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


@dataclass(frozen=True)
class Option:
    """One command-line option of a method. when: "train" (train.py) or "sample" (sample.py); flag:
    the command-line name if not --<name> with dashes; suffix: a sampling option whose value is not
    the default writes results<-suffix value>.md, beside (never over) the default's."""
    default: object
    help: str
    type: object = None
    when: str = "train"
    choices: tuple = None
    flag: str = None
    metavar: str = None
    suffix: str = None

    def name_on_command_line(self, name):
        return self.flag or "--" + name.replace("_", "-")

    def same_as(self, other):
        """None if `other` reads and defaults as this one on the command line, else what differs."""
        return next((field for field in ("default", "type", "when", "choices", "flag")
                     if getattr(self, field) != getattr(other, field)), None)


METHODS = {}  # kind -> class, in the order registered
PICKS = {}  # name -> pick(draws) -> (the draw chosen for each test pair, a report dict or None)


def register(cls):
    """Class decorator: makes a method known to train.py and sample.py by its kind. Option names are
    shared by every method on the command line, so a name declared again must mean the same option."""
    for name, opt in cls.declared().items():
        for kind, other in METHODS.items():
            theirs = other.declared().get(name)
            if kind != cls.kind and theirs is not None and theirs.same_as(opt) is not None:
                raise TypeError(f"{cls.__name__} declares option {name!r} with another {theirs.same_as(opt)} "
                                f"than {kind!r} does: rename it (e.g. {cls.kind.replace('-', '_')}_{name})")
    METHODS[cls.kind] = cls
    return cls


def discover():
    """Imports every module of the methods/ folder once; each registers what it defines."""
    data.discover("methods")


def options(when):
    """{name: (Option, [the kinds that declare it])} over every registered method, the first
    declaration of a name giving its Option."""
    out = {}
    for kind, cls in METHODS.items():
        for name, opt in cls.declared(when).items():
            out.setdefault(name, (opt, []))[1].append(kind)
    return out


def add_options(parser, when):
    """Every registered method's `when` options on an argparse parser, each once."""
    for name, (opt, kinds) in options(when).items():
        parser.add_argument(opt.name_on_command_line(name), dest=name, default=opt.default, type=opt.type,
                            choices=opt.choices, metavar=opt.metavar, help=f"{kinds[0]}: {opt.help}")


def unused_option(args, when, used):
    """('--flag', [its owners]) of the first `when` option whose value is not its default and that no
    method in `used` declares (it would change nothing: the caller says so); None if there is none."""
    for name, (opt, kinds) in options(when).items():
        if getattr(args, name) != opt.default and not set(kinds) & set(used):
            return opt.name_on_command_line(name), kinds
    return None


def rates(values, methods):
    """train.py's --lr values -> {method: rate}: one RATE for every method trained, or METHOD=RATE pairs."""
    out = {}
    for value in values:
        method, _, rate = value.rpartition("=")
        try:
            rate = float(rate)
        except ValueError:
            sys.exit(f"--lr {value}: expected a rate (3e-4) or METHOD=RATE (lora=3e-4)")
        if not rate > 0:
            sys.exit(f"--lr must be positive, got {rate}")
        if len(values) == 1 and not method:  # one rate for every method
            return dict.fromkeys(methods, rate)
        if method not in methods:
            sys.exit(f"--lr {value}: {method or 'a rate without METHOD='} is not trained in this run "
                     f"(--method {' '.join(methods)}): give one rate, or METHOD=RATE for a trained method")
        out[method] = rate
    return out


class PromptMethod(nn.Module):
    kind = title = lr = None
    options = {}
    stochastic = False  # True: k draws differ, and sample.py adds best-of-k and oracle rows
    conditional = False  # True: its prompts depend on the instruction's features (cond.py)
    control = False  # True: the top-1 rows are compared with its row too (methods/ddpt_pd.py's regressor)

    def __new__(cls, *args, **options):
        module = super().__new__(cls)
        module.given = options  # the constructor's keywords, as given: `config` records them
        return module

    def __init__(self, C, s):
        super().__init__()
        self.register_buffer("C", C.detach().float().clone())  # the manual context (n, d)
        self.s = float(s)
        self.n, self.d = C.shape

    @classmethod
    def declared(cls, when=None):
        """{name: Option} of this class and its bases (a subclass's None removes an inherited one)."""
        out = {}
        for klass in reversed(cls.__mro__):
            for name, opt in vars(klass).get("options", {}).items():
                if opt is None:
                    out.pop(name, None)
                else:
                    out[name] = opt
        return {name: opt for name, opt in out.items() if when in (None, opt.when)}

    @classmethod
    def from_config(cls, C, s, cfg):
        return cls(C, s, **{name: cfg[name] for name in cls.declared("train")})

    def config(self):
        """The constructor's arguments but C (its shape instead): saved in every checkpoint, and what
        `from_checkpoint` rebuilds the module with. Every declared "train" option is recorded (its
        value as given to the constructor, else its default); a subclass adds anything else it needs."""
        given = {name: value for name, value in self.given.items() if name != "s"}
        return {"n": self.n, "d": self.d, "s": self.s} | {name: opt.default for name, opt in
                                                          self.declared("train").items()} | given

    def prompt(self, x0):
        """context = C + s * x0, for a batch of flat directions x0 (B, n*d) -> (B, n, d)."""
        return self.C + self.s * x0.view(-1, self.n, self.d)

    def directions(self, contexts):
        """The inverse of `prompt`: x0 = (context - C) / s, flat (..., n*d)."""
        return ((contexts - self.C) / self.s).flatten(-2)

    def forward(self, B, generator=None, score=None, features=None):
        """training_contexts, as the module's call: what DistributedDataParallel wraps (runtime/distributed.py)."""
        return self.training_contexts(B, generator, score, *([features] if self.conditional else []))

    def adapt(self, model):
        """A context manager under which `model` carries this method's change to the LLM itself: none
        for a prompt. train.py trains and sample.py generates inside it."""
        return contextlib.nullcontext()

    def label(self, **sample_options):
        """The name of this method's rows in the tables."""
        return self.title

    def checkpoint(self):
        return {"kind": self.kind, "config": self.config(), "weights": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt):
        config = dict(ckpt["config"])
        module = cls(torch.zeros(config.pop("n"), config.pop("d")), **config)
        module.load_state_dict(ckpt["weights"])  # C included
        return module


@register
class SoftPrompt(PromptMethod):
    """The n x d context itself is the parameter, initialised at the manual context C."""
    kind, title, lr = "prompt-tuning", "soft prompt tuning", 3e-2

    def __init__(self, C, s):
        super().__init__(C, s)
        self.context = nn.Parameter(self.C.clone())

    def training_contexts(self, B, generator=None, score=None):
        return self.context

    @torch.inference_mode()
    def sample(self, k, generator=None):
        return self.context.detach().expand(k, -1, -1).clone()
