"""The ladder: every prompt method on one frozen LLM and data set, with one set of settings, each at
its own swept rate and seeded on its own, over several training seeds, in one table.

    python -m tools.ladder                    # SmolLM2-135M-Instruct / CoNaLa, bf16 on the CPU: the sweep, seeds 0-4
    python -m tools.ladder --seeds 0 1        # resumes: a finished sweep point or seed is read, never redone
    python -m tools.ladder --table            # the table (and docs/figures/ladder.png) from the seeds finished so far
    python -m tools.ladder --headline         # the README's rows of it

Its table is also written to <record>/ladder.md, the file docs/results.md's block shows.

The protocol, SETTINGS and SAMPLING for every rung:
 1. sweep   each rung's rates (RUNGS), held-out token loss after the same steps with training seed 0
            (tools/sweep.py's runs); the best rate of each -> <record>/sweep.json. DDPT-PD and its regressor
            take soft prompt tuning's rate: their first stage is that method, the same prompt.
 2. seeds   for each training seed S: one train.py run of every rung at its rate (--seed S, --resume), then
            sample.py --seed S on the test pairs. Its results.json, generations.jsonl and what each method
            cost go to <record>/seed<S>/ (small: committed as each seed finishes); the checkpoints stay in
            --out (large). A seed whose record exists is not run again.
 3. table   from the records alone: each row's mean ± std over the seeds; its difference from the tuned
            soft prompt, the mean over seeds with a 95% t-interval (evaluation/tables.seed_summary) and the
            seeds whose paired bootstrap lies above (↑) or below (↓) zero; trainable parameters, the bytes
            of the weights as saved (buffers such as the manual context included), training seconds
            (validation and DDPT-PD's targets included) and sampling seconds (its prompts, generations,
            picks and scores) per method, mean over seeds. Below it, each question of ASKED the same way:
            DDPT's top-1 − the reparametrised soft prompt (DDPT's map fed a learned constant): what the noise adds.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import metrics
from evaluation.tables import TESTED, seed_summary
from runtime import checkpoint
from tools import sweep
from tools.report import ROOT

SETTINGS = ["--model", "smollm2-135m", "--data", "conala", "--data-dir", "../shared/data/conala", "--dtype", "bf16",
            "--batch-size", "8", "--steps", "80", "--eval-every", "80"]
PD = ["--pd-pairs", "128", "--pd-steps", "10", "--pd-lr", "0.1"]  # DDPT-PD's targets: 128 pairs, 10 steps of RMS 0.1
OWN = {"ddpt-mcl-cond": ["--K", "3"], "ddpt-pd": PD, "ddpt-pd-mlp": PD}  # a rung's own options
SAMPLING = ["--limit", "80", "--max-new-tokens", "64", "--batch-size", "40", "--select-pairs", "200"]
RUNGS = {  # the rungs, in the table's order, and the rates each is swept over (None: soft prompt tuning's; a
    # rate more where a sweep's best was at the edge)
    "prompt-tuning": [3e-2, 1e-1, 3e-1], "prompt-tuning-vocab": [1e-2, 3e-2, 1e-1, 3e-1], "reparam": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
    "ddpt": [3e-5, 1e-4, 3e-4], "ddpt-mcl-cond": [1e-4, 3e-4, 1e-3], "ddpt-pd": None, "ddpt-pd-mlp": None,
    "lopa": [3e-3, 1e-2, 3e-2, 1e-1], "lora": [1e-3, 3e-3, 1e-2]}
BASE = "soft prompt tuning"  # the row every other is compared with
ASKED = [("ddpt", "reparam")]  # rung A's first row − rung B's, beside the table: what the diffusion adds to its map
SHOWN = ["bleu4", "conala_bleu", "codebleu", "exact_match"]


def sweep_rates(record, out):
    """{method: best rate}, sweeping what sweep.json lacks (each point saved as it finishes)."""
    path = os.path.join(record, "sweep.json")
    done = json.load(open(path)) if os.path.exists(path) else {}
    for method, rates in RUNGS.items():
        for lr in rates or []:
            key = f"{method}={lr:g}"
            if key not in done:
                shutil.rmtree(os.path.join(out, f"{method}-{lr:g}"), ignore_errors=True)  # a point cut off before
                losses, manual, secs = sweep.run(method, lr, [0], SETTINGS + OWN.get(method, []), out)
                done[key] = {"loss": losses[0], "manual": manual, "secs": secs}
                checkpoint.write_atomic(path, json.dumps(done, indent=2))
                print(f"sweep {key}: held-out token loss {losses[0]:.4f} ({secs:.0f} s)", file=sys.stderr)
    best = {m: best_rate(done, m, rates) for m, rates in RUNGS.items() if rates}
    return best | {m: best["prompt-tuning"] for m, rates in RUNGS.items() if rates is None}


def best_rate(done, method, rates):
    """The rate of `rates` whose sweep point in `done` has the lowest held-out token loss (None: none swept)."""
    return min((lr for lr in rates if f"{method}={lr:g}" in done), key=lambda lr: done[f"{method}={lr:g}"]["loss"], default=None)


def run_seed(seed, rates, record, out):
    """Trains and samples one seed, then files its record (results, generations, costs)."""
    resume = ["--resume"] if os.path.exists(os.path.join(out, "config.json")) else []
    own = [a for options in dict.fromkeys(tuple(OWN[m]) for m in RUNGS if m in OWN) for a in options]  # each once
    for cmd in ([sys.executable, "train.py", *SETTINGS, *own, "--method", *RUNGS, "--lr", *[f"{m}={r:g}" for m, r in rates.items()],
                 "--seed", str(seed), "--out", out, *resume],
                [sys.executable, "sample.py", "--out", out, "--seed", str(seed), *SAMPLING]):
        if subprocess.run(cmd, cwd=ROOT).returncode:
            sys.exit(f"the ladder stopped at seed {seed}: {' '.join(cmd[1:3])} failed (its output is above); rerun to resume")
    folder, into = os.path.join(out, f"seed{seed}"), os.path.join(record, f"seed{seed}")
    results = json.load(open(os.path.join(folder, "results.json")))
    costs = {}
    for method in RUNGS:
        ckpt = checkpoint.load(os.path.join(folder, f"{method}.pt"))
        costs[method] = {"title": results["spread"][method]["title"], "params": ckpt["params"],
                         "bytes": sum(t.numel() * t.element_size() for t in ckpt["weights"].values()),
                         "train_secs": ckpt["train_secs"], "sample_secs": results["spread"][method]["secs"]}
    with checkpoint.atomic(into) as tmp:
        os.makedirs(tmp)
        for name in ("results.json", "generations.jsonl"):
            shutil.copy(os.path.join(folder, name), tmp)
        checkpoint.write_atomic(os.path.join(tmp, "costs.json"), json.dumps(costs, indent=2))


def table(record):
    """The ladder's table (markdown) from the seeds' records, and the rows' numbers for the figure."""
    seeds = sorted(int(f[4:]) for f in os.listdir(record) if f.startswith("seed"))
    if not seeds:
        sys.exit(f"no seed finished in {record} yet: run python -m tools.ladder")
    per = {}
    for s in seeds:
        folder = os.path.join(record, f"seed{s}")
        rows = {r["method"]: r for r in json.load(open(os.path.join(folder, "results.json")))["rows"]}
        pairs = [json.loads(line) for line in open(os.path.join(folder, "generations.jsonl"))]
        per[s] = {"rows": rows, "gens": {m: [p[m] for p in pairs] for m in rows}, "refs": [p["code"] for p in pairs],
                  "costs": json.load(open(os.path.join(folder, "costs.json")))}
    names = list(dict.fromkeys(m for s in seeds for m in per[s]["rows"]))
    titles = {per[s]["costs"][m]["title"]: i for s in seeds for i, m in enumerate(RUNGS) if m in per[s]["costs"]}
    rung = lambda name: max(((len(t), i) for t, i in titles.items() if name == t or name.startswith(t + " ")), default=(0, -1))[1]
    names.sort(key=rung)  # the baselines, then the rungs in RUNGS's order, each with its picks (a stable sort)
    stats, lines = {}, []
    for name in names:
        have = [s for s in seeds if name in per[s]["rows"]]
        stats[name] = {c: [per[s]["rows"][name].get(c) for s in have] for c in SHOWN}
        if name != BASE and all(BASE in per[s]["rows"] for s in have):
            stats[name]["vs"] = versus(per, have, name, BASE)
        first_row = lambda title: name == title or name.startswith(title + " (") and name.endswith(" top-1")
        cost = next(({k: statistics.fmean(per[s]["costs"][m][k] for s in have) for k in ("params", "bytes", "train_secs",
                      "sample_secs")} for m in RUNGS if first_row(per[have[0]]["costs"][m]["title"])), None)
        stats[name]["cost"] = cost
    spent = [sum(c["train_secs"] + c["sample_secs"] for c in per[s]["costs"].values()) for s in seeds]
    lines += [f"`train.py {' '.join(SETTINGS)}` for every rung (its rate: the sweep below), then `sample.py "
              f"{' '.join(SAMPLING)}`; the methods' own seconds (training and sampling; model loading and the oracle aside) "
              f"{sum(spent):,.0f} s over the seeds ({min(spent):,.0f}–{max(spent):,.0f} s a seed).", "",
              f"Seeds {', '.join(map(str, seeds))}: mean ± standard deviation over the seeds; A − {BASE} as the mean "
              "over seeds with its 95% t-interval, and the seeds whose paired bootstrap (1,000 resamples of the test "
              "pairs) lies above ↑ or below ↓ zero. Costs: mean over seeds, on the method's first row.", "",
              "| method | params | bytes | train s | sample s | " + " | ".join(SHOWN) + " | " + " | ".join(f"Δ {m}" for m in TESTED) + " |",
              "|" + " --- |" * (5 + len(SHOWN) + len(TESTED))]
    first = {list(RUNGS)[rung(n)]: n for n in names if stats[n]["cost"]}  # each rung's first row
    asked = [(first[a], first[b]) for a, b in ASKED if a in first and b in first]
    for name in names:
        c = stats[name]["cost"]
        cost = [f"{c['params']:,.0f}", f"{c['bytes']:,.0f}", f"{c['train_secs']:.0f}", f"{c['sample_secs']:.0f}"] if c else [""] * 4
        vs = stats[name].get("vs")
        lines.append(f"| {name} | " + " | ".join(cost) + " | " + " | ".join(fmt(stats[name][m]) for m in SHOWN) + " | "
                     + " | ".join(diff(vs[m] if vs else None) for m in TESTED) + " |")
    for a, b in asked:
        vs = versus(per, [s for s in seeds if a in per[s]["rows"] and b in per[s]["rows"]], a, b)
        stats[a].setdefault("asked", {})[b] = vs
        lines += ["", f"{a} − {b} (as above: mean over seeds [95% t-interval], seeds significant alone): "
                  + ", ".join(f"Δ {m} {diff(vs[m])}" for m in TESTED) + "."]
    return "\n".join(lines), stats, seeds


