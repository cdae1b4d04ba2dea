"""Tooling around the core.

    bench.py         benchmarks that print tables: python -m tools.bench sampling | metrics | train | ...
    bench_ddp.py     the many-GPU benchmarks bench.py runs (ddp, memory)
    bench_threads.py the thread-count benchmarks bench.py runs (pretrain, finetune)
    bench_codebleu.py our CodeBLEU against the codebleu package on 10,000 broken pairs (bench.py codebleu)
    bench_peft.py    our soft prompt, LoRA and DDPT against PEFT's prompt tuning and LoRA (bench.py peft)
    export.py        a trained method as a PEFT adapter folder: python -m tools.export RUN --method ddpt
    attacks.py       the attacks on the execution sandbox and how each ends: python -m tools.attacks
    report.py        re-runs the commands behind the tables in README.md and docs/: python -m tools.report
    regen.py         re-runs the demo block under 1, 2 and 4 threads, every cell against its stated band
    figures.py       draws docs/figures/ from a run folder: python -m tools.figures out/tiny-demo-mcl
    headline.py      the README's headline table from a run folder's results.json
    sweep.py         a learning-rate sweep of any train.py setting: python -m tools.sweep --rates ddpt=1e-5,3e-5 -- ...
    ladder.py        every method on SmolLM2 / CoNaLa, one protocol, several seeds, one table: python -m tools.ladder

May import anything; the core never imports it.
"""
