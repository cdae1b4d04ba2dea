"""Evaluation beyond the text metrics of metrics.py: what the core's sample.py and metrics.py use.

    execution.py     the sandbox generated programs run in (never in our process); a data set's own checks are in tasks/
    checks.py        exec against exact match, pass@k: what running the programs adds to a table
    tables.py        results.md / results.json per seed and over seeds, paired-bootstrap intervals
    code_ast.py      CodeBLEU's syntax and data-flow matches from Python's ast
    code_repair.py   parsing broken or cut-off code, so those matches recover what parses

May import the core's metrics.py and prompts.py, and runtime/; never a method, a data set or a tool.
"""
