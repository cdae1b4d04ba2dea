"""tools/ladder.py: the protocol end to end on the tiny model (a sweep, two seeds, the records, the table)."""
import json
import os

import pytest

from evaluation.tables import seed_summary
from tools import ladder


def test_the_ladder_sweeps_runs_seeds_and_tables_from_its_records(cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DDPT_CACHE", str(cache))
    monkeypatch.setattr(ladder, "SETTINGS", ["--batch-size", "4", "--steps", "2", "--eval-every", "2"])
    monkeypatch.setattr(ladder, "OWN", {"ddpt-pd-mlp": ["--pd-pairs", "8", "--pd-steps", "2", "--fit-steps", "20", "--r", "8"]})
    monkeypatch.setattr(ladder, "SAMPLING", ["--limit", "6", "--max-new-tokens", "8", "--k", "2", "--select-pairs", "8"])
    monkeypatch.setattr(ladder, "RUNGS", {"prompt-tuning": [3e-2, 1e-1], "ddpt-pd-mlp": None})
    monkeypatch.setattr(ladder, "ASKED", [("ddpt-pd-mlp", "prompt-tuning")])  # the line beside the table: as its row
    record, out = tmp_path / "record", tmp_path / "runs"
    monkeypatch.setattr(ladder, "figure", lambda *a: None)
    ladder.main(["--seeds", "0", "1", "--out", str(out), "--record", str(record)])
    sweep = json.load(open(record / "sweep.json"))
    best = min((3e-2, 1e-1), key=lambda lr: sweep[f"prompt-tuning={lr:g}"]["loss"])
    assert f"**{best:g}: {sweep[f'prompt-tuning={best:g}']['loss']:.4f}**" in capsys.readouterr().out  # the sweep's table
    assert set(sweep) == {"prompt-tuning=0.03", "prompt-tuning=0.1"}
    assert sorted(os.listdir(record)) == ["ladder.md", "seed0", "seed1", "sweep.json"]
    costs = json.load(open(record / "seed1" / "costs.json"))
    assert costs["ddpt-pd-mlp"]["params"] > costs["prompt-tuning"]["params"] > 0 and costs["prompt-tuning"]["train_secs"] > 0
    text, stats, seeds = ladder.table(str(record))
    assert seeds == [0, 1] and "| DDPT-PD regressor |" in text and "| soft prompt tuning |" in text
    rows = [{r["method"]: r for r in json.load(open(record / f"seed{s}" / "results.json"))["rows"]} for s in (0, 1)]
    assert stats["DDPT-PD regressor"]["bleu4"] == [r["DDPT-PD regressor"]["bleu4"] for r in rows]
    (mean, low, high), up, down, n = stats["DDPT-PD regressor"]["vs"]["bleu4"]
    diffs = [r["DDPT-PD regressor"]["bleu4"] - r["soft prompt tuning"]["bleu4"] for r in rows]
    assert n == 2 and (mean, low, high) == pytest.approx(seed_summary(diffs)) and up + down <= 2
    assert stats["DDPT-PD regressor"]["asked"]["soft prompt tuning"] == stats["DDPT-PD regressor"]["vs"]
    assert "DDPT-PD regressor − soft prompt tuning (as above" in text and f"Δ bleu4 {mean:+.3f} [{low:+.3f}, {high:+.3f}]" in text
    capsys.readouterr()
    ladder.main(["--headline", "--record", str(record)])  # the README's rows: the rungs' first rows, no picks
    shown = capsys.readouterr().out
    assert "| manual prompt | 0 |" in shown and "| DDPT-PD regressor |" in shown and "| soft prompt tuning |" in shown
    assert f"{mean:+.3f} [{low:+.3f}, {high:+.3f}] {up}↑ {down}↓ of 2" in shown and "best-of" not in shown
    mtime = os.path.getmtime(record / "seed0" / "costs.json")
    ladder.main(["--seeds", "0", "--out", str(out), "--record", str(record)])  # finished: read, not run again
    assert os.path.getmtime(record / "seed0" / "costs.json") == mtime
