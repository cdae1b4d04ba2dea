"""report.py: blocks are found at line starts only, re-run, and rewritten with the command's tables."""
import report


def test_a_block_is_rewritten_with_the_tables_its_command_prints(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("Intro naming `<!-- report: COMMAND -->` inline, which is no block.\n\n"
                      "<!-- report: printf 'noise\\n| a | b |\\n| --- | --- |\\n| 1 | 2 |\\nmore noise\\n' -->\n"
                      "| a | b |\n| --- | --- |\n| 0 | 0 |\n<!-- /report -->\n\nAfter.\n"
                      f"<!-- report: printf '| x |' > {tmp_path}/t.md => {tmp_path}/t.md -->\nold\n<!-- /report -->\n")
    assert [m.group(1)[:6] for m in report.BLOCK.finditer(readme.read_text())] == ["printf", "printf"]
    report.main(["--readme", str(readme), "--run", "noise"])
    text = readme.read_text()
    body = text.split("<!-- /report -->")[0].split("-->")[-1].split("\n\n*`")[0]  # the first block's tables
    assert "| 1 | 2 |" in body and "| 0 | 0 |" not in body and "noise" not in body
    assert "s wall time" in text and "old" in text  # the other block was not run
    report.main(["--readme", str(readme), "--run"])
    assert "| x |" in readme.read_text() and "\nold\n" not in readme.read_text()
    assert readme.read_text().startswith("Intro naming") and readme.read_text().count("<!-- /report -->") == 2


# Tables that document rather than measure: the file list, the model names, and the sandbox's attacks
# with the outcome tests/test_execution.py asserts for each.
DOCUMENTATION = ("| file | what |", "| short name | hub id | loaded by |", "| attack | ends as |")


def test_every_table_of_numbers_in_the_readme_sits_in_a_report_block():
    inside, previous, loose = False, "", []
    for line in open(report.__file__.replace("report.py", "README.md")).read().splitlines():
        inside = (inside or line.startswith("<!-- report: ")) and not line.startswith("<!-- /report -->")
        if line.startswith("|") and not previous.startswith("|") and not inside and line not in DOCUMENTATION:
            loose.append(line)
        previous = line
    assert not loose, f"README tables outside a report block (wrap them, with the command that made them): {loose}"
