"""What running the generated programs adds to a seed's table (sample.py): where exec and exact match
disagree, and pass@1 / pass@k of k programs per problem (tasks/humaneval.py uses it). The programs
themselves run in execution.py's sandbox, never in this process."""
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
