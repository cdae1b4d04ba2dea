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
