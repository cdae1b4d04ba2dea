"""data.py on the real files in ../shared/data (skipped without it), the demo corpus and malformed input."""
import json
import os

import pytest

import data
from models import demo



def test_conala_from_shared_copy(shared):
    folder = shared("conala")
    s = data.load("conala", folder, seed=0)
    assert len(s["train"]) + len(s["valid"]) == 2378 and len(s["test"]) == 500  # the copy lacks one record
    raw = json.load(open(os.path.join(folder, "conala-test.json")))
    no_rewrite = next(i for i, r in enumerate(raw) if not r["rewritten_intent"])
    assert s["test"][no_rewrite]["nl"] == raw[no_rewrite]["intent"]  # the fallback
    assert s["test"][0]["nl"] == raw[0]["rewritten_intent"] and s["test"][0]["code"] == raw[0]["snippet"]
    again, other = data.load("conala", folder, seed=0), data.load("conala", folder, seed=1)
    assert again == s and other["valid"] != s["valid"]
    key = lambda split: {(p["nl"], p["code"], i) for i, p in enumerate(split)}
    assert len(s["valid"]) == 200 and not ({id(p) for p in s["train"]} & {id(p) for p in s["valid"]})
    assert len(key(s["train"])) == len(s["train"])


def test_codealpaca_input_joined_and_split(shared):
    folder = shared("codealpaca")
    s = data.load("codealpaca", folder, seed=0)
    raw = json.load(open(os.path.join(folder, "code_alpaca_2k.json")))
    assert sum(map(len, s.values())) == len(raw) == 2017
    with_input = next(r for r in raw if r["input"])
    assert {"nl": with_input["instruction"] + "\n" + with_input["input"], "code": with_input["output"]} in sum(s.values(), [])
    ids = [{(p["nl"], p["code"]) for p in s[k]} for k in ("train", "valid", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert data.load("codealpaca", folder, seed=0) == s


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="conala-train.json does not exist"):
        data.load("conala", str(tmp_path))
    (tmp_path / "conala-train.json").write_text("[{\"intent\": \"x\", \"snippet\": \"y\"},")
    with pytest.raises(ValueError, match="conala-train.json is not valid UTF-8 JSON"):
        data.load("conala", str(tmp_path))
    (tmp_path / "conala-train.json").write_text(json.dumps([{"intent": "a", "snippet": "b"}, {"intent": "c"}]))
    with pytest.raises(ValueError, match="record 1 has no text field 'snippet'"):
        data.load("conala", str(tmp_path))
    with pytest.raises(ValueError, match="unknown --data"):
        data.load("nope")


def test_offline_without_copy_says_which_data_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "CACHE", str(tmp_path))
    def offline(*a, **k):
        raise OSError("no network")
    monkeypatch.setattr(data.urllib.request, "urlretrieve", offline)
    with pytest.raises(ConnectionError, match="--data-dir .*shared/data/conala"):
        data.load("conala")


def test_demo_is_deterministic_and_held_out():
    a, b = demo.splits(0), demo.splits(0)
    assert a == b and a != demo.splits(1)
    train_nl = {p["nl"] for p in a["train"]}
    assert not any(p["nl"] in train_nl for p in a["test"])
    assert all(not demo.held_out(*p["combo"]) for p in a["train"])  # test combinations never trained on
    assert all(demo.held_out(*p["combo"]) for p in a["valid"] + a["test"])
    assert len({p["combo"] for p in a["test"]}) > 20
    assert len(demo.pretraining(3000)) == 3000


def test_truncation_is_counted():
    tok = data.build_tokenizer(["a b c d e f g"] * 10, vocab_size=280)
    ex, cut = data.encode([{"nl": "a b c", "code": "a b c d e f g " * 20}, {"nl": "a", "code": "b"}], tok, max_code=16)
    assert cut == 1 and len(ex[0][1]) == 16 and ex[0][1][-1] == tok.eos_token_id
    with pytest.raises(ValueError, match="split is empty"):
        data.encode([], tok)
