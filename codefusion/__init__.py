"""CodeFusion (Singh et al. 2023), the second system: a diffusion model that writes the program itself,
on the same diffusion.py, data.py and metrics.py (docs/codefusion.md).

    data.py     the CodeFusion benchmarks (Python, Bash, CF rules) and their snippets
    model.py    encoder, denoiser, decoder, head; CPD masking; sampling
    train.py    pre-training, fine-tuning, ablations and the T5 baseline: python -m codefusion.train

May import the core; the core never imports it.
"""
