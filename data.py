"""Data: the registry of data sets, CoNaLa and CodeAlpaca; tokenizers, tokenization, padding and batching.

A pair is {"nl": instruction, "code": reference code}. `load(name)` returns deterministic,
disjoint {"train", "valid", "test"} splits; `encode` + `collate` turn pairs into padded tensors,
inside the tokenizer's chat template when it has one (`chat_parts`). A data set is known by its
`register`-ed loader, name -> Dataset in DATASETS, as a method is known by prompts.register: the
core's two here, the others in the tasks/ folder (the offline demo, HumanEval), which `discover()`
imports. `--data` offers every entry; no other core file names one.
"""
import functools
import importlib.metadata
import json
import os
import pkgutil
import random
import urllib.request
from dataclasses import dataclass

import torch

CACHE = os.environ.get("DDPT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ddpt"))
SOURCES = {  # the official releases, downloaded once into the cache when no --data-dir is given
    "conala": ("https://www.phontron.com/download/conala-corpus-v1.1.zip", "conala-corpus/"),
    "codealpaca": ("https://raw.githubusercontent.com/sahil280114/codealpaca/master/data/code_alpaca_20k.json", ""),
}


def read_json(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: check --data-dir")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # the latter: not UTF-8 text
        raise ValueError(f"{path} is not valid UTF-8 JSON ({e}): re-download it or pass another --data-dir") from None


def fields(records, path, need):
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise ValueError(f"{path} holds no records: re-download it or pass another --data-dir")
    for i, r in enumerate(records):
        for field in need:
            if not isinstance(r, dict) or not isinstance(r.get(field), str):
                raise ValueError(f"{path}: record {i} has no text field {field!r}")
    return records


def fetch(url, folder, name):
    """Download `url` to folder/download.tmp; offline, a clear error (and no empty folder left)."""
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, "download.tmp")
    try:
        urllib.request.urlretrieve(url, tmp)
    except OSError as e:
        os.rmdir(folder) if not os.listdir(folder) else None
        raise ConnectionError(f"cannot download {name} ({e.__class__.__name__}): pass a local copy with "
                              f"--data-dir (for example ../shared/data/{name})") from None
    return tmp


def _download(name):
    """The original files in the cache."""
    url, inner = SOURCES[name]
    folder = os.path.join(CACHE, "data", name)
    if os.path.isdir(folder) and os.listdir(folder):
        return folder
    tmp = fetch(url, folder, name)
    if url.endswith(".zip"):
        import zipfile
        with zipfile.ZipFile(tmp) as z:
            for member in ("conala-train.json", "conala-test.json"):
                with open(os.path.join(folder, member), "wb") as f:
                    f.write(z.read(inner + member))
        os.remove(tmp)
    else:
        os.replace(tmp, os.path.join(folder, os.path.basename(url)))
    return folder


def split_pairs(pairs, fractions, seed):
    """Shuffle by seed, then cut: deterministic and disjoint."""
    idx = list(range(len(pairs)))
    random.Random(seed).shuffle(idx)
    out, start = [], 0
    for frac in fractions:
        end = start + round(frac * len(pairs))
        out.append([pairs[i] for i in idx[start:end]])
        start = end
    out[-1] += [pairs[i] for i in idx[start:]]
    return out


@dataclass(frozen=True)
class Dataset:
    """What the scripts know of a data set, declared beside its loader (`register`)."""
    load: object  # load(data_dir, seed) -> {"train", "valid", "test"} lists of pairs ({"test"} alone if test_only)
    prompt: str = None  # its own manual prompt (the demo's vague one); None: the model's (llm.default_prompt)
    program: object = None  # program(pair, code) -> the evaluation.execution.Program that checks the code
    column: str = "exec"  # the table's column of the share of programs that pass
    metrics: tuple = ()  # names of metrics.py functions f(gens, refs) scored as extra columns (CoNaLa's own BLEU)
    report: object = None  # report(setup, res, generate) -> a seed's extra results (HumanEval's pass@k)
    test_only: bool = False  # an evaluation set: sample.py --data, never train.py --data
    max_nl: int = 128  # instruction tokens kept


DATASETS = {}  # name -> Dataset, in the order registered


