"""Tooling around the core.

    distributed.py   torchrun support for train.py (DDP; the identity without torchrun)
    bench.py         benchmarks that print tables: python -m tools.bench sampling | metrics | train | ...
    bench_ddp.py     the many-GPU benchmarks bench.py runs (ddp, memory)
    bench_threads.py the thread-count benchmarks bench.py runs (pretrain, finetune)
    attacks.py       the attacks on the execution sandbox and how each ends: python -m tools.attacks
    report.py        re-runs the commands behind the tables in README.md and docs/: python -m tools.report

May import anything; only train.py imports it (distributed.py).
"""
