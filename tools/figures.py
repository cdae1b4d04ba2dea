"""The figures of the README and docs/results.md, drawn from a run folder into docs/figures/ (PNG,
matplotlib's Agg backend: no display needed).

    python -m tools.figures out/tiny-demo-mcl       # a run with ddpt, prompt-tuning and ddpt-mcl

    emerging.png  the k draws of each stochastic method (seed 0) through the chain sample.py draws them
                  with: x0_hat at each step on the principal components of all of them, t as colour
    prompts.png   where the prompts sit: each method's sampled context vectors, the manual prompt's
                  and the vocabulary's in one PCA, with each position's nearest token of the first draw
    curves.png    held-out token loss against step for every method, mean and range over the seeds
    glance.png    BLEU-4, CodeBLEU and exact match, mean ± std over the seeds: every row of the demo's
                  table in docs/results.md, and each rung of the ladder (tools/ladder.py's records:
                  SmolLM2-135M-Instruct / CoNaLa) with the manual prompt

    python -m tools.figures --glance                # glance.png alone, from the documents and records

It prints one table row per figure, which report.py keeps in the figures' block.
"""
import argparse
import json
import os
import re
import statistics

import matplotlib
matplotlib.use("Agg")  # before pyplot: files only, no display
import matplotlib.pyplot as plt
import torch

from runtime import checkpoint
import llm
import prompts
from tools import ladder, report

FIGURES = os.path.join(report.ROOT, "docs", "figures")
GLANCE = (("the demo (tiny model)", "tiny-demo"),)  # (label, a report block's command) per panel; then the ladder


