"""Which accelerator to use, and the few device operations that differ between them.

Selection is a pure function (``select_device``) over what a *probe* reports, so the
MLU and DCU branches are unit-tested with fakes; only ``SystemProbe`` touches real
modules. torch_mlu is imported only when the request is ``mlu`` or ``auto``.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from .errors import UserError

DEVICE_CHOICES = ("auto", "mlu", "cuda", "cpu")


@dataclass(frozen=True)
class DeviceChoice:
    kind: str  # what the report calls it: cpu | cuda | dcu | mlu
    type: str  # torch device type: cpu | cuda | mlu
    backend: str  # gloo | nccl | cncl
    api: str  # cpu | torch.cuda | torch.mlu | ct (torch_mlu.core.mlu_model)
    index: Optional[int]  # local device index, None on CPU
    count: int  # devices visible on this node (0 for CPU: no limit)

    @property
    def torch_device(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"


class SystemProbe:
    """Looks at the real installation. Each method returns None when the device is absent."""

    def __init__(self, find_spec: Callable = importlib.util.find_spec,
                 import_module: Callable = importlib.import_module):
        self._find_spec = find_spec
        self._import = import_module

    def mlu(self) -> Optional[Tuple[str, int]]:
        """(api, device count) for Cambricon MLU, or None when torch_mlu is not installed."""
        if self._find_spec("torch_mlu") is None:
            return None
        self._import("torch_mlu")
        import torch

        mlu = getattr(torch, "mlu", None)
        if mlu is not None and hasattr(mlu, "device_count"):
            return "torch.mlu", int(mlu.device_count())
        ct = self._import("torch_mlu.core.mlu_model")  # torch_mlu before torch.mlu existed
        return "ct", int(ct.device_count())

    def cuda(self) -> Optional[Tuple[str, int]]:
        """(kind, device count) for CUDA, or DCU when torch is a ROCm build; None if absent."""
        import torch

        if not torch.cuda.is_available():
            return None
        kind = "dcu" if getattr(torch.version, "hip", None) else "cuda"
        return kind, int(torch.cuda.device_count())


def select_device(requested: str, local_rank: int, local_world_size: int, probe) -> DeviceChoice:
    """Pure decision: requested device + what the probe sees -> DeviceChoice, or UserError."""
    if requested not in DEVICE_CHOICES:
        raise UserError(f"--device {requested!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    if requested in ("mlu", "auto"):
        found = probe.mlu()
        if found is not None:
            api, count = found
            return _accelerator("mlu", "mlu", "cncl", api, count, local_rank, local_world_size)
        if requested == "mlu":
            raise UserError("--device mlu: torch_mlu is not installed in this environment "
                            "(use the Cambricon image, or --device auto|cuda|cpu)")
    if requested in ("cuda", "auto"):
        found = probe.cuda()
        if found is not None:
            kind, count = found
            return _accelerator(kind, "cuda", "nccl", "torch.cuda", count, local_rank,
                                local_world_size)
        if requested == "cuda":
            raise UserError("--device cuda: torch.cuda.is_available() is False "
                            "(no visible GPU/DCU, or a CPU-only torch build)")
    return DeviceChoice("cpu", "cpu", "gloo", "cpu", None, 0)


def _accelerator(kind, dtype, backend, api, count, local_rank, local_world_size) -> DeviceChoice:
    if count < 1:
        raise UserError(f"{kind}: the runtime is installed but sees no devices")
    if local_world_size > count or local_rank >= count:
        raise UserError(f"{local_world_size} processes on this node but only {count} {kind} "
                        f"device(s) visible: lower --nproc-per-node to {count} or fewer")
    return DeviceChoice(kind, dtype, backend, api, local_rank, count)


def set_async_error_handling(env=os.environ) -> None:
    """A dead peer should end the job instead of hanging every other rank in a collective."""
    env.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    env.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")  # the name before torch 2.2
    env.setdefault("TORCH_CNCL_ASYNC_ERROR_HANDLING", "1")


def _module(dev: DeviceChoice):
    """The module that owns set_device/synchronize/memory for this device."""
    import torch

    if dev.api == "torch.cuda":
        return torch.cuda
    if dev.api == "torch.mlu":
        return torch.mlu
    if dev.api == "ct":
        return importlib.import_module("torch_mlu.core.mlu_model")
    return None


def activate(dev: DeviceChoice) -> None:
    """Make dev.index the current device; must happen before init_process_group."""
    mod = _module(dev)
    if mod is not None:
        mod.set_device(dev.index)


def synchronize(dev: DeviceChoice) -> None:
    mod = _module(dev)
    if mod is not None and hasattr(mod, "synchronize"):
        mod.synchronize()


def peak_memory_bytes(dev: DeviceChoice) -> Optional[int]:
    """Peak allocated device memory; on CPU the process's peak RSS."""
    mod = _module(dev)
    if mod is None:
        try:
            import resource

            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux
        except (ImportError, OSError):
            return None
    fn = getattr(mod, "max_memory_allocated", None)
    return int(fn()) if fn is not None else None


def torch_device(dev: DeviceChoice):
    import torch

    if dev.api == "ct":
        return importlib.import_module("torch_mlu.core.mlu_model").mlu_device(dev.index)
    return torch.device(dev.torch_device)
