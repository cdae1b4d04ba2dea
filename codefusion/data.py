"""The CodeFusion benchmarks (Singh et al. 2023): Python, Bash and conditional-formatting rules, each
with its code-only snippets for pre-training; read from a local copy (--data-dir) or downloaded once
into the cache, checked as data.py checks every file."""
import os

import data

CODEFUSION = "https://raw.githubusercontent.com/microsoft/prose-benchmarks/main/CodeFusion/"
CF_FILES = {"python": ("PythonBenchmarks.json", None), "bash": ("BashBenchmarks.json", "BashSnippets.txt"),
            "cf": ("CFRuleBenchmarks.json", "ConditionalFormattingSnippets.txt")}


def load(lang, data_dir=None, seed=0, alpaca_dir=None):
    """{"train", "valid", "test"} pairs and "snippets" (code only, for pre-training) of one language.
    Python has no snippet file: the code of its training pairs, plus CodeAlpaca's answers when
    `alpaca_dir` is given. Validation: 5% of train, carved by seed."""
    if lang not in CF_FILES:
        raise ValueError(f"unknown CodeFusion language {lang!r}: use python, bash or cf")
    bench, snips = CF_FILES[lang]
    folder = data_dir or os.path.join(data.CACHE, "data", "codefusion")
    for f in filter(None, (bench, snips)):
        if not data_dir and not os.path.exists(os.path.join(folder, f)):
            os.replace(data.fetch(CODEFUSION + f, folder, "codefusion"), os.path.join(folder, f))
    path = os.path.join(folder, bench)
    raw = data.read_json(path)
    splits, no_nl = {}, []  # a pair without an utterance (CoNaLa's null intents) can only be a snippet
    for k in ("train", "test"):
        recs = data.fields(raw.get(k), f"{path} [{k}]", ["Code"])
        splits[k] = [{"nl": r["NL Utterance"].strip(), "code": r["Code"].strip()} for r in recs
                     if isinstance(r.get("NL Utterance"), str)]
        no_nl += [r["Code"].strip() for r in recs if not isinstance(r.get("NL Utterance"), str)]
    splits["valid"], splits["train"] = data.split_pairs(splits["train"], [0.05, 0.95], seed)
    if snips:
        with open(os.path.join(folder, snips), encoding="utf-8") as f:
            splits["snippets"] = [line.strip() for line in f if line.strip()]
    else:
        splits["snippets"] = [p["code"] for p in splits["train"]] + no_nl
        if alpaca_dir:
            splits["snippets"] += [p["code"] for p in data.load("codealpaca", alpaca_dir, seed)["train"]]
    return splits