def chain(module, k, seed, keep=200):
    """[(t, x0_hat (k, D))] along the reverse chain sample.py draws a DDPT-like `module`'s k prompts
    with (DDPM over all T for DDPT, its own DDIM-S for DDPT-MCL), in D dimensions as DDPT.sample with
    fast=False runs it, about `keep` steps of it (the last always): where each draw's prompt is
    heading at step t. The last x0_hat is the sample itself."""
    g = torch.Generator().manual_seed(seed)
    seen = []

    def denoiser(x_t, t):
        x0_hat = module.denoiser(x_t, t)
        seen.append((int(t[0]), x0_hat))
        return x0_hat
    with torch.inference_mode():
        module.diffusion.sample(denoiser, module._randn(k, module.D, generator=g), steps=getattr(module, "chain", None),
                                generator=g)
    stride = -(-len(seen) // keep)  # ceil: at most `keep` steps, and the last
    return seen[::stride] + ([seen[-1]] if (len(seen) - 1) % stride else [])


def pca(X, dims=2):
    """(mean, components (dims, D)) of the rows of X."""
    mean = X.mean(0)
    return mean, torch.linalg.svd(X - mean, full_matrices=False).Vh[:dims]


def load_run(run):
    """(the run's record, {seed folder: {method: module}}) from the checkpoints of a train.py run."""
    prompts.discover()
    if not os.path.isdir(run):
        raise SystemExit(f"no run folder {run}: train one first (python train.py --out {run})")
    seeds = sorted((f for f in os.listdir(run) if re.fullmatch(r"seed\d+", f)), key=lambda f: int(f[4:]))
    if not seeds:
        raise SystemExit(f"{run} holds no seed<S> folder: train a run there first (python train.py --out {run})")
    modules, cfg = {}, None
    for s in seeds:
        for name, cls in prompts.METHODS.items():
            path = os.path.join(run, s, f"{name}.pt")
            if os.path.exists(path):
                ckpt = checkpoint.load(path)
                cfg = ckpt["run"]
                modules.setdefault(s, {})[name] = cls.from_checkpoint(ckpt).eval()
    if not any(m.stochastic and not m.conditional for m in modules.get(seeds[0], {}).values()):
        raise SystemExit(f"{run}/{seeds[0]} holds no checkpoint of a method that draws prompts from noise: "
                         "train one with --method ddpt (and ddpt-mcl) for the figures")
    return cfg, modules


def emerging(methods, path, k=5, seed=0):
    """Each unconditional stochastic method's k draws through its chain, projected on the principal
    components of all its x0_hat, coloured by t."""
    chosen = {n: m for n, m in methods.items() if m.stochastic and not m.conditional}
    fig, axes = plt.subplots(1, len(chosen), figsize=(5.5 * len(chosen), 4.5), squeeze=False)
    for ax, (name, module) in zip(axes[0], chosen.items()):
        walk = chain(module, k, seed)
        X = torch.stack([x for _, x in walk])  # (steps, k, D)
        mean, V = pca(X.flatten(0, 1).double())
        P = ((X.double() - mean) @ V.T).numpy()  # (steps, k, 2)
        ts = [t for t, _ in walk]
        for j in range(k):
            ax.plot(P[:, j, 0], P[:, j, 1], color="0.8", lw=0.8, zorder=1)
            dots = ax.scatter(P[:, j, 0], P[:, j, 1], c=ts, cmap="viridis", s=9, zorder=2)
        ax.scatter(P[-1, :, 0], P[-1, :, 1], marker="x", color="crimson", s=60, zorder=3, label="the k prompts (t = 0)")
        final = prompts.spread(X[-1])  # the cosine hides the spread: every direction shares a large common part
        ax.set_title(f"{module.title}: {k} draws, {len(ts)} of its steps shown\nat t = 0: rms spread "
                     f"{final['rms_spread'] or 0:.4f}, mean pairwise cosine {final['mean_pairwise_cosine']:.4f}", fontsize=10)
        ax.set_xlabel("principal component 1 of x0_hat")
        ax.set_ylabel("principal component 2")
        ax.legend(loc="best", fontsize=8)
        fig.colorbar(dots, ax=ax, label="t (noise level of the step)")
    fig.suptitle("Prompts emerging from noise: where each draw's x0_hat points, step by step (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def where(methods, model, tok, manual, path, k=5, seed=0, vocab=3000):
    """Each method's k sampled contexts (k·n vectors), the manual prompt's n and a sample of the
    vocabulary in one PCA of them all; the nearest token (cosine) of each position of the first draw."""
    E = llm.embeddings(model).detach().float()
    g = torch.Generator().manual_seed(seed)
    words = E[torch.randperm(len(E), generator=g)[:vocab]]
    drawn = {m.title: m.sample(k, generator=torch.Generator().manual_seed(seed)).float()
             for m in methods.values() if not m.conditional}
    mean, V = pca(torch.cat([words, manual.float(), *(c.flatten(0, 1) for c in drawn.values())]).double())
    proj = lambda X: ((X.double() - mean) @ V.T).numpy()
    fig, ax = plt.subplots(figsize=(8, 6.5))
    w = proj(words)
    ax.scatter(w[:, 0], w[:, 1], s=3, color="0.82", label=f"vocabulary ({len(words)} of {len(E)} tokens)")
    m = proj(manual)
    ax.scatter(m[:, 0], m[:, 1], s=40, color="black", marker="s", label="manual prompt")
    for (title, contexts), colour in zip(drawn.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")):
        c = proj(contexts.flatten(0, 1))
        drawn_as = f"{k} draws" if len(torch.unique(contexts, dim=0)) > 1 else "one prompt"
        ax.scatter(c[:, 0], c[:, 1], s=22, color=colour, alpha=0.7, label=f"{title} ({drawn_as} x {contexts.shape[1]} positions)")
        nearest = llm.nearest_tokens(model, tok, contexts[0], k=1)
        for (x, y), (token,) in zip(proj(contexts[0]), nearest):
            ax.annotate(repr(token), (x, y), fontsize=7, color=colour, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title("Where the prompts sit: context vectors among the vocabulary's embeddings (seed 0)\n"
                 "labels: each position's nearest vocabulary token (cosine), first draw", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(run, path):
    """Held-out token loss against step from every seed's log.jsonl: mean line, min-max band."""
    rows = [json.loads(line) for s in sorted(os.listdir(run)) if re.fullmatch(r"seed\d+", s)
            for line in open(os.path.join(run, s, "log.jsonl")) if line.strip()]
    rows = [r for r in rows if "valid_token_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["method"] for r in rows):
        steps = sorted({r["step"] for r in rows if r["method"] == name})
        vals = [[r["valid_token_loss"] for r in rows if r["method"] == name and r["step"] == s] for s in steps]
        title = prompts.METHODS[name].title if name in prompts.METHODS else name
        line, = ax.plot(steps, [sum(v) / len(v) for v in vals], marker="o", ms=3,
                        label=f"{title} ({len(vals[-1])} seeds)")
        ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], color=line.get_color(), alpha=0.2)
    manual = [r["valid_token_loss_manual"] for r in rows]
    ax.axhline(sum(manual) / len(manual), color="black", ls="--", lw=1, label="manual prompt")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("held-out token loss (nats)")
    ax.set_title("Training curves: mean over seeds, band = min to max", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def glance(path, doc=os.path.join(report.ROOT, "docs", "results.md"), record=os.path.join(report.ROOT, "docs", "ladder"),
           cols=("bleu4", "codebleu", "exact_match")):
    """Bars of every row's mean with its std over seeds: one panel per table of GLANCE in `doc`, and one of
    the ladder's rungs (each method's first row and the manual prompt, from the records in `record`)."""
    panels = [(f"{label}: mean ± std over seeds", report.means(report.block(doc, match)[2])) for label, match in GLANCE]
    _, stats, seeds = ladder.table(record)
    rungs = [n for n in stats if (stats[n]["cost"] or n == "manual prompt") and None not in stats[n]["bleu4"]]
    panels.append((f"the ladder, SmolLM2-135M-Instruct / CoNaLa: mean ± std over {len(seeds)} seeds",
                   {n: {c: (statistics.fmean(stats[n][c]), statistics.stdev(stats[n][c]) if len(seeds) > 1 else 0.0)
                        for c in cols} for n in rungs}))
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6.4), squeeze=False)
    for ax, (title, table) in zip(axes[0], panels):
        rows = [r for r in table if all(c in table[r] for c in cols)]
        width = 0.8 / len(rows)
        for i, row in enumerate(rows):
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(cols))]
            ax.bar(xs, [table[row][c][0] for c in cols], width, yerr=[table[row][c][1] for c in cols], capsize=2, label=row)
        ax.set_xticks(range(len(cols)), cols)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2)  # below: bars stay visible
    fig.suptitle("The results at a glance (docs/results.md's demo table and the ladder)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="a run folder of train.py with ddpt and ddpt-mcl checkpoints (and any others)")
    p.add_argument("--out", default=FIGURES, help="the folder the PNG files go to")
    p.add_argument("--k", type=prompts.count, default=5, help="draws per stochastic method")
    p.add_argument("--glance", action="store_true", help="only glance.png (from docs/results.md and docs/ladder: no run)")
    args = p.parse_args(argv)
    if args.run is None and not args.glance:
        p.error("give a run folder (or --glance for glance.png alone)")
    made = {"glance.png": glance}
    if not args.glance:
        cfg, modules = load_run(args.run)
        first = modules[next(iter(modules))]
        model, tok = llm.load(cfg["model"], data_name=cfg["data"], data_dir=cfg["data_dir"])  # its embeddings, fp32
        manual = next(iter(first.values())).C  # the manual prompt's context, as every method starts from it
        made = {"emerging.png": lambda f: emerging(first, f, k=args.k),
                "prompts.png": lambda f: where(first, model, tok, manual, f, k=args.k),
                "curves.png": lambda f: curves(args.run, f)} | made
    os.makedirs(args.out, exist_ok=True)
    print("| figure | from | bytes |")
    print("| --- | --- | --- |")
    for name, draw in made.items():
        with checkpoint.atomic(os.path.join(args.out, name)) as tmp:  # never a half-written figure
            draw(tmp)
        source = "docs/results.md, docs/ladder" if name == "glance.png" else args.run
        print(f"| docs/figures/{name} | {source} | {os.path.getsize(os.path.join(args.out, name)):,} |")


if __name__ == "__main__":
    main()
