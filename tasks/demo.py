"""The offline demo task (the default --data): models/demo.py's corpus, its vague manual prompt, and
the behavioural check its generated code runs against in the sandbox (the exec column)."""
import data
from evaluation.execution import Program
from models import demo


DEMO_DATA = {  # what the demo's named variable holds when its code runs: words to find and replace, or numbers
    "words": ["red cat", "blue dog", "red cat", "tea", "sun map", "blue fox", "ink", "owl key", "box", "red fox",
              "cat tea", "dog", "map ink", "sun", "tea", "key box", "owl", "fox red", "blue", "cat", "ink dog", "map"],
    "numbers": [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4, 6, 2],
}
OBSERVE = """import ast, contextlib, io


def observe(code, name, data):
    # what code shows with `name` bound to data: its printed output, else the value of a final
    # expression; and `name` afterwards
    tree, ns, out, last = ast.parse(code), {name: list(data)}, io.StringIO(), None
    final = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    with contextlib.redirect_stdout(out):
        exec(compile(tree, "<code>", "exec"), ns)
        if final is not None:
            last = eval(compile(ast.Expression(final.value), "<code>", "eval"), ns)
    shown = out.getvalue().strip() or ("" if last is None else repr(last))
    return shown, repr(ns.get(name, "<deleted>"))
"""


def demo_program(pair, code, expect=True):
    """The demo's behavioural check: the candidate runs, inside the tests (`observe`), with the
    pair's named variable bound to DEMO_DATA[pair["fixture"]], and must show what the reference
    shows in a run of its own and leave the variable the same (order included: `sorted(x)` does
    not sort x). The reference's observation never enters the candidate's process."""
    name, data = pair["combo"][1], DEMO_DATA[pair["fixture"]]
    program = Program("", f"{OBSERVE}\n\nresult = observe({code!r}, {name!r}, {data!r})\n")
    return program._replace(expect=demo_program(pair, pair["code"], expect=False)) if expect else program


@data.register("demo", prompt="Write code:", program=demo_program)
def demo_splits(data_dir, seed):
    return demo.splits(seed)
