"""CodeBLEU's structural halves from Python's own `ast` (Ren et al. 2020): syntax match (shared
AST subtrees) and data-flow match (def-use edges with variables renamed). The codebleu package
gets them from tree-sitter; this file follows tree-sitter's shapes and the package's data-flow
rules closely enough to land near its scores (tests/test_metrics.py measures how near). Code that
does not parse is first repaired as tree-sitter's error recovery would read it (code_repair.py).
metrics.codebleu adds the n-gram halves.
"""
import ast
import functools
import io
import re
import tokenize
from collections import Counter

from evaluation.code_repair import MISSING, parse

# ---- syntax match: tree-sitter-shaped subtrees --------------------------------------------------
SKIP = (ast.operator, ast.cmpop, ast.boolop, ast.unaryop, ast.expr_context)  # anonymous in tree-sitter


# a string literal's prefix and body, and the escape sequences tree-sitter-python names in a body
LITERAL = re.compile(r"""([A-Za-z]*)(?:'{3}([\s\S]*?)'{3}|"{3}([\s\S]*?)"{3}"""
                     r"""|'((?:\\[\s\S]|[^'\\\n])*)'|"((?:\\[\s\S]|[^"\\\n])*)")""")
ESCAPE = re.compile(r"""\\(?:u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|\d{1,3}|\r?\n|['"abfrntv\\]|N\{[^}]+\})""")
BYTES_ESCAPE = re.compile(r"""\\(?:x[0-9a-fA-F]{2}|\d{1,3}|\r?\n|['"abfrntv\\])""")


