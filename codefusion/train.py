"""Train CodeFusion and its baselines on one language of the CodeFusion benchmarks; write the tables.

    python -m codefusion.train --lang python --data-dir ../shared/data/codefusion
    python -m codefusion.train --lang bash --data-dir ../shared/data/codefusion

In one run, on the same test pairs: CodeFusion (pre-trained with unsupervised generation and CPD,
then fine-tuned), its ablations (no pre-training, no CPD, grounding), and an autoregressive T5 of
about the same size trained on the same pairs (top-k from beam search and from sampling). Tables:
top-1/3/5 exact match and BLEU-4, valid top-1 syntax, diversity of the top-5, a denoising trajectory.
"""
import argparse
import itertools
import json
import os
import random
import re
import time

import torch
from tqdm import tqdm

from runtime import checkpoint
import data
import metrics
from codefusion import data as cf_data
from codefusion.model import MASK, CodeFusion, cpd_mask, valid_syntax
from diffusion import steps_arg

MAX_SRC = 64        # utterance tokens read by the encoder (longer ones are cut, and counted)
HEADS = 4           # attention heads of every CodeFusion and T5 layer
NOISE_MEMORY = 8    # positions of the Gaussian "utterance" in unsupervised pre-training
GEN_BATCH = 32      # utterances per sampling / generation batch
LOG_EVERY = 100     # training steps between log rows
SNIPPETS = 50_000   # pre-training snippets kept (plenty for CPU-sized runs)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--lang", default="python", choices=["python", "bash", "cf"], help="benchmark language")
    a("--data-dir", default=None, help="folder of the CodeFusion files (default: download into the cache)")
    a("--alpaca-dir", default=None, help="CodeAlpaca folder: its answers join Python's pre-training snippets")
    a("--encoder", default=None, help="pre-trained T5 encoder as E, with its tokenizer (hub id or folder; "
      "the paper: Salesforce/codet5-small); the T5 baseline then starts from the same checkpoint")
    a("--d", type=int, default=128, help="width (paper: 512)")
    a("--layers", default="2,4,2", help="encoder, denoiser, decoder layers (paper: CodeT5-small's 6, 10, 6)")
    a("--n", type=int, default=None, help="program length in tokens (default: cf 32, python 48, bash 48; paper: 128)")
    a("--T", type=int, default=1200, help="diffusion steps (sqrt schedule)")
    a("--vocab", type=int, default=2000, help="BPE vocabulary size")
    a("--pretrain-steps", type=int, default=1000, help="code-only pre-training steps")
    a("--finetune-steps", type=int, default=1500, help="(utterance, code) fine-tuning steps")
    a("--batch-size", type=int, default=32, help="batch size")
    a("--lr", type=float, default=5e-4, help="AdamW learning rate, no weight decay (the paper's)")
    a("--k", type=int, default=5, help="candidates per utterance (top-k)")
    a("--sample-steps", type=steps_arg, default=50, metavar="K|all",
      help="DDIM over K steps for the tables, or all: DDPM over all T (the trajectory: always DDPM)")
    a("--limit", type=int, default=200, help="test pairs scored")
    a("--seed", type=int, default=0, help="seed")
    a("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    a("--out", default=None, help="run folder (default out/codefusion-<lang>)")
    args = p.parse_args(argv)
    args.n = args.n or {"cf": 32, "python": 48, "bash": 48}[args.lang]  # ~99% of test programs fit
    args.out = args.out or os.path.join("out", f"codefusion-{args.lang}")
    return args


def train_diffusion(args, tok, splits, *, pretrain, cpd, log):
    """CodeFusion (or an ablation): pre-training on code alone (unsupervised generation, and CPD when
    `cpd`), then fine-tuning on (utterance, code) pairs; the loss is L_t of codefusion/model.py."""
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    e, n_den, dec = map(int, args.layers.split(","))
    encoder = None
    if args.encoder:
        from transformers import T5EncoderModel
        encoder = T5EncoderModel.from_pretrained(args.encoder)
        if len(tok) > encoder.get_input_embeddings().num_embeddings:  # <mask> was added to its tokenizer
            encoder.resize_token_embeddings(len(tok))
    dev = args.device
    model = CodeFusion(vocab=len(tok), pad_id=tok.pad_token_id, d=args.d, heads=HEADS, enc_layers=e,
                       den_layers=n_den, dec_layers=dec, n=args.n, max_src=MAX_SRC, T=args.T, encoder=encoder).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    snippets = splits["snippets"]
    pairs = splits["train"]
    stages = ([("pretrain", args.pretrain_steps)] if pretrain else []) + [("finetune", args.finetune_steps)]
    for stage, steps in stages:
        for step in tqdm(range(steps), desc=f"CodeFusion {stage}"):
            if stage == "pretrain":
                code = [snippets[i] for i in torch.randint(len(snippets), (args.batch_size,), generator=g)]
                y = data.pad_ids(tok, code, args.n)[0].to(dev)
                if cpd and torch.rand(1, generator=g).item() < 0.5:  # CPD: E reads the masked code
                    mem, mem_pad = model.encode(data.pad_ids(tok, [cpd_mask(c, args.lang) for c in code], MAX_SRC)[0].to(dev))
                else:  # unsupervised generation: fresh noise in place of E(s)
                    mem, mem_pad = torch.randn(len(code), NOISE_MEMORY, args.d, generator=g).to(dev), None
            else:
                batch = [pairs[i] for i in torch.randint(len(pairs), (args.batch_size,), generator=g)]
                y = data.pad_ids(tok, [p["code"] for p in batch], args.n)[0].to(dev)
                mem, mem_pad = model.encode(data.pad_ids(tok, [p["nl"] for p in batch], MAX_SRC)[0].to(dev))
            terms = model.losses(y, mem, mem_pad, g)
            loss = sum(terms.values())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            if (step + 1) % LOG_EVERY == 0:
                log.write(json.dumps({"stage": stage, "step": step + 1, **{k: v.item() for k, v in terms.items()}}) + "\n")
                log.flush()
    return model.eval()


def strings(tok, rows, pad_id):
    """Decode each row up to its first pad."""
    out = []
    for r in rows.tolist():
        r = r[:r.index(pad_id)] if pad_id in r else r
        out.append(tok.decode(r, skip_special_tokens=True).strip())
    return out


def diffusion_candidates(model, tok, src, *, args, ground=False):
    """k CodeFusion programs per utterance (ids `src`), decoded to strings."""
    g = torch.Generator().manual_seed(args.seed)
    out = []
    for i in range(0, len(src), GEN_BATCH):
        ids = model.sample(src[i:i + GEN_BATCH].to(args.device), k=args.k, steps=args.sample_steps, generator=g,
                           ground=ground)
        out += strings(tok, ids.cpu(), tok.pad_token_id)
    return [out[i * args.k:(i + 1) * args.k] for i in range(len(src))]


def train_ar(args, tok, splits):
    """An autoregressive T5 of about CodeFusion's size (or the --encoder checkpoint's whole seq2seq
    model), trained on the same pairs for as many steps."""
    from transformers import T5Config, T5ForConditionalGeneration
    torch.manual_seed(args.seed)
    e, n_den, dec = map(int, args.layers.split(","))
    if args.encoder:
        model = T5ForConditionalGeneration.from_pretrained(args.encoder)
        model.resize_token_embeddings(max(len(tok), model.get_input_embeddings().num_embeddings))
    else:
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=len(tok), d_model=args.d, d_kv=args.d // 4, d_ff=4 * args.d, num_layers=(e + n_den + dec + 1) // 2,
            num_heads=HEADS, dropout_rate=0.0, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id))
    model.to(args.device)
    examples, _ = data.encode(splits["train"], tok, max_nl=MAX_SRC, max_code=args.n)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    for _ in tqdm(range(args.pretrain_steps + args.finetune_steps), desc="autoregressive T5"):
        b = data.collate([examples[i] for i in torch.randint(len(examples), (args.batch_size,), generator=g)],
                         tok)
        model(**{k: v.to(args.device) for k, v in b.items()}).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    return model.eval()


