"""checkpoint-last.pth: written by global rank 0 atomically, readable by every rank.

In a multi-node run only node 0 holds the file (each node has its own output dir), so
resume checks which ranks can see rank 0's exact file and broadcasts it to the others.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
from typing import Optional

import torch

from . import dist
from .compat import torch_load
from .devices import DeviceChoice, _module, torch_device
from .errors import UserError

CHECKPOINT_NAME = "checkpoint-last.pth"


def capture_rng(dev: DeviceChoice) -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    mod = _module(dev)
    if mod is not None and hasattr(mod, "get_rng_state"):
        state["device"] = mod.get_rng_state()
    return state


def restore_rng(state: dict, dev: DeviceChoice) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    mod = _module(dev)
    if "device" in state and mod is not None and hasattr(mod, "set_rng_state"):
        mod.set_rng_state(state["device"])


def save_atomic(obj: dict, path: str) -> None:
    """Write to a temporary file in the same directory, fsync, then os.replace: a reader
    (or a crash) never sees a half-written checkpoint."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _local_path(resume: str, output_dir: str) -> str:
    return os.path.join(output_dir, CHECKPOINT_NAME) if resume == "auto" else resume


def _rank0_view(resume: str, output_dir: str) -> dict:
    path = _local_path(resume, output_dir)
    if os.path.isfile(path):
        return {"path": path, "digest": _sha256(path), "error": None}
    if resume == "auto":
        return {"path": None, "digest": None, "error": None}
    return {"path": path, "digest": None, "error": f"--resume {resume}: no such file on rank 0"}


def load_resume(resume: Optional[str], output_dir: str, topo, dev: DeviceChoice) -> Optional[dict]:
    """The checkpoint to resume from (same on every rank), or None for a fresh start.

    Collective: every rank must call it. Rank 0 decides; ranks that cannot see rank 0's
    exact file (other nodes) receive its bytes over the process group.
    """
    if not resume:
        return None
    view = _rank0_view(resume, output_dir) if topo.is_main else None
    view = dist.broadcast_object(view)
    if view["error"]:
        raise UserError(view["error"])
    if view["path"] is None:
        return None
    # each rank looks in its own output dir (the same path string on another node is
    # another file), and trusts it only if it is byte-identical to rank 0's
    path = view["path"] if topo.is_main else _local_path(resume, output_dir)
    have = os.path.isfile(path) and (topo.is_main or _sha256(path) == view["digest"])
    missing = torch.tensor([0 if have else 1], device=torch_device(dev))
    missing = int(dist.all_reduce_sum(missing).item())
    blob = None
    if missing:
        if topo.is_main:
            with open(path, "rb") as f:
                blob = f.read()
        blob = dist.broadcast_object(blob)
    source = path if have else io.BytesIO(blob)
    ckpt = torch_load(source, trusted=True)
    if topo.is_main:
        shared = f", sent to {missing} rank(s) that could not see it" if missing else ""
        print(f"resuming from {view['path']} (epoch {ckpt['epoch']} done{shared})", flush=True)
    return ckpt


def load_weights(path: str) -> dict:
    """A user-supplied weights file for --pretrained: a state dict, maybe wrapped."""
    if not os.path.isfile(path):
        raise UserError(f"--checkpoint {path}: no such file")
    try:
        obj = torch_load(path, trusted=False)
    except Exception as exc:  # pickle/zip errors of all kinds: one line for the user
        raise UserError(f"--checkpoint {path}: cannot load ({type(exc).__name__}: {exc})")
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
