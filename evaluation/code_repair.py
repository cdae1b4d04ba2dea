"""An error-recovering parse of Python code, for CodeBLEU's structural halves (code_ast.py).

Generated code is often cut off or slightly broken. tree-sitter, which the codebleu package
uses, still parses it: it wraps what it cannot read in ERROR nodes and inserts MISSING tokens, so
the intact parts keep their structure. `parse` does the same with Python's own parser: it
repairs the code with the fewest token skips and insertions it finds (a small beam search driven
by the parser's error positions), flags the nodes that hold a repair as `broken`, keeps the
skipped tokens as `stray` (tree-sitter's data flow still reads them), and as a last resort keeps
the longest parseable fragments. Standard library only.
"""
import ast
import bisect
import keyword
import re
import warnings

TOKEN = re.compile(r"""[A-Za-z_]\w*|\d[\w.]*|'(?:\\.|[^'\\\n])*'?|"(?:\\.|[^"\\\n])*"?|\*\*=?|//=?|->|[<>=!]=|\S""")
CLOSE = {"(": ")", "[": "]", "{": "}"}
PY2 = re.compile(r"^(\s*)(print|exec)\b(?!\s*\()(.*)$", re.M)  # Python 2 statements: tree-sitter reads them
FAIL = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError)
BEAM = 3  # repair paths followed at once
STEPS = 3  # repair steps before the fragments: most repairs that succeed need 1 or 2 (docs/evaluation.md)
MISSING = "__missing__"  # the name a repair inserts: no token of the code, so no data flow


def parses(code):
    """Whether Python's own parser accepts the code as it is (no repair)."""
    with warnings.catch_warnings():  # the code's own invalid escapes are not our warnings
        warnings.simplefilter("ignore")
        return _try(code)[0] is not None


def _try(code):
    """(tree, None), or (None, the SyntaxError), or (None, None) for code Python cannot take at all.
    Callers silence the code's own warnings once around all their attempts."""
    try:
        return ast.parse(code), None
    except SyntaxError as e:
        return None, e
    except FAIL:
        return None, None


def _offset(code, line, col):
    return sum(len(s) + 1 for s in code.split("\n")[:max(line or 1, 1) - 1]) + max(col or 1, 1) - 1


def _edits(code, err):
    """Candidate repairs around a syntax error, as (code, where, shift, skipped text, closes): skip a
    token (an ERROR node), insert a name, a comma or a closing bracket (a MISSING node), close what
    is still open at the end (`closes`: tree-sitter cannot finish such a statement, see `_mark`)."""
    spans = [m.span() for m in TOKEN.finditer(code)]
    if not spans:
        return []
    pos = _offset(code, err.lineno, err.offset)
    end = _offset(code, err.end_lineno, err.end_offset) if err.end_lineno else pos
    i = next((k for k, (_, b) in enumerate(spans) if b > pos), len(spans) - 1)
    opens, stack = [], []
    for k, (a, b) in enumerate(spans):
        t = code[a:b]
        if t in CLOSE:
            stack.append(t)
        elif t in ")]}" and stack:
            stack.pop()
        if k + 1 == i:
            opens = list(stack)
    insert = lambda at, text: (code[:at] + text + code[at:], at, len(text), "", False)
    out = []
    if "never closed" in err.msg or "unexpected EOF" in err.msg or "indented block" in err.msg:
        kept = code.rstrip().rstrip(",.")
        closed = kept + "".join(CLOSE[t] for t in reversed(stack))
        out += [(closed, len(kept), len(closed) - len(code), "", True),
                (closed + " pass", len(kept), len(closed) + 5 - len(code), "", True)]
    if "unexpected indent" in err.msg:  # the error line's indentation goes
        a = _offset(code, err.lineno, 1)
        b = a + len(code[a:]) - len(code[a:].lstrip(" \t"))
        out.append((code[:a] + code[b:], a, a - b, "", False))
    for k in (i - 1, i, i + 1):
        if 0 <= k < len(spans):
            a, b = spans[k]
            out.append((code[:a] + code[b:], a, a - b, code[a:b], False))
    out.append(insert(spans[i][0], f" {MISSING} "))
    if opens:
        out.append(insert(spans[i][0], CLOSE[opens[-1]]))
        t = code[slice(*spans[i])]
        if t in ")]}" and t in [CLOSE[o] for o in opens]:  # close everything opened since its partner
            inner = opens[len(opens) - [CLOSE[o] for o in opens][::-1].index(t):]
            out.append(insert(spans[i][0], "".join(CLOSE[o] for o in reversed(inner))))
    out += [insert(a, ", ") for a, _ in spans if pos < a <= end]
    return out


