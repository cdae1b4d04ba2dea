"""tools/report.py: blocks are found at line starts only, re-run, and rewritten with the command's tables;
no table of numbers in README.md or docs/ sits outside a block."""
from tools import report


def test_a_block_is_rewritten_with_the_tables_its_command_prints(tmp_path):
    readme = tmp_path / "README.md"  # (the commands run from the repository root, so paths are absolute)
    readme.write_text("Intro naming `<!-- report: COMMAND -->` inline, which is no block.\n\n"
                      "<!-- report: printf 'noise\\n| a | b |\\n| --- | --- |\\n| 1 | 2 |\\nmore noise\\n' -->\n"
                      "| a | b |\n| --- | --- |\n| 0 | 0 |\n<!-- /report -->\n\nAfter.\n"
                      f"<!-- report: printf '| x |' > {tmp_path}/t.md => {tmp_path}/t.md -->\nold\n<!-- /report -->\n")
    assert [m.group(1)[:6] for m in report.BLOCK.finditer(readme.read_text())] == ["printf", "printf"]
    report.main(["--file", str(readme), "--run", "noise"])
    text = readme.read_text()
    body = text.split("<!-- /report -->")[0].split("-->")[-1].split("\n\n*`")[0]  # the first block's tables
    assert "| 1 | 2 |" in body and "| 0 | 0 |" not in body and "noise" not in body
    assert "s wall time" in text and "old" in text  # the other block was not run
    report.main(["--file", str(readme), "--run"])
    assert "| x |" in readme.read_text() and "\nold\n" not in readme.read_text()
    assert readme.read_text().startswith("Intro naming") and readme.read_text().count("<!-- /report -->") == 2


# Tables that document rather than measure: the folder map, the model names, the method's steps.
DOCUMENTATION = ("| folder | what |", "| short name | hub id | loaded by |", "| step | equation | code |")


def test_every_table_of_numbers_sits_in_a_report_block():
    files = report.documents()
    assert len(files) >= 8 and any(f.endswith("docs/results.md") for f in files)
    loose = []
    for path in files:
        inside, previous = False, ""
        for line in open(path).read().splitlines():
            inside = (inside or line.startswith("<!-- report: ")) and not line.startswith("<!-- /report -->")
            if line.startswith("|") and not previous.startswith("|") and not inside and line not in DOCUMENTATION:
                loose.append(f"{path}: {line}")
            previous = line
    assert not loose, f"tables outside a report block (wrap them, with the command that made them): {loose}"


def test_a_stated_table_is_read_back_and_the_regeneration_check_reruns_its_own_command(capsys):
    body = ("Intro.\n\n| method | bleu4 | exec | note |\n| --- | --- | --- | --- |\n"
            "| manual prompt | 0.052 ± 0.000 | — | x |\n| DDPT top-1 | 0.351 ± 0.019 | 0.190 ± 0.048 | y |\n"
            "| reviewer, p(instruction | code) | 0.2 ± 0.1 | — | z |\n\n"
            "| A | B |\n| --- | --- |\n| never | read |\n")
    assert report.means(body) == {"manual prompt": {"bleu4": (0.052, 0.0)},
                                  "DDPT top-1": {"bleu4": (0.351, 0.019), "exec": (0.19, 0.048)},
                                  "reviewer, p(instruction | code)": {"bleu4": (0.2, 0.1)}}
    from tools import regen
    command, folder, table = regen.stated()  # the demo block of docs/results.md
    assert folder.startswith("out/tiny-demo") and "soft prompt tuning" in table and "bleu4" in table["manual prompt"]
    out, cmd = regen.command_for(command, folder, 4, seeds=[0, 1])
    assert out == "out/regen-4threads" and folder not in cmd and "--seed 0 1 --out out/regen-4threads" in cmd
    assert "DDPT_CACHE=out/regen-4threads-cache" in cmd and "out/fresh-cache" not in cmd
    assert regen.outside(0.45, 0.35, 0.019) and not regen.outside(0.37, 0.35, 0.019)
    assert not regen.outside(0.009, 0.0, 0.0) and regen.outside(0.011, 0.0, 0.0)


def test_a_block_made_before_a_change_that_moves_it_says_so(tmp_path):
    doc = tmp_path / "doc.md"
    old = "<!-- report: python train.py --seed 0 1 && python sample.py --out X => X/results.md -->\n| a |\n\n" \
          "*`python train.py`: 9 s wall time, 2026-12-01.*\n<!-- /report -->\n"
    new = old.replace("2026-12-01", "2099-01-01")
    undated = "<!-- report: python -m tools.bench sampling -->\n| a |\n<!-- /report -->\n"
    doc.write_text(old + "\n" + new + "\n" + undated)
    found = report.problems(str(doc))
    assert len(found) == 2 and "needs the last line" in found[0] and "has no date" in found[1]
    report.mark_stale(str(doc))
    text = doc.read_text()
    assert report.problems(str(doc)) == [found[1]] and text.count(report.STALE) == 1
    line = next(line for line in text.splitlines() if line.startswith(report.STALE))
    assert "the shipped tiny model" in line and "t-intervals over seeds" in line and "consensus" in line
    report.mark_stale(str(doc))  # idempotent
    assert doc.read_text() == text
    assert report.stale_line("python -m tools.bench sampling", "2026-11-01") is None  # a change that does not move it


def test_every_block_is_dated_and_says_what_changed_since():
    assert [p for path in report.documents() for p in report.problems(path)] == []