def versus(per, seeds, a, b):
    """Row a − row b on each metric of TESTED: a paired bootstrap over the test pairs in each seed, and over the
    seeds the mean difference with its 95% t-interval. Returns {metric: ((mean, low, high), up, down, n)}."""
    tests = [metrics.paired_bootstrap(per[s]["gens"][a], per[s]["gens"][b], per[s]["refs"]) for s in seeds]
    return {m: (seed_summary([t[m]["diff"] for t in tests]) if len(tests) > 1 else (tests[0][m]["diff"], None, None),
                sum(t[m]["significant"] and t[m]["diff"] > 0 for t in tests),
                sum(t[m]["significant"] and t[m]["diff"] < 0 for t in tests), len(tests)) for m in TESTED}


def fmt(xs):
    """A row's cell: mean ± standard deviation over the seeds."""
    return "—" if None in xs else f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"


def diff(vs):
    """A difference's cell: the mean over seeds [its 95% t-interval], the seeds significantly above ↑ and below ↓."""
    if vs is None:
        return ""
    (mean, low, high), up, down, n = vs
    return (f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]" if low is not None else f"{mean:+.3f}") + f" {up}↑ {down}↓ of {n}"


def headline(stats, seeds):
    """The README's rows of the table: the manual prompt and each rung's first row (no picks)."""
    lines = ["| method | params | bleu4 | codebleu | exact_match | Δ bleu4 | Δ codebleu |", "|" + " --- |" * 7]
    for name in [n for n in stats if stats[n]["cost"] or n == "manual prompt"]:
        c, vs = stats[name]["cost"], stats[name].get("vs") or {}
        lines.append(f"| {name} | {c['params']:,.0f} | " if c else f"| {name} | 0 | ")
        lines[-1] += " | ".join([*(fmt(stats[name][m]) for m in ("bleu4", "codebleu", "exact_match")),
                                 diff(vs.get("bleu4")), diff(vs.get("codebleu"))]) + " |"
    return "\n".join(lines) + f"\n\nSeeds {', '.join(map(str, seeds))}; Δ: A − {BASE} (tools/ladder.py, docs/results.md)."