def _point(code, at):
    """(line, column) of a character offset, as ast numbers them."""
    line = code.count("\n", 0, at)
    return line + 1, at - (code.rfind("\n", 0, at) + 1)


def _fragments(code, reach=40):
    """Last resort: left to right, the longest run of at most `reach` tokens that parses (as
    statements: an assignment survives), moved to where it sits in the code; tokens that start no
    such run are skipped. A run that holds the token a syntax error names fails however it ends,
    so after a failure the next run tried ends before that token (`_blocker`)."""
    spans = [m.span() for m in TOKEN.finditer(code)]
    starts = [a for a, _ in spans]
    body, skipped, i = [], [], 0
    while i < len(spans):
        # the longest run first; a token no statement begins with starts none (skipped at once)
        j = min(len(spans), i + reach) - 1 if _starts(code[slice(*spans[i])]) else i - 1
        while j >= i:
            text = code[spans[i][0]:spans[j][1]]
            tree, err = _try(text)
            if tree and tree.body:
                line, col = _point(code, spans[i][0])
                for n in ast.walk(tree):
                    if hasattr(n, "lineno") and n.end_lineno is not None:
                        n.col_offset += col if n.lineno == 1 else 0
                        n.end_col_offset += col if n.end_lineno == 1 else 0
                        n.lineno, n.end_lineno = n.lineno + line - 1, n.end_lineno + line - 1
                body += tree.body
                break
            j = min(j, _blocker(text, err, spans[i][0], starts)) - 1
        else:
            j = i
            skipped.append((_point(code, spans[i][0]), code[spans[i][0]:spans[i][1]]))
        i = j + 1
    if not body:
        return None
    module = ast.Module(body=body, type_ignores=[])
    for n in [module] + body:  # cut out of broken code: their own shapes are not whole
        n.broken = True
    module.stray, module.source = _stray(skipped), code
    return module


def _starts(token):
    """Whether a statement can begin with this token (a name, a keyword other than a clause's
    continuation, a literal, an opening bracket, a unary operator, a decorator)."""
    if token[0].isalpha() or token[0] == "_":
        return token not in ("else", "elif", "except", "finally", "in", "is", "and", "or", "as")
    return token[0].isdigit() or token[0] in "'\"([{-+~*@."


def _blocker(text, err, base, starts):
    """Index (in `starts`, the code's token starts) of the first token that makes every run from
    the same start that holds it fail: a line indented wrongly, a bracket never closed or never
    opened, a string never ended, the token a plain "invalid syntax" stops at, the last of the
    tokens a missing comma stands between. Any other error names none (a large index)."""
    if err is None or not err.lineno:
        return len(starts)
    if "indent" in err.msg:  # the line's first token
        return bisect.bisect_left(starts, base + _offset(text, err.lineno, 1))
    if err.msg == "invalid syntax" or any(m in err.msg for m in ("never closed", "unmatched", "unterminated string",
                                                                  "does not match opening")):
        at = _offset(text, err.lineno, err.offset)
    elif "forgot a comma" in err.msg and err.end_lineno == err.lineno and err.end_offset > err.offset:
        at = _offset(text, err.end_lineno, err.end_offset) - 1
    else:
        return len(starts)
    return bisect.bisect_right(starts, base + at) - 1


