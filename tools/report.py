"""Re-runs the commands behind the tables of README.md and docs/*.md and writes their output back.

Each table sits in a block that names the command it came from:

    <!-- report: python -m tools.bench sampling -->         the tables the command prints
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

CHANGES lists the code changes that move numbers, each with its date and the commands it moves. A
block dated before a change that moves its command is stale until re-run, and says so in its last
line; `python -m tools.report --mark-stale` writes (or updates) that line in every such block, and
tests/test_report.py fails on a block without a date or without the line it needs.
"""
import argparse
import datetime
import glob
import os
import re
import subprocess
import sys
import time

from runtime import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(r"^<!-- report: (.+?)(?: => (\S+))? -->\n(.*?)^<!-- /report -->", re.DOTALL | re.MULTILINE)
DATE = re.compile(r"\b(20\d\d-\d\d-\d\d)(?: (\d\d:\d\d) UTC)?")
STALE = "*Stale:"  # how the last line of a stale block starts
TINY_RUNS = r"(python train\.py(?!.*--model)|tools\.bench (lr|finetune)|tools\.(regen|figures|headline))"
CHANGES = [  # (when, UTC; what changed; the commands whose numbers it moves: a regular expression)
    ("2026-12-03 14:01", "train.py --reproducible (one thread) on the tiny model", TINY_RUNS),
    ("2026-12-05 16:43", "the consensus and reviewer rows", r"python sample\.py|tools\.headline"),
    ("2026-12-05 18:32", "CodeBLEU's structural parts (parse repair, data flow)",
     r"python sample\.py|tools\.headline|codefusion\.train|tools\.bench (codebleu|metrics)"),
    ("2026-12-06 15:20", "the shipped tiny model (models/tiny-demo)", TINY_RUNS),
    ("2026-12-06 15:20", "each method seeded on its own",
     r"--method (\S+ )*(ddpt|lopa|lora)\S* (\S+ )*(ddpt|lopa|lora)|tools\.figures"),
    ("2026-12-06 15:20", "t-intervals over seeds (were percentile bootstrap)", r"--seed \d+ \d+.*sample\.py|tools\.headline"),
    ("2026-12-06 17:30", "the sandbox's files (the system and the interpreter only) and its per-process address space",
     r"tools\.attacks|--data humaneval"),
]


def dated(body):
    """When a block's numbers were made: the last date (and time, where the footer has one) of its
    footer, its last paragraph before any stale line, as "YYYY-MM-DD[ HH:MM]"; or None."""
    paragraphs = [p for p in body.strip().split("\n\n") if not p.startswith(STALE)]
    found = DATE.findall(paragraphs[-1]) if paragraphs else []
    return " ".join(filter(None, found[-1])) if found else None


def stale_line(command, made):
    """The last line a block made at `made` with `command` needs: the changes since, or None. A footer
    with a day alone counts a change of that same day as perhaps later."""
    since = [f"{what} ({when})" for when, what, moves in CHANGES
             if (when > made if len(made) > 10 else when[:10] >= made) and re.search(moves, command)]
    return f"{STALE} made before (or, the same day, perhaps before) {'; '.join(since)}: re-run it for today's numbers.*" \
        if since else None


def problems(path):
    """What tests/test_report.py refuses in one document: blocks without a date, and stale blocks
    whose last line does not say so as stale_line has it."""
    out = []
    for m in BLOCK.finditer(open(path).read()):
        command, body = m.group(1), m.group(3)
        date = dated(body)
        if date is None:
            out.append(f"{os.path.relpath(path, ROOT)}: the block `{command[:60]}` has no date in its footer")
            continue
        need, last = stale_line(command, date), body.strip().splitlines()[-1] if body.strip() else ""
        if need != (last if last.startswith(STALE) else None):
            out.append(f"{os.path.relpath(path, ROOT)}: the block `{command[:60]}` (made {date}) needs the last line "
                       f"{need!r}, has {last!r}: python -m tools.report --mark-stale")
    return out


def mark_stale(path):
    """Writes, updates or drops each block's stale line as stale_line says."""
    text = open(path).read()
    for m in reversed(list(BLOCK.finditer(text))):
        date = dated(m.group(3))
        if date is None:
            continue
        body = "\n\n".join(p for p in m.group(3).strip().split("\n\n") if not p.startswith(STALE))
        need = stale_line(m.group(1), date)
        text = text[:m.start(3)] + body + (f"\n\n{need}" if need else "") + "\n" + text[m.end(3):]
    checkpoint.write_atomic(path, text)


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
            continue
        extra = len(parts) - len(header)  # a row name with "|" in it (the reviewer's p(instruction | code))
        parts = [" | ".join(parts[:extra + 1])] + parts[extra + 1:]
        if not set(parts[1]) <= set("- "):
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
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"{body}\n\n*`{command}`: {secs:.0f} s wall time, {when}.*\n"


def documents():
    """docs/*.md, then README.md (whose headline table reads a run folder a docs block makes)."""
    return [*sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))), os.path.join(ROOT, "README.md")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", nargs="*", default=None, metavar="MATCH", help="re-run blocks whose command contains MATCH")
    p.add_argument("--file", nargs="+", default=None, help="the documents to read (default: README.md and docs/*.md)")
    p.add_argument("--mark-stale", action="store_true", help="write the stale line of every block made before a "
                   "change that moves its numbers (CHANGES), drop it where a block is current")
    args = p.parse_args(argv)
    if args.mark_stale:
        for path in args.file or documents():
            mark_stale(path)
        return
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
