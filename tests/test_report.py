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