def _stray(tokens):
    """Tokens a repair skipped, as data-flow leaves (position, text, is a name): tree-sitter's
    data flow still reads what sits inside its ERROR nodes. Keywords and punctuation are none."""
    return [(pos, t, t[0].isalpha() or t[0] == "_") for pos, t in tokens
            if re.fullmatch(r"[A-Za-z_]\w*|\d[\w.]*|['\"].*", t) and not keyword.iskeyword(t)]


def _mark(tree, code, where, skipped):
    """Flag every node that holds a repair `broken` (tree-sitter's ERROR and MISSING nodes make
    their ancestors' shapes differ too): the syntax match then counts only the undamaged parts.
    A repair at a node's end is outside it, and so is a skipped token just before its start (an
    ERROR beside it); text inserted at its start is in it. Nodes that hold a closing of what was
    still open at the end are also `unclosed`: tree-sitter reads a statement cut off inside
    brackets as one ERROR node, a plain run of tokens, with no assignment in its data flow
    (code_ast.dataflow)."""
    skips = {at for at, _ in skipped}
    points = [(_point(code, at), closes, at in skips) for at, closes in where]
    tree.stray = _stray([(_point(code, at), text) for at, text in skipped])
    for n in ast.walk(tree):
        if hasattr(n, "end_lineno") and n.end_lineno is not None:
            start, end = (n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)
            inside = [closes for p, closes, skip in points if start < p < end or p == start and not skip]
            n.broken, n.unclosed = bool(inside), any(inside)
    tree.broken, tree.source = bool(points), code
    return tree


def parse(code):
    """`_parse` with the code's own warnings (invalid escapes) silenced: they are not ours."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _parse(code)


def _parse(code):
    """Python's AST of `code`, repaired if it does not parse, with the repaired nodes flagged
    `broken` and the text its positions refer to as `source`; None only for code with no parseable
    expression at all. Each step takes the repair that parses with the most nodes, else follows
    the BEAM repairs that move the error furthest along, for at most STEPS steps; a candidate
    already tried is not parsed again."""
    tree, err = _try(code)
    if tree or err is None:
        if tree:
            tree.source = code
        return tree
    py2 = {code.count("\n", 0, m.start()) + 1 for m in PY2.finditer(code)}
    fixed = PY2.sub(lambda m: f"{m[1]}{m[2]}({m[3].strip()})", code)
    tree, err = _try(fixed)
    beam, where, skipped = [(fixed, err, [], [])], [], []  # (code, its error, repair points, skipped tokens)
    seen = {fixed}
    for _ in range(STEPS):
        if tree or not beam:
            break
        parsed, pending = [], []
        for src, src_err, src_where, src_skipped in beam:
            for cand, at, shift, text, closes in _edits(src, src_err):
                if cand in seen:  # the same repair reached by another path
                    continue
                seen.add(cand)
                t, e = _try(cand)
                moved = [(w + shift if w >= at else w, c) for w, c in src_where] + [(at, closes)]
                gone = [(w + shift if w >= at else w, x) for w, x in src_skipped] + ([(at, text)] if text else [])
                if t:
                    parsed.append((sum(1 for _ in ast.walk(t)), t, cand, moved, gone))
                elif e is not None:
                    pending.append((_offset(cand, e.lineno, e.offset) - len(cand), len(cand), cand, e, moved, gone))
        if parsed:
            _, tree, fixed, where, skipped = max(parsed, key=lambda p: p[0])
        beam = [p[2:] for p in sorted(pending, key=lambda p: p[:2], reverse=True)[:BEAM]]
    if not tree:
        return _fragments(code)
    for n in ast.walk(tree):  # a Python 2 print: tree-sitter's print_statement, no call in it
        if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and n.lineno in py2 \
                and isinstance(n.value.func, ast.Name) and n.value.func.id in ("print", "exec"):
            n.py2 = True
    return _mark(tree, fixed, where, skipped)
