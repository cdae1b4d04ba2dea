"""Benchmarks of reproducibility across thread counts (bench.py runs them): the tiny pre-training and
train.py's fine-tuning, each in fresh processes under several OMP_NUM_THREADS, with the weights'
SHA-256 and the seconds that one thread costs.

    python -m tools.bench pretrain
    python -m tools.bench finetune
    python -m tools.bench isa
"""
import hashlib
import os
import subprocess
import sys
import tempfile
import time

from runtime import checkpoint


def pretrain_once(out, *, steps, fn="pretrain", **env):
    """(seconds, weights SHA-256) of the first `steps` of tiny.<fn> into `out`, in a fresh process with
    `env` added to the environment (OMP_NUM_THREADS, the kernels' code paths)."""
    kw = f"steps={steps}, n_pairs=20000, seed=0, batch_size=64, data_dir=None"
    code = f"from models import tiny; import time; t = time.time(); tiny.{fn}({out!r}, 'demo', {kw}); print(time.time() - t)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, **env), check=True)
    digest = hashlib.sha256(open(os.path.join(out, "model.safetensors"), "rb").read()).hexdigest()[:16]
    return float(run.stdout.split()[-1]), digest


def bench_pretrain(steps=500):
    """The first `steps` of the tiny pre-training (of 3,000), each in a fresh process: reproducible
    (one thread, deterministic algorithms) under OMP_NUM_THREADS=1 and 2, and as it was before
    (torch's threads) under 2. Prints seconds and the weights' SHA-256."""
    print(f"| tiny pre-training, first {steps} steps | OMP_NUM_THREADS | seconds | weights sha256 |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn, threads in (("reproducible (tiny.pretrain)", "pretrain", "1"),
                                  ("reproducible (tiny.pretrain)", "pretrain", "2"),
                                  ("torch's threads (tiny._pretrain alone)", "_pretrain", "2")):
            secs, digest = pretrain_once(os.path.join(tmp, f"{fn}{threads}"), steps=steps, fn=fn, OMP_NUM_THREADS=threads)
            print(f"| {name} | {threads} | {secs:.1f} | {digest} |")


def bench_finetune(steps=100):
    """train.py on the demo (tiny model, both methods, `steps` steps, seed 0) in fresh processes:
    --reproducible (one thread, deterministic algorithms; the tiny model's default on the CPU) under
    OMP_NUM_THREADS 1, 2 and 4, and --no-reproducible (torch's threads) under 1, 2 and 4. Prints
    seconds and a SHA-256 of DDPT's trained weights."""
    print(f"| train.py, demo, {steps} steps per method, seed 0 | OMP_NUM_THREADS | seconds | DDPT weights sha256 |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for flag in ("--reproducible", "--no-reproducible"):
            for threads in ("1", "2", "4"):
                out = os.path.join(tmp, f"{flag}{threads}")
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "train.py", flag, "--steps", str(steps), "--eval-every", str(steps),
                                "--out", out], env=dict(os.environ, OMP_NUM_THREADS=threads), capture_output=True, check=True)
                seconds = time.perf_counter() - t0
                weights = checkpoint.load(os.path.join(out, "seed0", "ddpt.pt"))["weights"]
                digest = hashlib.sha256(b"".join(w.numpy().tobytes() for w in weights.values())).hexdigest()[:16]
                print(f"| {flag} | {threads} | {seconds:.1f} | {digest} |", flush=True)


# The code paths another processor would take, forced on this one: ATen's vectorised kernels (AVX-512
# where the CPU has it, else AVX2) and MKL's (its own choice per processor; MKL_CBWR pins one).
PATHS = (("this CPU's own", {}), ("ATen AVX2 kernels", {"ATEN_CPU_CAPABILITY": "avx2"}),
         ("MKL pinned to AVX2", {"MKL_CBWR": "AVX2"}), ("MKL pinned to AVX-512", {"MKL_CBWR": "AVX512"}),
         ("both AVX2", {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}))


def bench_isa(steps=500):
    """The first `steps` of the reproducible tiny pre-training (one thread), each in a fresh process
    under the code paths of PATHS: a processor that takes another path pre-trains other weights,
    whatever the thread count. Prints seconds and the weights' SHA-256."""
    print(f"| tiny pre-training, first {steps} steps, 1 thread | environment | seconds | weights sha256 |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, env) in enumerate(PATHS):
            secs, digest = pretrain_once(os.path.join(tmp, str(i)), steps=steps, OMP_NUM_THREADS="1", **env)
            shown = " ".join(f"{k}={v}" for k, v in env.items()) or "(none)"
            print(f"| {name} | {shown} | {secs:.1f} | {digest} |", flush=True)
