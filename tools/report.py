"""Re-runs the commands behind the tables of README.md and docs/*.md and writes their output back.

Each table sits in a block that names the command it came from:

    <!-- report: python bench.py sampling -->               the tables the command prints
    ...
    <!-- /report -->

    <!-- report: python train.py ... && python sample.py ... => out/tiny-demo/results.md -->
    ...                                                      the file the command writes
    <!-- /report -->

    python -m tools.report                 # lists the blocks of every file and their commands
    python -m tools.report --run demo      # re-runs the blocks whose command contains "demo", rewrites them
    python -m tools.report --file docs/results.md --run tiny-demo-10seeds  # only that file's blocks
    python -m tools.report --run           # re-runs every block (hours on a CPU: see each block's time)

A rewritten block ends with the command, its wall time and the date, so a document cannot drift
from the code without saying when its numbers were made. Blocks run one at a time, in order, from
the repository root.
"""
import argparse
import datetime
import glob
import os
import re
import subprocess
import sys
import time

import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(r"^<!-- report: (.+?)(?: => (\S+))? -->\n(.*?)^<!-- /report -->", re.DOTALL | re.MULTILINE)


def tables(text):
    """The markdown tables of a command's output (runs of lines starting with '|'), one blank line apart."""
    out, last = [], False
    for line in text.splitlines():
        is_row = line.startswith("|")
        if is_row and not last and out:
            out.append("")
        if is_row:
            out.append(line)
        last = is_row
    return "\n".join(out)


def means(body):
    """The first table of a block's `body` as {row: {column: (mean, std)}}, from its "m ± s" cells
    (other cells left out): how tools/regen.py and tools/figures.py read a stated table."""
    cells, header = {}, None
    for line in body.splitlines():
        if not line.startswith("|"):
            if header:
                break
            continue
        parts = [c.strip() for c in line.strip("|").split("|")]
        if header is None:
            header = parts
        elif not set(parts[1]) <= set("- "):
            cells[parts[0]] = {col: tuple(map(float, v.split(" ± "))) for col, v in zip(header[1:], parts[1:]) if " ± " in v}
    return cells


def block(path, match):
    """(command, output file, body) of the first report block in `path` whose command contains `match`."""
    found = next((m for m in BLOCK.finditer(open(path).read()) if match in m.group(1)), None)
    if found is None:
        raise SystemExit(f"{path} has no report block whose command contains {match!r}")
    return found.group(1), found.group(2), found.group(3)


def rerun(command, path):
    """Runs `command` in a shell from the repository root; the block's new body."""
    t0 = time.time()
    done = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=ROOT)
    secs = time.time() - t0
    if done.returncode != 0:
        sys.exit(f"`{command}` failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    body = open(os.path.join(ROOT, path)).read().strip() if path else tables(done.stdout)
    when = datetime.date.today().isoformat()
    return f"{body}\n\n*`{command}`: {secs:.0f} s wall time, {when}.*\n"


def documents():
    """docs/*.md, then README.md (whose headline table reads a run folder a docs block makes)."""
    return [*sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))), os.path.join(ROOT, "README.md")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", nargs="*", default=None, metavar="MATCH", help="re-run blocks whose command contains MATCH")
    p.add_argument("--file", nargs="+", default=None, help="the documents to read (default: README.md and docs/*.md)")
    args = p.parse_args(argv)
    todo = []  # (document, command, output file) of every block to re-run, in order
    for path in args.file or documents():
        for m in BLOCK.finditer(open(path).read()):
            if args.run is None:
                print(f"{os.path.relpath(path, ROOT)}: " + m.group(1) + (f"  => {m.group(2)}" if m.group(2) else ""))
            elif not args.run or any(s in m.group(1) for s in args.run):
                todo.append((path, m.group(1), m.group(2)))
    for i, (path, command, out) in enumerate(todo, 1):
        print(f"[block {i} of {len(todo)}, {datetime.datetime.now():%H:%M}] running ({os.path.relpath(path, ROOT)}): "
              f"{command}", flush=True)
        body = rerun(command, out)
        text = open(path).read()  # re-read: an earlier block may have changed its length
        old = next(b for b in BLOCK.finditer(text) if b.group(1) == command)
        checkpoint.write_atomic(path, text[:old.start(3)] + body + text[old.end(3):])


if __name__ == "__main__":
    main()
