"""The ladder: every prompt method on one frozen LLM and data set, with one set of settings, each at
its own swept rate and seeded on its own, over several training seeds, in one table.

    python -m tools.ladder                    # SmolLM2-135M-Instruct / CoNaLa, bf16 on the CPU: the sweep, seeds 0-4
    python -m tools.ladder --seeds 0 1        # resumes: a finished sweep point or seed is read, never redone
    python -m tools.ladder --table            # the table (and docs/figures/ladder.png) from the seeds finished so far

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
            picks and scores) per method, mean over seeds.
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
    best = {m: min(rates, key=lambda lr: done[f"{m}={lr:g}"]["loss"]) for m, rates in RUNGS.items() if rates}
    return best | {m: best["prompt-tuning"] for m, rates in RUNGS.items() if rates is None}


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
    stats, lines = {}, []
    for name in names:
        have = [s for s in seeds if name in per[s]["rows"]]
        stats[name] = {c: [per[s]["rows"][name].get(c) for s in have] for c in SHOWN}
        if name != BASE and all(BASE in per[s]["rows"] for s in have):
            tests = [metrics.paired_bootstrap(per[s]["gens"][name], per[s]["gens"][BASE], per[s]["refs"]) for s in have]
            stats[name]["vs"] = {m: (seed_summary([t[m]["diff"] for t in tests]) if len(tests) > 1 else (tests[0][m]["diff"], None, None),
                                     sum(t[m]["significant"] and t[m]["diff"] > 0 for t in tests),
                                     sum(t[m]["significant"] and t[m]["diff"] < 0 for t in tests), len(tests)) for m in TESTED}
        first_row = lambda title: name == title or name.startswith(title + " (") and name.endswith(" top-1")
        cost = next(({k: statistics.fmean(per[s]["costs"][m][k] for s in have) for k in ("params", "bytes", "train_secs",
                      "sample_secs")} for m in RUNGS if first_row(per[have[0]]["costs"][m]["title"])), None)
        stats[name]["cost"] = cost
    fmt = lambda xs: "—" if None in xs else f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.3f}"
    diff = lambda v: "" if v is None else (f"{v[0][0]:+.3f} [{v[0][1]:+.3f}, {v[0][2]:+.3f}]" if v[0][1] is not None
                                           else f"{v[0][0]:+.3f}") + f" {v[1]}↑ {v[2]}↓ of {v[3]}"
    lines += [f"Seeds {', '.join(map(str, seeds))}: mean ± standard deviation over the seeds; A − {BASE} as the mean "
              "over seeds with its 95% t-interval, and the seeds whose paired bootstrap (1,000 resamples of the test "
              "pairs) lies above ↑ or below ↓ zero. Costs: mean over seeds, on the method's first row.", "",
              "| method | params | bytes | train s | sample s | " + " | ".join(SHOWN) + " | " + " | ".join(f"Δ {m}" for m in TESTED) + " |",
              "|" + " --- |" * (5 + len(SHOWN) + len(TESTED))]
    for name in names:
        c = stats[name]["cost"]
        cost = [f"{c['params']:,.0f}", f"{c['bytes']:,.0f}", f"{c['train_secs']:.0f}", f"{c['sample_secs']:.0f}"] if c else [""] * 4
        vs = stats[name].get("vs")
        lines.append(f"| {name} | " + " | ".join(cost) + " | " + " | ".join(fmt(stats[name][m]) for m in SHOWN) + " | "
                     + " | ".join(diff(vs[m] if vs else None) for m in TESTED) + " |")
    return "\n".join(lines), stats, seeds


def figure(stats, seeds, path):
    """Each row's BLEU-4 and CodeBLEU, mean with its 95% t-interval over the seeds, trainable parameters as labels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [n for n in stats if None not in stats[n]["bleu4"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(names) + 1.5), sharey=True)
    for ax, metric in zip(axes, ("bleu4", "codebleu")):
        means, halves = [], []
        for n in names:
            mean, low, high = seed_summary(stats[n][metric]) if len(stats[n][metric]) > 1 else (stats[n][metric][0], None, None)
            means.append(mean)
            halves.append(0 if low is None else mean - low)
        ax.barh(range(len(names)), means, xerr=halves, color=["C1" if n == BASE else "C0" for n in names], capsize=3)
        ax.set_xlabel(f"{metric} (mean, 95% t-interval over {len(seeds)} seeds)")
        ax.invert_yaxis()
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels([n + (f"  [{stats[n]['cost']['params']:,.0f} params]" if stats[n]["cost"] else "") for n in names],
                            fontsize=7)
    fig.suptitle("The ladder on SmolLM2-135M-Instruct / CoNaLa (tools/ladder.py)", fontsize=10)
    fig.tight_layout()
    with checkpoint.atomic(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds")
    p.add_argument("--out", default="out/ladder-smollm2", help="the runs (checkpoints: large, not committed)")
    p.add_argument("--record", default=os.path.join(ROOT, "docs", "ladder"), help="the seeds' records (committed)")
    p.add_argument("--table", action="store_true", help="only the table and figure from the records")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if not args.table:
        os.makedirs(args.record, exist_ok=True)
        rates = sweep_rates(args.record, args.out + "-sweep")
        for seed in args.seeds:
            if not os.path.exists(os.path.join(args.record, f"seed{seed}")):
                run_seed(seed, rates, args.record, args.out)
    text, stats, seeds = table(args.record)
    figure(stats, seeds, os.path.join(ROOT, "docs", "figures", "ladder.png"))
    print(text + f"\n\nRates (tools/ladder.py's sweep): {json.dumps(sweep_rates_done(args.record))}; "
          f"{time.perf_counter() - t0:.0f} s here.")


def sweep_rates_done(record):
    """The rates the records were made with (the sweep's best), without sweeping."""
    path = os.path.join(record, "sweep.json")
    if not os.path.exists(path):
        return {}
    done = json.load(open(path))
    return {m: min((lr for lr in rates if f"{m}={lr:g}" in done), key=lambda lr: done[f"{m}={lr:g}"]["loss"], default=None)
            for m, rates in RUNGS.items() if rates}


if __name__ == "__main__":
    main()
