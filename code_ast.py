"""CodeBLEU's structural halves from Python's own `ast` (Ren et al. 2020): syntax match (shared
AST subtrees) and data-flow match (def-use edges with variables renamed). The codebleu package
gets them from tree-sitter; these are rank-correlated with its scores, not equal (see
tests/test_metrics.py). metrics.codebleu adds the n-gram halves.
"""
import ast
from collections import Counter


def parse(code):
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def subtrees(tree):
    """The shape of every AST node that has children: node types only, no names or values."""
    shapes = []

    def shape(node):
        kids = [shape(k) for k in ast.iter_child_nodes(node) if not isinstance(k, ast.expr_context)]
        name = type(node).__name__ + (f":{type(node.value).__name__}" if isinstance(node, ast.Constant) else "")
        if not kids:
            return name
        shapes.append(f"({name} {' '.join(kids)})")
        return shapes[-1]

    shape(tree)
    return shapes


def dataflow(tree):
    """Def-use edges, one per token, as the codebleu package's tree-sitter data flow has them: the
    targets of an assignment are (x, computedFrom, [every name, attribute and literal on the
    right, in order]); each of those is (y, comesFrom, [y]) if y was assigned before, else
    (y, comesFrom, []); any later use of an assigned x is (x, comesFrom, [x]). In source order,
    names renamed var_0, var_1... by order of appearance, so renaming variables changes nothing."""
    flow, defined = {}, set()  # token position -> (name, relation, parents)

    def at(node):
        return (node.lineno, node.col_offset)

    def leaves(node):
        out = []
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                out.append((at(n), n.id))
            elif isinstance(n, ast.Attribute):  # the attribute's own token ends the node
                out.append(((n.end_lineno, n.end_col_offset - len(n.attr)), n.attr))
            elif isinstance(n, ast.Constant):
                out.append((at(n), repr(n.value)))
        return sorted(out)

    def add(pos, name, rel, parents):
        if pos in flow:  # one entry per token: merge, as the package does
            old = flow[pos]
            parents = old[2] + [p for p in parents if p not in old[2]]
            name, rel = old[0], old[1]
        flow[pos] = (name, rel, parents)

    def assign(targets, value):
        visit(value)
        src = leaves(value)
        for pos, name in src:
            if pos not in flow:
                add(pos, name, "comesFrom", [name] if name in defined else [])
        for t in targets:
            for pos, name in leaves(t):
                if src:
                    add(pos, name, "computedFrom", [x for _, x in src])
            defined.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))

    def visit(node):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr)) and node.value:
            assign(node.targets if isinstance(node, ast.Assign) else [node.target], node.value)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            assign([node.target], node.iter)
            for child in (node.ifs if isinstance(node, ast.comprehension) else node.body + node.orelse):
                visit(child)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for g in node.generators:  # the loop variables are assigned before the element reads them
                visit(g)
            for child in ([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]):
                visit(child)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in defined:
            add(at(node), node.id, "comesFrom", [node.id])
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
        elif not isinstance(node, ast.Name):
            for child in ast.iter_child_nodes(node):
                visit(child)

    visit(tree)
    names, out = {}, []
    for _, (var, rel, parents) in sorted(flow.items()):
        for x in parents + [var]:
            names.setdefault(x, f"var_{len(names)}")
        out.append((names[var], rel, tuple(names[x] for x in parents)))
    return out


def structure_match(hyps, refs):
    """Corpus syntax match and data-flow match: shares of the references' subtrees and edges
    found in the hypotheses. Unparsable hypotheses match nothing; unparsable references and
    references without data flow add nothing to the totals."""
    s_hit = s_all = d_hit = d_all = 0
    for h, r in zip(hyps, refs):
        rt = parse(r)
        if rt is None:
            continue
        ht = parse(h)
        ref_trees, ref_flow = subtrees(rt), dataflow(rt)
        hyp_trees, hyp_flow = (set(subtrees(ht)), Counter(dataflow(ht))) if ht else (set(), Counter())
        s_hit, s_all = s_hit + sum(t in hyp_trees for t in ref_trees), s_all + len(ref_trees)
        d_hit, d_all = d_hit + sum((Counter(ref_flow) & hyp_flow).values()), d_all + len(ref_flow)
    # no reference data flow at all: nothing to match, full credit (as the package's total does)
    return (s_hit / s_all if s_all else 0.0), (d_hit / d_all if d_all else 1.0)
