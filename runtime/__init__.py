"""How a run lives on disk and across processes: what train.py and sample.py stand on, not the method.

    checkpoint.py    the run folder: the one atomic write, safe loading, the config check, the folder's lock
    distributed.py   torchrun: each rank's share of a batch, sums over ranks (the identity without torchrun)

May import nothing of the project; everything may import it.
"""