def register(name, **declared):
    """Decorator of a loader: makes the data set `name` known to train.py and sample.py (`Dataset`'s fields)."""
    def add(loader):
        DATASETS[name] = Dataset(load=loader, **declared)
        return loader
    return add


def discover(folder="tasks"):
    """Imports every module of one folder of the repository once: each module of tasks/ registers its
    data sets (and each of methods/ its prompt methods: prompts.discover)."""
    for module in pkgutil.iter_modules([os.path.join(os.path.dirname(os.path.abspath(__file__)), folder)]):
        importlib.import_module(f"{folder}.{module.name}")


def names(use):
    """The data sets a script offers: "train" (train.py --data) or "test" (sample.py --data: all)."""
    discover()
    return [name for name, ds in DATASETS.items() if use == "test" or not ds.test_only]


def get(name):
    """The Dataset registered as `name`, or a one-line error that lists them."""
    discover()
    if name not in DATASETS:
        raise ValueError(f"unknown --data {name!r}: use {', '.join(DATASETS)}")
    return DATASETS[name]


def load(name, data_dir=None, seed=0):
    """The splits of the data set registered as `name`, from `data_dir` (or the cache), split by `seed`."""
    return get(name).load(data_dir, seed)


@register("conala", metrics=("conala_bleu",))
def conala(data_dir, seed):
    """CoNaLa v1.1 annotated: its train / test; NL = rewritten_intent, else intent; 200 validation
    pairs carved from train by seed."""
    folder, splits = data_dir or _download("conala"), {}
    for split in ("train", "test"):
        path = os.path.join(folder, f"conala-{split}.json")
        recs = fields(read_json(path), path, ["intent", "snippet"])
        splits[split] = [{"nl": r.get("rewritten_intent") or r["intent"], "code": r["snippet"]} for r in recs]
    valid_share = 200 / len(splits["train"])  # validation carved from train by seed
    splits["valid"], splits["train"] = split_pairs(splits["train"], [valid_share, 1 - valid_share], seed)
    return splits


@register("codealpaca")
def codealpaca(data_dir, seed):
    """CodeAlpaca-20k (or its 2k cut): instruction (+ input) -> output, split 90/5/5 by seed."""
    folder = data_dir or _download("codealpaca")
    names = [f for f in ("code_alpaca_20k.json", "code_alpaca_2k.json") if os.path.exists(os.path.join(folder, f))]
    if not names:
        raise FileNotFoundError(f"no code_alpaca_20k.json or code_alpaca_2k.json in {folder}: check --data-dir")
    path = os.path.join(folder, names[0])
    recs = fields(read_json(path), path, ["instruction", "output"])
    pairs = [{"nl": r["instruction"] + ("\n" + r["input"] if r.get("input") else ""), "code": r["output"]}
             for r in recs]
    train, valid, test = split_pairs(pairs, [0.9, 0.05, 0.05], seed)
    return {"train": train, "valid": valid, "test": test}


# ---- files inside installed wheels (the GGUF model, HumanEval) ----------------------------------
def wheel_file(wheel, file, install):
    """The path of `file` (its name, or its path inside the wheel) in an installed PyPI wheel, found
    through the distribution's metadata: the package itself is never imported. A missing wheel or
    file is a one-line error that prints the `install` command."""
    try:
        dist = importlib.metadata.distribution(wheel)
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(f"{file.split('/')[-1]} comes from the PyPI wheel {wheel}, which is not installed: "
                           f"{install}") from None
    found = [f for f in dist.files or [] if str(f) == file or f.name == file]
    if not found:
        raise RuntimeError(f"{wheel} {dist.version} has no {file}: {install}")
    return str(dist.locate_file(found[0]))


# ---- tokenization and batching -----------------------------------------------------------------
CHAT_MARKS = ("\x01QUESTION\x01", "\x01ANSWER\x01")  # stand-ins, cut out of the rendered template


