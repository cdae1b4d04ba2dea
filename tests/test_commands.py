"""Every module imports, every import anywhere (function-local ones too) resolves, and every documented
command starts: a moved module cannot break a documented command again."""
import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("codefusion", "evaluation", "methods", "models", "runtime", "tasks", "tools")
CORE = ("data", "ddpt", "diffusion", "llm", "metrics", "prompts", "sample", "train")


def modules():
    """Every Python module of the repository but the tests, by its import name."""
    out = [name[:-3] for name in os.listdir(ROOT) if name.endswith(".py") and name != "conftest.py"]
    for folder in FOLDERS:
        out += [f"{folder}.{name[:-3]}" for name in os.listdir(os.path.join(ROOT, folder)) if name.endswith(".py")
                and name != "__init__.py"]
    return sorted(out)


def documented():
    """The `python -m X` modules and the `python X.py` scripts the README, docs/ and docstrings name."""
    texts = [open(os.path.join(ROOT, "README.md")).read()]
    texts += [open(os.path.join(ROOT, "docs", f)).read() for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")]
    texts += [open(os.path.join(ROOT, m.replace(".", "/") + ".py")).read() for m in modules()]
    found = set()
    for text in texts:
        found |= {m for m in re.findall(r"python -m ([a-z_]+(?:\.[a-z_]+)*)", text) if m not in ("pytest", "pip")}
        found |= {s[:-3] for s in re.findall(r"python ([a-z_]+\.py)\b", text)}
    return sorted(found)


def test_the_lists_are_whole():
    assert set(CORE) <= set(modules()) and {"tools.bench", "tools.report", "codefusion.train"} <= set(documented())
    on_disk = {f for f in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, f, "")) and
               os.path.exists(os.path.join(ROOT, f, "__init__.py")) and f != "tests"}
    assert on_disk == set(FOLDERS), "a new folder: add it to FOLDERS"
    top = {name[:-3] for name in os.listdir(ROOT) if name.endswith(".py") and name != "conftest.py"}
    assert top == set(CORE), "the top level is the tutorial's core: put the rest in the folder of its role"


@pytest.mark.parametrize("name", modules())
def test_every_module_imports_and_every_import_in_it_resolves(name):
    importlib.import_module(name)
    tree = ast.parse(open(os.path.join(ROOT, name.replace(".", "/") + ".py")).read())
    for node in ast.walk(tree):  # function-local imports too (a benchmark's), which importing the module skips
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert importlib.util.find_spec(alias.name), f"{name} line {node.lineno}: no module {alias.name}"
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), \
                    f"{name} line {node.lineno}: {node.module} has no {alias.name}"


@pytest.mark.parametrize("command", documented())
def test_every_documented_command_starts(command):
    """`--help` of each: its imports, its parser and its registries (methods, data sets) load."""
    argv = [sys.executable, f"{command}.py"] if "." not in command and os.path.exists(
        os.path.join(ROOT, f"{command}.py")) and command in CORE else [sys.executable, "-m", command]
    done = subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr[-2000:]


def test_every_benchmark_the_docs_name_exists():
    from tools import bench
    named = set()
    for text in [bench.__doc__, open(os.path.join(ROOT, "README.md")).read(),
                 *(open(os.path.join(ROOT, "docs", f)).read() for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))]:
        named |= set(re.findall(r"python -m tools\.bench ([a-z]+)", text))
    assert named and named <= set(bench.BENCHMARKS), named - set(bench.BENCHMARKS)


def imported(name):
    """Every module name `name`'s file imports, anywhere in it."""
    tree = ast.parse(open(os.path.join(ROOT, name.replace(".", "/") + ".py")).read())
    return {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
           {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_no_folder_but_models_and_evaluation(name):
    """Variants, data sets and tools plug in through the registries: the core never names them."""
    assert not {m for m in imported(name) if m.split(".")[0] in ("methods", "tasks", "tools", "codefusion")}, name
