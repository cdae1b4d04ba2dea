"""torchrun support for train.py: the process group, each rank's share of a batch, sums over ranks.

    torchrun --standalone --nproc_per_node 4 train.py -- --model codet5p-2b --dtype bf16

torchrun (PyTorch's own launcher) starts one process, a *rank*, per GPU and tells each its RANK,
LOCAL_RANK and WORLD_SIZE W through the environment. Every rank holds the frozen LLM and a copy of
the prompt module, wrapped in DistributedDataParallel (DDP), which averages the gradients over the
ranks during backward. One global batch of B pairs is drawn from one seeded stream on every rank,
and rank r takes its share, pairs [r B / W, (r + 1) B / W). The loss of the global batch is

    L = (sum over all ranks of the code tokens' cross-entropy) / (code tokens in the global batch)

so rank r back-propagates W * (its own sum) / (global count): DDP's average over W ranks is then
the gradient of L itself, the same as one process computing the whole batch (train.py's step, its
one line `(ce / tokens * W).backward()`). Rank 0 alone writes. train.py is the only user of this file.

Outside torchrun (`python train.py`) there is no process group, world() is (0, 1) and every
function here is the identity: one process, exactly as before.
"""
import contextlib
import datetime
import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def world():
    """(rank, world size): (0, 1) without torchrun."""
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def is_main():
    return world()[0] == 0


def setup(device, device_map=None):
    """Joins torchrun's process group (no-op without torchrun). Returns this rank's device and, for
    --device-map auto, the memory of its own GPUs (accelerate then shards the LLM over those only).

    GPUs are split among the ranks of a machine: rank LOCAL_RANK uses GPU LOCAL_RANK, or with
    --device-map auto the k = (GPUs per machine) / (ranks per machine) GPUs from LOCAL_RANK * k on.
    NCCL joins GPU ranks, Gloo CPU ones."""
    if "RANK" not in os.environ:
        return device, None
    timeout = datetime.timedelta(hours=1)  # rank 0 may download or convert a model while the others wait
    if not device.startswith("cuda"):
        dist.init_process_group("gloo", timeout=timeout)
        return device, None
    local, per_machine = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    k = torch.cuda.device_count() // per_machine if device_map else 1
    if k < 1 or (local + 1) * k > torch.cuda.device_count():
        raise RuntimeError(f"{per_machine} processes per machine but {torch.cuda.device_count()} GPUs: "
                           "pass --nproc_per_node at most the number of GPUs")
    gpus = range(local * k, (local + 1) * k)
    torch.cuda.set_device(gpus[0])
    dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", gpus[0]))
    max_memory = {i: torch.cuda.mem_get_info(i)[0] for i in gpus} if device_map else None
    return f"cuda:{gpus[0]}", max_memory


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(module):
    """The module in DDP (its gradients averaged over the ranks in backward); itself without torchrun."""
    if not dist.is_initialized():
        return module
    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def share(B):
    """This rank's part of a global batch of B: the slice [rank B / W, (rank + 1) B / W)."""
    rank, W = world()
    return slice(rank * B // W, (rank + 1) * B // W)


def all_sum(*values):
    """The sums over all ranks of some numbers, as float64 Python floats (the values themselves
    without torchrun)."""
    if not dist.is_initialized():
        return values
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return tuple(t.tolist())


def broadcast(obj):
    """Rank 0's object (e.g. a checkpoint it read), on every rank: other machines may not see its disk."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier():
    if dist.is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first, the others after it: a cache that rank 0 fills (the tiny
    model's pre-training, a download, a GGUF conversion) is then only read by the others."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
