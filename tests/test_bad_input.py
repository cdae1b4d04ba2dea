"""Bad input, faults and interruptions: each ends in one line that says what to do (no traceback)
or in correct behaviour, and no file of a previous run changes. The command-line cases run as
subprocesses, the way a user meets them."""
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import metrics
import sample
import train
from runtime import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--T", "50", "--r", "16", "--batch-size", "4", "--eval-every", "3"]


def cli(cache, script, *args, popen=False, **streams):
    cmd = [sys.executable, script, *map(str, args)]
    env = dict(os.environ, DDPT_CACHE=str(cache))
    if popen:  # started, not waited for
        return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, **streams)
    return subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True, timeout=600)


def one_line_error(result, message):
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert message in result.stderr.strip().splitlines()[-1], result.stderr


def snapshot(folder):
    """Every file of a run and its hash (the lock file excepted: any run that asks for it writes its pid)."""
    return {os.path.join(d, f): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(folder) for f in sorted(files) if f != ".lock"}


@pytest.fixture(scope="module")
def previous(cache, tmp_path_factory):
    """A finished run that no bad command may change."""
    out = str(tmp_path_factory.mktemp("previous") / "run")
    train.main(["--out", out, "--steps", "3", *SMALL])
    return out


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "argument --n: must be at least 1, got 0"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["--steps", "-5"], "argument --steps: must be at least 1, got -5"),
    (["--lr", "0"], "--lr must be positive, got 0.0"),
    (["--lr", "fast"], "--lr fast: expected a rate (3e-4) or METHOD=RATE (lora=3e-4)"),
    (["--lr", "lora=1e-3"], "--lr lora=1e-3: lora is not trained in this run (--method ddpt prompt-tuning)"),
    (["--relax", "0.1"], "--relax is an option of --method ddpt-mcl or ddpt-mcl-cond, which this run does not train"),
    (["--p-uncond", "0.3"], "--p-uncond is an option of --method ddpt-cond or ddpt-mcl-cond or ddpt-pd, which this run does not train"),
    (["--method", "ddpt-mcl", "--chain", "60", "--resume"], "--chain must be between 1 and T = 50, got 60"),
    ([], "already holds a run: pass --resume to continue it, or another --out"),
    (["--reproducible", "--device", "cuda"], "--reproducible is for the CPU (one thread), not --device cuda: drop it"),
    (["--resume", "--n", "4"], "checkpoint has n=10 but this run has n=4"),
])
def test_train_refuses_bad_options(cache, previous, args, message):
    before = snapshot(previous)
    one_line_error(cli(cache, "train.py", "--out", previous, *SMALL, "--steps", "3", *args), message)
    assert snapshot(previous) == before


def test_resume_of_a_folder_without_a_run_stops(cache, tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "typo", tmp_path / "empty"):  # a mistyped --out, and an empty folder
        one_line_error(cli(cache, "train.py", "--out", out, *SMALL, "--steps", "3", "--resume"),
                       f"{out} holds no run to resume (no config.json): check --out, or drop --resume to start one")
    assert not (tmp_path / "typo").exists() and list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--limit", "0"], "argument --limit: must be at least 1, got 0"),
    (["--k", "0"], "argument --k: must be at least 1, got 0"),
    (["--guidance", "1"], "--guidance is an option of --method ddpt-cond or ddpt-mcl-cond or ddpt-pd, and"),
    (["--seed", "0", "7"], "--seed 7: "),
])
def test_sample_refuses_bad_options(cache, previous, args, message):
    before = snapshot(previous)
    one_line_error(cli(cache, "sample.py", "--out", previous, *args), message)
    assert snapshot(previous) == before


def test_a_second_run_on_the_same_folder_is_refused_at_once(cache, previous):
    before = snapshot(previous)
    with checkpoint.lock(previous):  # this process plays the run in progress
        for script, args in (("train.py", ["--resume", *SMALL, "--steps", "6"]), ("sample.py", [])):
            one_line_error(cli(cache, script, "--out", previous, *args),
                           f"{previous} is in use by another run (pid {os.getpid()}): wait for it to end")
    assert snapshot(previous) == before


def test_bad_data_and_model_folders(cache, tmp_path):
    empty, latin, broken = tmp_path / "empty", tmp_path / "latin", tmp_path / "model"
    for folder in (empty, latin, broken):
        folder.mkdir()
    for split in ("train", "test"):
        (empty / f"conala-{split}.json").write_text("[]")
        (latin / f"conala-{split}.json").write_bytes('[{"intent": "caf\u00e9", "snippet": "x"}]'.encode("latin-1"))
    (broken / "config.json").write_text('{"model_type": ')
    cases = [(["--data", "conala", "--data-dir", empty], f"{empty}/conala-train.json holds no records"),
             (["--data", "conala", "--data-dir", latin], f"{latin}/conala-train.json is not valid UTF-8 JSON"),
             (["--model", broken], f"cannot load the model folder {broken} ({broken}/config.json is not a valid config")]
    for i, (args, message) in enumerate(cases):
        one_line_error(cli(cache, "train.py", "--out", tmp_path / f"run{i}", *SMALL, *args), message)


