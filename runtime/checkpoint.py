"""The run folder on disk: atomic checkpoints and text files, safe loading, the folder's lock.

Both systems (DDPT's train.py / sample.py and codefusion/train.py) write through here, so a crash,
a full disk or Ctrl-C never leaves a half-written file, and a damaged one is named when read.
A checkpoint is a dict of tensors, numbers and strings; every trained object keeps in it what it
needs to rebuild itself ("kind", "config", "weights"), as nanoGPT's checkpoints keep `model_args`,
and DDPT's checkpoints also the run's config ("run"), of which RUN is what sample.py rebuilds the
LLM and the data from.
"""
import contextlib
import fcntl
import json
import os
import pickle
import shutil
import sys

import torch

RUN = ("model", "prompt", "dtype", "device_map", "data", "data_dir", "split_seed", "max_code")


@contextlib.contextmanager
def atomic(path):
    """The one atomic write: yields a temporary path beside `path` (keeping its extension) for the block
    to write a file or a folder at, then renames it over `path`. If the block fails (a full disk,
    Ctrl-C), the temporary goes and whatever was at `path` stays whole."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".tmp-{name}")
    discard(tmp)
    try:
        yield tmp
        if os.path.isdir(tmp) and os.path.isdir(path):
            shutil.rmtree(path)  # (a folder cannot be renamed over a full one)
        os.replace(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def discard(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def write_atomic(path, text):
    with atomic(path) as tmp, open(tmp, "w") as f:
        f.write(text)


def save(obj, path):
    """torch.save, atomic: the previous checkpoint stays as it was if the write fails."""
    try:
        with atomic(path) as tmp:
            torch.save(obj, tmp)
    except OSError as e:
        raise OSError(f"could not write {path} ({e.strerror or e}): the previous checkpoint is kept; "
                      "free space (or fix the folder) and rerun with --resume") from None


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


def trim_log(out):
    """Drops log rows written after a method's last checkpoint: the resumed run writes them again.
    A last line cut off by the kill goes too (its step, logged before its checkpoint, is redone)."""
    path, saved, rows = os.path.join(out, "log.jsonl"), {}, []
    if not os.path.exists(path):
        return
    lines = open(path).read().splitlines()
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise ValueError(f"{path} line {i + 1} is damaged: repair or delete that line, then --resume") from None
    for method in {r["method"] for r in rows}:
        ckpt = os.path.join(out, f"{method}.pt")
        saved[method] = load(ckpt)["step"] if os.path.exists(ckpt) else 0
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= saved[r["method"]]))


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