def subtrees(tree):
    """The shape of every node with children, as tree-sitter-python draws them: strings have
    start/content/end children, calls an argument_list, assignments sit in an expression
    statement, comprehensions have for-in and if clauses, dicts pairs, bodies blocks; operators
    are unnamed. Only structure is compared, never names or values. (Docstrings are gone from the
    text before: `package_text`.)"""
    shapes, source = [], getattr(tree, "source", None)
    lines = source and [line.encode() for line in source.split("\n")]  # ast's offsets count UTF-8 bytes

    def node(label, kids, broken=False):
        kids = [k for k in kids if k is not None]
        if not kids:
            return label
        shapes.append(f"({label}{'!' if broken else ''} {' '.join(kids)})")
        return shapes[-1]

    def string(n):
        """tree-sitter's string: start, content (with an escape_sequence child per escape), end;
        literals written side by side are a concatenated_string of such strings. A backslash that
        starts no escape is an unnamed child: the content is then a subtree that prints as a leaf."""
        text = None
        if lines and n.end_lineno <= len(lines):  # its own text (ast.get_source_segment, lines split once)
            text = b"\n".join(lines[n.lineno - 1:n.end_lineno])
            end = len(text) - len(lines[n.end_lineno - 1]) + n.end_col_offset
            text = text[n.col_offset:end].decode(errors="replace")
        if not text:
            return node("string", ["start", "content" if n.value else None, "end"])
        kids = []
        for m in LITERAL.finditer(text):
            prefix, body = m[1].lower(), next(g for g in m.groups()[1:] if g is not None)
            escapes = 0 if "r" in prefix else len((BYTES_ESCAPE if "b" in prefix else ESCAPE).findall(body))
            if "r" not in prefix and "\\" in body and not escapes:  # stray backslashes only: a subtree
                shapes.append("(content)")  # of its own (unnamed children), a leaf in its parent's shape
            kids.append(node("string", ["start", node("content", ["escape"] * escapes) if body else None, "end"]))
        if not kids:
            return node("string", ["start", "content" if n.value else None, "end"])
        return kids[0] if len(kids) == 1 else node("concatenated_string", kids)

    def shape(n):
        out = _shape(n)
        if getattr(n, "broken", False) and out.startswith("("):  # a repaired node: its own shape never matches
            shapes[-1] = out = out.replace(" ", "! ", 1)
        return out

    def _shape(n):
        if isinstance(n, ast.Constant):
            if isinstance(n.value, (str, bytes)):
                return string(n)
            return f"Constant:{type(n.value).__name__}"
        if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            kids = [shape(t) for t in getattr(n, "targets", [getattr(n, "target", None)])]
            kids += [shape(n.annotation) if isinstance(n, ast.AnnAssign) else None, shape(n.value) if n.value else None]
            return node("expr", [node(type(n).__name__, kids)])
        if isinstance(n, ast.Call):
            args = [shape(a) for a in n.args + n.keywords]
            return node("call", [shape(n.func), node("argument_list", args) or "argument_list0"])
        if isinstance(n, ast.keyword):
            return node("keyword", ["Name" if n.arg else None, shape(n.value)])
        if isinstance(n, ast.Dict):
            return node("dict", [node("pair", [shape(k), shape(v)]) if k else node("splat", [shape(v)])
                                 for k, v in zip(n.keys, n.values)])
        if isinstance(n, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            kids = [node("pair", [shape(n.key), shape(n.value)])] if isinstance(n, ast.DictComp) else [shape(n.elt)]
            for g in n.generators:
                kids += [node("for_in", [shape(g.target), shape(g.iter)])] + [node("if", [shape(c)]) for c in g.ifs]
            return node(type(n).__name__, kids)
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            dotted = lambda name: node("dotted_name", ["Name"] * len(name.split(".")))
            kids = [dotted(n.module)] if isinstance(n, ast.ImportFrom) and n.module else []
            kids += [node("aliased", [dotted(a.name), "Name"]) if a.asname else dotted(a.name) if a.name != "*" else "*"
                     for a in n.names]
            return node(type(n).__name__, kids)
        if isinstance(n, ast.arguments):
            params = [shape(a) for a in n.posonlyargs + n.args + n.kwonlyargs + n.defaults]
            return node("parameters", params + ["vararg" if n.vararg else None, "kwarg" if n.kwarg else None]) or "parameters0"
        if isinstance(n, ast.arg):
            return node("typed", ["Name", shape(n.annotation)]) if n.annotation else "Name"
        if isinstance(n, ast.Expr):
            if getattr(n, "py2", False):
                return node(n.value.func.id + "_statement", [shape(a) for a in n.value.args])
            return node("expr", [shape(n.value)])
        kids = ["Name"] if isinstance(getattr(n, "name", None), str) and not isinstance(n, ast.alias) else []
        for field, value in ast.iter_fields(n):
            if field in ("body", "orelse", "finalbody", "handlers") and isinstance(value, list):
                kids.append(node("block", [shape(s) for s in value]) if value else None)
            elif isinstance(value, ast.AST) and not isinstance(value, SKIP):
                kids.append(shape(value))
            elif isinstance(value, list):
                kids += [shape(v) for v in value if isinstance(v, ast.AST) and not isinstance(v, SKIP)]
        return node(type(n).__name__, kids)

    if not node("module", [shape(s) for s in tree.body], getattr(tree, "broken", False)).startswith("("):
        shapes.append("(module)")  # the root counts even without children, as in the package
    return shapes


# ---- data-flow match: the package's def-use rules ----------------------------------------------
def _own(n):
    """(position, text, is a name) of the tokens a node holds itself, not through its children:
    names, literals, attribute names, keyword and parameter names, def and import names."""
    if isinstance(n, ast.Name):
        return [((n.lineno, n.col_offset), n.id, True)] if n.id != MISSING else []
    if isinstance(n, ast.Constant):
        return [((n.lineno, n.col_offset), repr(n.value), False)]
    if isinstance(n, ast.Attribute):  # the attribute's own token ends the node
        return [((n.end_lineno, n.end_col_offset - len(n.attr)), n.attr, True)]
    if isinstance(n, (ast.arg, ast.keyword)) and n.arg:
        return [((n.lineno, n.col_offset), n.arg, True)]
    if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [((n.lineno, n.col_offset + 1), n.name, True)]
    if isinstance(n, ast.alias):
        parts = (n.name.split(".") if n.name != "*" else []) + ([n.asname] if n.asname else [])
        return [((n.lineno, n.col_offset + k), p, True) for k, p in enumerate(parts)]
    return []


def _leaves(node):
    """Every token of a subtree that is not a keyword or punctuation, in source order."""
    return sorted(x for n in ast.walk(node) for x in _own(n))


def _start(n):
    return getattr(n, "lineno", 0), getattr(n, "col_offset", 0)


def dataflow(tree):
    """Def-use edges as the codebleu package's tree-sitter data flow has them. Tokens are read in
    source order, the right side of an assignment before its targets and a comprehension's
    for-in clauses before its element. The first occurrence of a name registers it; a later one
    is (x, comesFrom, [x]). Each target of an assignment is (x, computedFrom, [every token on the
    right]) and registers x anew. Loops are read twice (uses see the loop's own assignments);
    the branches of an if merge. Only edges that have parents or are parents are kept. Names are
    renamed var_0, var_1... by order of appearance, so renaming variables changes nothing."""
    edges = {}  # (position, relation) -> [name, parent names, parent positions]

    def emit(pos, name, rel, parents, where):
        e = edges.setdefault((pos, rel), [name, [], []])
        e[1] += [p for p in parents if p not in e[1]]
        e[2] += [w for w in where if w not in e[2]]

    def assign(target, value, states):
        pairs = [(target, value)]
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
                and len(target.elts) == len(value.elts):  # a, b = x, y: element by element
            pairs = list(zip(target.elts, value.elts))
        for _, right in pairs:
            states = visit(right, states)
        for left, right in pairs:
            src = _leaves(right)
            for pos, name, _ in _leaves(left):
                emit(pos, name, "computedFrom", [x for _, x, _ in src], [p for p, _, _ in src])
                states[name] = [pos]
        return states

    def read(pos, name, ident, states):
        """One token: a use of a live name, or a first occurrence (a name's registers it)."""
        if name in states:
            emit(pos, name, "comesFrom", [name], states[name])
        else:
            if ident:  # literals never register
                states[name] = [pos]
            emit(pos, name, "comesFrom", [], [])

    def tokens(n, states):
        """The node's own tokens and its children, in source order."""
        items = [(pos, (name, ident)) for pos, name, ident in _own(n) + getattr(n, "stray", [])]
        items += [(_start(c), c) for c in ast.iter_child_nodes(n) if not isinstance(c, SKIP)]  # no tokens
        for pos, item in sorted(items, key=lambda x: x[0]):
            if isinstance(item, ast.AST):
                states = visit(item, states)
            else:
                read(pos, *item, states)
        return states

    def visit(n, states):  # updates `states` (name -> positions of its live definitions) in place
        if isinstance(n, (ast.Name, ast.Constant)):  # a single token (most nodes): no sorting needed
            for token in _own(n):
                read(*token, states)
            return states
        if getattr(n, "unclosed", False) and not isinstance(n, ast.Module):
            return tokens(n, states)  # tree-sitter's ERROR node: a plain run of tokens, no assignment
        if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for t in getattr(n, "targets", [getattr(n, "target", None)]) if n.value else []:
                states = assign(t, n.value, states)
        elif isinstance(n, (ast.For, ast.AsyncFor, ast.While)):
            for _ in range(2):
                states = visit(n.test, states) if isinstance(n, ast.While) else assign(n.target, n.iter, states)
                for s in n.body + n.orelse:
                    states = visit(s, states)
        elif isinstance(n, ast.If):
            states, merged = visit(n.test, states), {}
            for body in (n.body, n.orelse):
                branch = dict(states)
                for s in body:
                    branch = visit(s, branch)
                for k, v in branch.items():
                    merged[k] = sorted(set(merged.get(k, []) + v))
            states = merged
        elif isinstance(n, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            for g in n.generators:
                states = assign(g.target, g.iter, states)
            rest = [n.key, n.value] if isinstance(n, ast.DictComp) else [n.elt]
            for child in rest + [c for g in n.generators for c in g.ifs]:
                states = visit(child, states)
        else:
            states = tokens(n, states)
        return states

    visit(tree, {})
    keep = {pos for (pos, _), (_, parents, _) in edges.items() if parents}
    keep |= {w for _, _, where in edges.values() for w in where}
    names, out = {}, []
    for (pos, rel), (var, parents, _) in sorted(edges.items()):
        if pos in keep:
            for x in parents + [var]:
                names.setdefault(x, f"var_{len(names)}")
            out.append((names[var], rel, tuple(names[x] for x in parents)))
    return out


# ---- both halves: the text the package reads, parsed once -------------------------------------
# what makes the package's rewrite differ from the code: a comment, a string at a line's start, a
# continued line, a blank line, a tab or another control character between tokens
REWRITTEN = re.compile(r"""#|\\\n|[\t\r\f\v]|^[ ]*[A-Za-z]{0,2}['"]|^[ ]*$""", re.M)


def package_text(code):
    """The text the package's structural halves read: its docstring rule drops every string token
    that begins a logical line or sits at column 0 (docstrings, but also the string of
    `'-'.join(x)` at a line's start), and comments and blank lines go; code that Python's
    tokenizer rejects (cut off inside brackets or a string) stays as it is."""
    if not REWRITTEN.search(code):
        return code  # the package's rewrite would give it back as it is
    out, prev, last_line, last_col = [], tokenize.INDENT, -1, 0
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            (line, col), (end_line, end_col) = tok.start, tok.end
            last_col = 0 if line > last_line else last_col
            out.append(" " * max(0, col - last_col))
            if not (tok.type == tokenize.COMMENT or tok.type == tokenize.STRING
                    and (prev in (tokenize.INDENT, tokenize.NEWLINE) or col == 0)):
                out.append(tok.string)
            prev, last_line, last_col = tok.type, end_line, end_col
    except (tokenize.TokenError, SyntaxError):
        return code
    return "\n".join(line for line in "".join(out).split("\n") if line.strip())


@functools.lru_cache(maxsize=1 << 14)
def structure(code):
    """(subtrees, their set, data-flow edges as a Counter) of one text as the package reads it,
    parsed once: a reference scored against every table row and every bootstrap resample is read
    once. Not to be mutated."""
    tree = parse(package_text(code))
    trees, flow = (subtrees(tree), Counter(dataflow(tree))) if tree else ([], Counter())
    return tuple(trees), frozenset(trees), flow


def structure_counts(hyp, ref):
    """One pair's (syntax hits, syntax total, data-flow hits, data-flow total): the reference's
    subtrees and data-flow edges, and how many of them the hypothesis has."""
    try:
        ref_trees, _, ref_flow = structure(ref)
        _, hyp_trees, hyp_flow = structure(hyp)
    except RecursionError:  # nested deeper than Python's stack: nothing to compare
        return 0, 0, 0, 0
    return (sum(t in hyp_trees for t in ref_trees), len(ref_trees), sum((ref_flow & hyp_flow).values()),
            sum(ref_flow.values()))


def structure_match(hyps, refs):
    """Corpus syntax match and data-flow match: shares of the references' subtrees and edges found
    in the hypotheses, as the package counts them. A reference without data flow adds nothing to
    the totals; for a corpus with none at all the data-flow match is None (metrics.codebleu)."""
    s_hit, s_all, d_hit, d_all = (sum(col) for col in zip((0, 0, 0, 0), *map(structure_counts, hyps, refs)))
    return (s_hit / s_all if s_all else 0.0), (d_hit / d_all if d_all else None)
