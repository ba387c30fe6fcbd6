"""Run under torchrun by test_resume_broadcast.py: each rank has its own output dir, as on
separate nodes, and only rank 0's holds the checkpoint (rank 1 may hold a stale one)."""
import os
import sys

import torch

from trainer import checkpoint, dist
from trainer.devices import DeviceChoice
from trainer.dist import topology_from_env

base, stale = sys.argv[1], sys.argv[2] == "stale"
topo = topology_from_env()
dev = DeviceChoice("cpu", "cpu", "gloo", "cpu", None, 0)
dist.init(topo, dev, timeout_min=2)
out = os.path.join(base, f"node{topo.rank}")
os.makedirs(out, exist_ok=True)
if topo.rank == 0:
    checkpoint.save_atomic({"epoch": 7, "step": 70, "model": {"w": torch.arange(6.0)},
                            "rng": checkpoint.capture_rng(dev)},
                           os.path.join(out, checkpoint.CHECKPOINT_NAME))
elif stale:
    checkpoint.save_atomic({"epoch": 1, "step": 10, "model": {"w": torch.zeros(6)}},
                           os.path.join(out, checkpoint.CHECKPOINT_NAME))
dist.barrier()
ckpt = checkpoint.load_resume("auto", out, topo, dev)
assert ckpt["epoch"] == 7 and ckpt["step"] == 70, ckpt["epoch"]
assert torch.equal(ckpt["model"]["w"], torch.arange(6.0))
checkpoint.restore_rng(ckpt["rng"], dev)
# a fresh start is agreed by all ranks when rank 0 has nothing, whatever the others hold
assert checkpoint.load_resume("auto", os.path.join(base, "empty"), topo, dev) is None
print(f"rank {topo.rank} ok", flush=True)
dist.shutdown()