@torch.no_grad()
def ar_candidates(model, tok, test, *, args, sample):
    """k T5 programs per utterance: beam search's top k, or k samples."""
    torch.manual_seed(args.seed)
    out = []
    for i in range(0, len(test), GEN_BATCH):
        enc = tok([p["nl"] for p in test[i:i + GEN_BATCH]], add_special_tokens=False, padding=True, return_tensors="pt")
        enc = enc.to(args.device)
        gen = model.generate(**enc, max_new_tokens=args.n, num_return_sequences=args.k, do_sample=sample,
                             num_beams=1 if sample else args.k, top_k=0 if sample else None)
        out += [s.strip() for s in tok.batch_decode(gen, skip_special_tokens=True)]
    return [out[i * args.k:(i + 1) * args.k] for i in range(len(test))]


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def scores(cands, refs, *, lang, functions):
    """Top-k exact match and BLEU-4 (best of k against the reference), valid top-1 syntax, diversity."""
    row = {}
    # each candidate's rank key, computed once for all k
    keys = [[(h == r, metrics.bleu4([h], [r], smooth=True)) for h in c] for c, r in zip(cands, refs)]
    for k in (1, 3, 5):
        best = [c[max(range(len(c[:k])), key=ks.__getitem__)] for c, ks in zip(cands, keys)]
        row[f"EM@{k}"], row[f"BLEU@{k}"] = metrics.exact_match(best, refs), metrics.bleu4(best, refs)
    row["valid top-1"] = sum(valid_syntax(c[0], lang, functions) for c in cands) / len(cands)
    toks = [[metrics.tokenize_code(h) for h in c] for c in cands]
    for n in range(1, 5):  # distinct n-grams over all tokens of the top-5, per utterance
        row[f"dist-{n}"] = sum(len({tuple(t[i:i + n]) for t in ts for i in range(len(t) - n + 1)})
                               / max(1, sum(len(t) for t in ts)) for ts in toks) / len(toks)
    dists = [edit_distance(a, b) / max(1, len(a), len(b)) for ts in toks for a, b in itertools.combinations(ts, 2)]
    row["edit min/max/mean"] = f"{min(dists):.2f}/{max(dists):.2f}/{sum(dists) / len(dists):.2f}"
    return row


