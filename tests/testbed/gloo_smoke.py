"""A 2-host gloo all-reduce, run under torchrun inside testbed containers.

Each rank contributes rank + 1; every rank must see sum(1..world_size).
Prints one line per rank: ``gloo-ok rank=R world=W host=H sum=S``.
"""
import os
import socket

import torch
import torch.distributed as dist


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    t = torch.tensor([float(rank + 1)])
    dist.all_reduce(t)
    expected = world * (world + 1) / 2
    assert t.item() == expected, (t.item(), expected)
    print(f"gloo-ok rank={rank} world={world} host={socket.gethostname()} sum={t.item():g}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
