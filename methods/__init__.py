"""The prompt methods beyond the paper. Each module registers what it defines (prompts.register,
prompts.PICKS) when prompts.discover() imports it; the core (train.py, sample.py) never names one.

    mcl.py        DDPT-MCL: trained through its own sampler, K draws competing per pair
    cond.py       DDPT-Cond, DDPT-MCL-Cond: a denoiser that reads the instruction; guidance
    ddpt_pd.py    DDPT-PD: per-instance prompts learned from optimised targets; its regressor control
    soft.py       the soft prompt started from sampled vocabulary; the reparametrised one (DDPT's map, no noise)
    selector.py   "selected": a learned pick among a stochastic method's k draws
    rerank.py     two picks that need no training: consensus (MBR) and the reviewer p(instruction | code)
    lopa.py       LoPA: a shared soft prompt gated by a low-rank part computed from the instruction
    lora.py       LoRA: low-rank updates of the frozen LLM's attention weights, the ceiling (not a prompt)

May import the core (prompts, ddpt, diffusion, llm, data) and each other; nothing imports them but
prompts.discover() and the tests.
"""