@functools.lru_cache(maxsize=None)
def chat_parts(tok):
    """For a tokenizer with a chat template, the ids around the turns, read off the template itself:

        [prefix ; context ; "\\n" + instruction ; suffix ; code ; eot]

    prefix = everything before the user's text (system turn, user header), suffix = the end of the
    user turn and the assistant header (the generation prompt), eot = the token that ends the
    assistant's turn. None for plain (non-chat) tokenizers, whose layout is [context ; instruction].
    """
    if not getattr(tok, "chat_template", None):
        return None
    q, y = CHAT_MARKS
    ask = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": y}],
                                   tokenize=False)
    prefix, suffix = ask.split(q)
    after = full.split(y)[1]
    if not full.startswith(ask) or not after.strip():
        raise ValueError("the tokenizer's chat template does not put the answer after the generation prompt "
                         "and close it with an end-of-turn token: pass a plain (non-chat) model folder")
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
    return ids(prefix), ids(suffix), ids(after.strip())[0]


def encode(pairs, tok, max_nl=128, max_code=128):
    """Token ids of each instruction and code; code ends with EOS (with a chat template: the
    instruction starts on a new line after the context and ends with the template's suffix, the code
    ends with the end-of-turn token). Over-long ones are cut, and counted."""
    if not pairs:
        raise ValueError("no pairs to encode: the split is empty (check --data and --data-dir)")
    chat = chat_parts(tok)
    nl = tok([("\n" if chat else "") + p["nl"] for p in pairs], add_special_tokens=False)["input_ids"]
    code = tok([p["code"] for p in pairs], add_special_tokens=False)["input_ids"]
    suffix, end = (chat[1], chat[2]) if chat else ([], tok.eos_token_id)
    out, cut = [], 0
    for a, b in zip(nl, code):
        cut += len(a) > max_nl or len(b) >= max_code
        out.append((a[:max_nl] + suffix, b[:max_code - 1] + [end]))
    return out, cut


def collate(examples, tok):
    """Right-padded instruction ids + mask, code labels padded with -100 (ignored by the loss), and
    with a chat template its prefix ids, which go before the context."""
    L = max(len(a) for a, _ in examples)
    M = max(len(b) for _, b in examples)
    ids = torch.full((len(examples), L), tok.pad_token_id)
    mask = torch.zeros(len(examples), L, dtype=torch.long)
    labels = torch.full((len(examples), M), -100)
    for i, (a, b) in enumerate(examples):
        ids[i, :len(a)], mask[i, :len(a)], labels[i, :len(b)] = torch.tensor(a), 1, torch.tensor(b)
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    chat = chat_parts(tok)
    return batch | {"prefix_ids": torch.tensor(chat[0], dtype=torch.long)} if chat else batch


def batches(examples, batch_size, tok, shuffle=False, generator=None):
    order = torch.randperm(len(examples), generator=generator).tolist() if shuffle else list(range(len(examples)))
    for i in range(0, len(order), batch_size):
        yield collate([examples[j] for j in order[i:i + batch_size]], tok)


def batches_with(examples, contexts, batch_size, tok):
    """The batches of `batches` (in order), each with its contexts: one (n, d) for every pair, or
    (N, n, d), one per pair (a method that reads the instruction, cond.py)."""
    if contexts.dim() == 3 and len(contexts) != len(examples):
        raise ValueError(f"{len(contexts)} contexts for {len(examples)} pairs: give one per pair, or one for all")
    for i, b in enumerate(batches(examples, batch_size, tok)):
        yield b, contexts if contexts.dim() == 2 else contexts[i * batch_size:i * batch_size + len(b["labels"])]


def build_tokenizer(texts, vocab_size=600, extra=()):
    """A byte-level BPE trained on `texts`, with <pad> = 0, </s> = 1, <unk> = 2 as T5 expects (the
    `tiny` model's and CodeFusion's own tokenizer); `extra` special tokens follow them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>", *extra],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   additional_special_tokens=list(extra))


def pad_ids(tok, texts, length):
    """Token ids of each text, padded with the pad token (or cut) to `length`: a (len(texts), length)
    tensor, and how many texts were cut."""
    rows = tok(texts, add_special_tokens=False)["input_ids"]
    out = torch.full((len(rows), length), tok.pad_token_id)
    for i, r in enumerate(rows):
        out[i, :min(len(r), length)] = torch.tensor(r[:length], dtype=torch.long)
    return out, sum(len(r) > length for r in rows)
