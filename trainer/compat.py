"""Features that newer torch has and torch 1.13 (the MLU image) lacks: used when present,
skipped with one logged note when not. Notes are collected so train.py prints them once."""
from __future__ import annotations

import contextlib
import inspect
from typing import List

import torch

from .devices import DeviceChoice

NOTES: List[str] = []


def note(msg: str) -> None:
    if msg not in NOTES:
        NOTES.append(msg)


def bf16_supported(dev: DeviceChoice) -> bool:
    if dev.type == "cpu":
        return hasattr(torch, "bfloat16")
    mod = getattr(torch, dev.type, None)
    fn = getattr(mod, "is_bf16_supported", None)
    if fn is None:
        return False
    try:
        return bool(fn())
    except Exception:  # some vendor builds raise instead of answering False
        return False


def resolve_precision(requested: str, dev: DeviceChoice) -> str:
    """fp32 | fp16 | bf16 that this device can actually run; downgrades with a note."""
    if requested == "bf16" and not bf16_supported(dev):
        note(f"bf16 not supported on {dev.kind} with torch {torch.__version__}: using fp32")
        return "fp32"
    if requested == "fp16" and dev.type == "cpu" and not _has_generic_grad_scaler():
        note(f"fp16 on CPU needs torch.amp.GradScaler (torch >= 2.3), have {torch.__version__}:"
             " using fp32")
        return "fp32"
    return requested


def autocast(dev: DeviceChoice, precision: str):
    """A fresh autocast context for one forward pass (nullcontext for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    if dev.type == "mlu":
        mlu_amp = getattr(getattr(torch, "mlu", None), "amp", None)
        if mlu_amp is not None and hasattr(mlu_amp, "autocast"):
            return mlu_amp.autocast(dtype=dtype)
    return torch.autocast(device_type=dev.type, dtype=dtype)


def _has_generic_grad_scaler() -> bool:
    amp = getattr(torch, "amp", None)
    return amp is not None and hasattr(amp, "GradScaler")


def grad_scaler(dev: DeviceChoice, precision: str):
    """A GradScaler for fp16, None otherwise (bf16 and fp32 need none)."""
    if precision != "fp16":
        return None
    if _has_generic_grad_scaler():
        return torch.amp.GradScaler(dev.type)
    if dev.type == "mlu":
        return torch.mlu.amp.GradScaler()
    return torch.cuda.amp.GradScaler()


def maybe_compile(model, enabled: bool):
    if not enabled:
        return model
    if not hasattr(torch, "compile"):
        note(f"--compile ignored: torch {torch.__version__} has no torch.compile")
        return model
    return torch.compile(model)


def torch_load(path_or_file, trusted: bool):
    """torch.load that states weights_only explicitly where torch knows the argument.

    Our own checkpoints hold RNG states (numpy arrays, tuples): trusted=True.
    A user-supplied weights file (--checkpoint) is loaded with weights_only=True.
    """
    kwargs = {"map_location": "cpu"}
    if "weights_only" in inspect.signature(torch.load).parameters:
        kwargs["weights_only"] = not trusted
    return torch.load(path_or_file, **kwargs)