def figure(stats, seeds, path):
    """Each row's BLEU-4 and CodeBLEU, mean with its 95% t-interval over the seeds, the rungs' trainable parameters
    in their labels: the tuned soft prompt orange (its mean a dashed line), each rung's first row dark, its picks
    light, the rows that read the references grey."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in stats if None not in stats[n]["bleu4"]]
    colour = lambda n: "C1" if n == BASE else "0.6" if "oracle" in n else "C0" if stats[n]["cost"] or n in (
        "manual prompt", "no context") else "#9ecae1"
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.32 * len(names) + 1.6), sharey=True)
    for ax, metric in zip(axes, ("bleu4", "codebleu")):
        means, halves = [], []
        for n in names:
            mean, low, high = seed_summary(stats[n][metric]) if len(stats[n][metric]) > 1 else (stats[n][metric][0], None, None)
            means.append(mean)
            halves.append(0 if low is None else mean - low)
        ax.barh(range(len(names)), means, xerr=halves, color=[colour(n) for n in names], capsize=2)
        if BASE in names:
            ax.axvline(means[names.index(BASE)], color="C1", linestyle="--", linewidth=1)
        ax.set_xlabel(f"{metric} (mean, 95% t-interval over {len(seeds)} seeds)")
    axes[0].invert_yaxis()  # (shared: once) the first row at the top
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels([n + (f"  [{stats[n]['cost']['params']:,.0f} params]" if stats[n]["cost"] else "") for n in names],
                            fontsize=7)
    fig.suptitle(f"The ladder on SmolLM2-135M-Instruct / CoNaLa (tools/ladder.py), seeds {', '.join(map(str, seeds))}", fontsize=10)
    fig.tight_layout()
    with checkpoint.atomic(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")  # (long labels: the canvas grows to hold them)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    p.add_argument("--out", default="out/ladder-smollm2", help="the runs (checkpoints: large, not committed)")
    p.add_argument("--record", default=os.path.join(ROOT, "docs", "ladder"), help="the seeds' records (committed)")
    p.add_argument("--table", action="store_true", help="only the table and figure from the records")
    p.add_argument("--headline", action="store_true", help="only the README's rows of the table, from the records")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.headline:
        return print(headline(*table(args.record)[1:]))
    if not args.table:
        os.makedirs(args.record, exist_ok=True)
        rates = sweep_rates(args.record, args.out + "-sweep")
        for seed in args.seeds:
            if not os.path.exists(os.path.join(args.record, f"seed{seed}")):
                run_seed(seed, rates, args.record, args.out)
    text, stats, seeds = table(args.record)
    figure(stats, seeds, os.path.join(ROOT, "docs", "figures", "ladder.png"))
    text += "\n\n" + sweep_table(args.record) + f"\n\nThis command: {time.perf_counter() - t0:.0f} s (each seed's own times above)."
    checkpoint.write_atomic(os.path.join(args.record, "ladder.md"), text + "\n")  # what report.py's block shows
    print(text)


def sweep_table(record):
    """The sweep as the records hold it: each rung's rates and held-out token losses, its best in bold."""
    done = json.load(open(os.path.join(record, "sweep.json")))
    lines = ["The sweep (training seed 0, held-out token loss after the same steps; the best rate in bold, the one "
             "every seed is trained at; DDPT-PD and its regressor at soft prompt tuning's):", "",
             "| method | rate: held-out token loss |", "| --- | --- |"]
    for m, rates in RUNGS.items():
        have = [lr for lr in rates or [] if f"{m}={lr:g}" in done]
        best = best_rate(done, m, have)
        cells = [(f"**{lr:g}: {done[f'{m}={lr:g}']['loss']:.4f}**" if lr == best else f"{lr:g}: {done[f'{m}={lr:g}']['loss']:.4f}")
                 for lr in have]
        lines.append(f"| {m} | {' · '.join(cells) or 'soft prompt tuning' + chr(39) + 's rate'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
