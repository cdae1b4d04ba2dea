"""train.py on the CPU gives the same checkpoint whatever the thread count (--reproducible, the tiny
model's default): three fresh processes with OMP_NUM_THREADS 1, 2 and 4, one seed, both methods."""
import os
import subprocess
import sys

import torch

from runtime import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--T", "50", "--r", "16", "--batch-size", "4", "--steps", "6", "--eval-every", "6"]


def tensors(obj, prefix=""):
    """Every tensor of a checkpoint (weights, optimizer state, noise stream), by its place in it."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    return {k: v for key, value in items for k, v in tensors(value, f"{prefix}/{key}").items()}


def test_the_checkpoints_do_not_depend_on_the_thread_count(cache, tmp_path):
    runs = {}
    for threads in ("1", "2", "4"):
        out = tmp_path / f"threads{threads}"
        env = dict(os.environ, DDPT_CACHE=str(cache), OMP_NUM_THREADS=threads)
        r = subprocess.run([sys.executable, "train.py", "--out", str(out), *SMALL], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[threads] = {m: tensors(checkpoint.load(out / "seed0" / f"{m}.pt")) for m in ("ddpt", "prompt-tuning")}
    for method, first in runs["1"].items():
        assert any(k.startswith("/weights/") for k in first) and any(k.startswith("/optimizer/") for k in first)
        for threads in ("2", "4"):
            other = runs[threads][method]
            assert other.keys() == first.keys()
            differ = [k for k in first if not torch.equal(first[k], other[k])]
            assert differ == [], f"{method} with {threads} threads: {differ[:5]}"
