"""What running the generated programs adds to a seed's table (sample.py): where exec and exact match
disagree (demo), and pass@1 / pass@k of k programs per problem (HumanEval). The programs themselves
run in execution.py's sandbox, never in this process."""
import torch

import llm
import metrics


def disagreements(rows, test, passed):
    """Where exec and exact match disagree, over every row's pairs, with two examples each way."""
    ways = {"runs like the reference, other text": [], "same text, runs otherwise": []}
    for r in rows:
        for p, g, ok in zip(test, r.gens, passed(r.gens)):
            if ok != (g.strip() == p["code"].strip()):
                ways[list(ways)[not ok]].append({"method": r.name, "nl": p["nl"], "reference": p["code"], "generated": g})
    return {way: {"count": len(found), "examples": list({e["generated"]: e for e in found}.values())[:2]}
            for way, found in ways.items()}


def pass_at_k(groups, passed, k):
    """pass@1 and pass@k of each group of k programs per problem ({name: k lists of programs}):
    a stochastic method's k prompts (one greedy program each) against the manual prompt's k
    temperature samples, k programs against k programs."""
    out = []
    for name, draws in groups.items():
        c = [sum(col) for col in zip(*(passed(g) for g in draws))]  # programs that passed, per problem
        out.append({"method": name, "pass@1": sum(metrics.pass_at_k(k, n, 1) for n in c) / len(c),
                    f"pass@{k}": sum(metrics.pass_at_k(k, n, k) for n in c) / len(c)})
    return out


def humaneval_pass_at_k(setup, res, generate):
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
    return pass_at_k(groups, setup.passed, args.k)
