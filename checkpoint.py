"""The run folder on disk: atomic checkpoints and text files, safe loading, the folder's lock.

Both systems (DDPT's train.py / sample.py and codefusion/train.py) write through here, so a crash,
a full disk or Ctrl-C never leaves a half-written file, and a damaged one is named when read.
A checkpoint is a dict of tensors, numbers and strings; every trained object keeps in it what it
needs to rebuild itself ("kind", "config", "weights"), as nanoGPT's checkpoints keep `model_args`.
"""
import fcntl
import os
import pickle
import sys

import torch


def write_atomic(path, text):
    """Writes a temporary file beside `path`, then renames it over: a crash leaves the old file whole."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def save(obj, path):
    """torch.save, atomic: write a temporary file beside the target, then rename over it. If the write
    fails (a full disk, Ctrl-C), the temporary file goes and the previous checkpoint stays as it was."""
    tmp = f"{path}.tmp"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise OSError(f"could not write {path} ({e.strerror or e}): the previous checkpoint is kept; "
                          "free space (or fix the folder) and rerun with --resume") from None
        raise


def load(path):
    """Loads tensors, numbers and strings only: no arbitrary object is unpickled."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path}: train one first with train.py")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise ValueError(f"{path} is damaged ({str(e).splitlines()[0][:80]}): re-train it, "
                         "or restore it from a copy") from None


def check(ckpt, kind, config):
    """A checkpoint resumed by a run must hold the same kind of model with the same config (the
    module's own, and the run's: model, prompt ...)."""
    if ckpt.get("kind") != kind:
        raise ValueError(f"checkpoint holds a {ckpt.get('kind')!r} model, expected {kind!r}")
    held = ckpt.get("config", {}) | ckpt.get("run", {})
    for key, want in config.items():
        got = held.get(key)
        if got != want:
            raise ValueError(f"checkpoint has {key}={got} but this run has {key}={want}: resume with the "
                             f"options it was trained with (its config.json lists them)")


def lock(out):
    """The run folder's lock, held while the returned file is open (`with checkpoint.lock(out):`).
    The OS frees it however the process ends, kill -9 included, so a stale lock cannot exist; a second
    train.py or sample.py on the same folder is refused at once and touches nothing."""
    os.makedirs(out, exist_ok=True)
    f = open(os.path.join(out, ".lock"), "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "?"
        f.close()
        sys.exit(f"{out} is in use by another run (pid {owner}): wait for it to end, or pass another --out")
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f