def main(argv=None):
    args = parse(argv)
    os.makedirs(args.out, exist_ok=True)
    splits = cf_data.load(args.lang, args.data_dir, args.seed, args.alpaca_dir)
    random.Random(args.seed).shuffle(splits["snippets"])
    splits["snippets"] = splits["snippets"][:SNIPPETS]
    test = splits["test"][:args.limit]
    if not test:
        raise SystemExit("the test split is empty: check --data-dir or --limit")
    texts = [t for p in splits["train"] for t in (p["nl"], p["code"])] + splits["snippets"][:20_000]
    if args.encoder:  # the pre-trained encoder's own tokenizer, for utterances and code alike
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(args.encoder)
        if MASK not in tok.get_vocab():
            tok.add_special_tokens({"additional_special_tokens": [MASK]})
    else:
        tok = data.build_tokenizer(texts, args.vocab, extra=(MASK,))
    refs, pad = [p["code"] for p in test], tok.pad_token_id
    src, cut_nl = data.pad_ids(tok, [p["nl"] for p in test], MAX_SRC)
    cut = {f"utterances cut to {MAX_SRC} tokens": cut_nl,
           f"references longer than n = {args.n}": data.pad_ids(tok, refs, args.n)[1]}
    functions = {f for p in splits["train"] for f in re.findall(r"([A-Za-z_]\w*)\s*\(", p["code"])}
    rows, times, sizes = {}, {}, {}
    with open(os.path.join(args.out, "log.jsonl"), "w") as log:
        for name, pre, cpd in (("CodeFusion", True, True), ("no pre-training", False, False), ("no CPD", True, False)):
            t0 = time.time()
            model = train_diffusion(args, tok, splits, pretrain=pre, cpd=cpd, log=log)
            times[name], sizes[name] = time.time() - t0, sum(p.numel() for p in model.parameters())
            rows[name] = scores(diffusion_candidates(model, tok, src, args=args), refs, lang=args.lang,
                                functions=functions)
            if name == "CodeFusion":
                full = model
                checkpoint.save(model.checkpoint() | {"run": vars(args)}, os.path.join(args.out, "codefusion.pt"))
                tok.save_pretrained(os.path.join(args.out, "tokenizer"))
                rows["grounding"] = scores(diffusion_candidates(model, tok, src, args=args, ground=True), refs,
                                           lang=args.lang, functions=functions)
    t0 = time.time()
    ar = train_ar(args, tok, splits)
    times["T5"], sizes["T5"] = time.time() - t0, sum(p.numel() for p in ar.parameters())
    for name, sample in (("T5, beam search", False), ("T5, sampling", True)):
        rows[name] = scores(ar_candidates(ar, tok, test, args=args, sample=sample), refs, lang=args.lang,
                            functions=functions)
    path = [(s, strings(tok, full.tokens(x, mem, mem_pad).cpu(), pad)[0])  # every 200th step of one DDPM draw
            for s, x, mem, mem_pad in full.trajectory(src[:1].to(args.device), generator=torch.Generator().manual_seed(args.seed))
            if s % 200 == 0]
    write(args, rows, times=times, sizes=sizes, path=path, test=test, n_train=len(splits["train"]), cut=cut)


def write(args, rows, *, times, sizes, path, test, n_train, cut):
    cols = list(next(iter(rows.values())))
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    sampler = f"DDPM-{args.T}" if args.sample_steps is None else f"DDIM-{args.sample_steps}"
    lines = [f"CodeFusion on {args.lang}: {len(test)} test pairs, {n_train} training pairs; {sampler}, "
             f"k = {args.k}. Sizes: " + ", ".join(f"{k} {v / 1e6:.1f}M params, trained in {times[k] / 60:.1f} min"
                                                  for k, v in sizes.items())
             + ". Test pairs with " + ", ".join(f"{k}: {v}" for k, v in cut.items()) + ".", "",
             "| system | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
    lines += [f"| {name} | " + " | ".join(fmt(r[c]) for c in cols) + " |" for name, r in rows.items()]
    lines += ["", f"Denoising trajectory (DDPM, all {args.T} steps), utterance: {test[0]['nl']!r}, "
              f"reference `{test[0]['code']}`:", ""] + [f"- t = {t}: `{s}`" for t, s in path]
    text = "\n".join(lines) + "\n"
    print(text)
    checkpoint.write_atomic(os.path.join(args.out, "results.md"), text)
    checkpoint.write_atomic(os.path.join(args.out, "results.json"), json.dumps(
        {"rows": rows, "minutes": {k: v / 60 for k, v in times.items()}, "params": sizes}, indent=2))


if __name__ == "__main__":
    main()