def test_a_damaged_checkpoint_is_named(cache, previous, tmp_path):
    run = str(tmp_path / "damaged")
    shutil.copytree(previous, run, ignore=shutil.ignore_patterns(".lock"))
    with open(os.path.join(run, "seed0", "ddpt.pt"), "r+b") as f:
        f.truncate(os.path.getsize(os.path.join(run, "seed0", "ddpt.pt")) // 2)
    message = f"{run}/seed0/ddpt.pt is damaged"
    one_line_error(cli(cache, "sample.py", "--out", run), message)
    one_line_error(cli(cache, "train.py", "--out", run, "--resume", *SMALL, "--steps", "6"), message)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "ddpt.pt")
    checkpoint.save({"step": 1}, path)
    before = open(path, "rb").read()

    def disk_full(obj, f):
        open(f, "wb").write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match=r"could not write .*ddpt.pt \(No space left on device\): the previous "
                                      r"checkpoint is kept"):
        checkpoint.save({"step": 2}, path)
    assert open(path, "rb").read() == before and not os.path.exists(path + ".tmp")


def test_ctrl_c_keeps_whole_checkpoints_and_a_partial_run_samples(cache, tmp_path):
    run = tmp_path / "interrupted"
    log = open(tmp_path / "stderr.txt", "w+")  # a file, not a pipe: a full pipe would stall the run
    proc = cli(cache, "train.py", "--out", run, *SMALL, "--steps", "100000", "--eval-every", "2",
               popen=True, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 300
    while not (run / "seed0" / "ddpt.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert "interrupted: the checkpoints written so far are kept" in err.strip().splitlines()[-1]
    step = checkpoint.load(run / "seed0" / "ddpt.pt")["step"]  # whole: it loads
    assert step >= 2 and not (run / "seed0" / "ddpt.pt.tmp").exists()

    # only DDPT has a checkpoint, and it is from step `step` of 100000: sampled with a note
    result = cli(cache, "sample.py", "--out", run, "--limit", "4", "--k", "2", "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert f"ddpt.pt is from step {step} of 100000: train.py --resume finishes it" in result.stdout
    table = (run / "results.md").read_text()
    assert "DDPT (DDPM-50) top-1" in table and "soft prompt tuning" not in table

    # --resume goes on from the checkpoint, and the log holds every step once
    result = cli(cache, "train.py", "--out", run, *SMALL, "--steps", step + 2, "--method", "ddpt", "--resume")
    assert result.returncode == 0, result.stderr
    steps = [json.loads(line)["step"] for line in open(run / "seed0" / "log.jsonl")]
    assert steps == list(range(1, step + 3)), steps


def test_sample_without_a_run(cache, tmp_path):
    with pytest.raises(SystemExit, match="no run in"):
        sample.main(["--out", str(tmp_path / "nothing")])
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "config.json").write_text("{}")
    (tmp_path / "started" / "seed0").mkdir()
    (tmp_path / "started" / "seed0" / "mine.pt").write_bytes(b"")
    with pytest.raises(SystemExit, match="no checkpoint in .*started yet"):
        sample.main(["--out", str(tmp_path / "started")])


def test_checkpoints_of_two_runs_are_refused(cache, previous, tmp_path):
    run = str(tmp_path / "mixed")
    shutil.copytree(previous, run, ignore=shutil.ignore_patterns(".lock"))
    ckpt = checkpoint.load(os.path.join(run, "seed0", "ddpt.pt"))
    ckpt["run"]["prompt"] = "Python:"
    checkpoint.save(ckpt, os.path.join(run, "seed0", "ddpt.pt"))
    one_line_error(cli(cache, "sample.py", "--out", run), "come from different runs")


def test_degenerate_metric_input_follows_the_package():
    """An empty reference, and one identifier against 100,000 characters of one identifier: the
    package's numbers (its structural halves see a bare name in both). Where the candidate misses
    real reference data flow, ours counts 0 and the package 1 (its `or 1`): see the README."""
    from codebleu import calc_codebleu
    for hyp, ref in ((["x = 1"], [""]), (["a" * 100_000], ["a"])):
        assert metrics.evaluate(hyp, ref)["codebleu"] == pytest.approx(calc_codebleu(ref, hyp, lang="python")["codebleu"])
    assert metrics.evaluate(["x = 1"], [""])["codebleu"] == 0.25
    assert metrics.evaluate([""], ["x = 1"])["codebleu"] == 0.0


def test_lr_takes_one_rate_or_a_rate_per_method():
    import train
    both = ["ddpt", "prompt-tuning"]
    assert train.rates([], both) == {}  # each method's own default
    assert train.rates(["0.1"], both) == {"ddpt": 0.1, "prompt-tuning": 0.1}
    assert train.rates(["ddpt=1e-4", "prompt-tuning=0.1"], both) == {"ddpt": 1e-4, "prompt-tuning": 0.1}
    assert train.rates(["ddpt=1e-4"], both) == {"ddpt": 1e-4}
