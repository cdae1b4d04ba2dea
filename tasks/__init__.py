"""The data sets beyond the core's CoNaLa and CodeAlpaca (data.py). Each module registers its own with
data.register (loader, manual prompt, the program that checks generated code, extra columns), and
data.discover() imports them all, as prompts.discover() does methods/: add a file here to add one.

    demo.py        the offline demo task: the tiny model's corpus, its vague prompt, its behavioural check
    humaneval.py   HumanEval, an evaluation set (sample.py --data humaneval): its tests, pass@1 and pass@k

May import the core (data, llm, metrics) and evaluation/; the core reaches them only through data.DATASETS.
"""
