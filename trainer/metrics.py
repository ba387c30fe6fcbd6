"""The metrics contract: JSON lines per rank, read by orchestrator/report.py.

Record types (names are a contract; see docs/trainer.md):
  step        every --log-interval steps (and the last step of each epoch)
  epoch       after each epoch's evaluation
  rank_summary  every rank, at the end
  summary     rank 0 only, the last line
"""
from __future__ import annotations

import json
import os
import statistics
import time
from typing import List, Optional


class MetricsWriter:
    def __init__(self, path: str, append: bool):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self._f = open(path, "a" if append else "w", encoding="utf-8")

    def write(self, record: dict) -> None:
        record.setdefault("time", time.time())
        self._f.write(json.dumps(record, sort_keys=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def metrics_path(pattern: Optional[str], output_dir: str, rank: int) -> str:
    """--metrics-file may contain {rank}; without it, ranks other than 0 add -rank<N>."""
    if not pattern:
        return os.path.join(output_dir, f"metrics-rank{rank}.jsonl")
    if "{rank}" in pattern:
        return pattern.format(rank=rank)
    if rank == 0:
        return pattern
    root, ext = os.path.splitext(pattern)
    return f"{root}-rank{rank}{ext or '.jsonl'}"


class Interval:
    """Samples, loader wait and wall time since the last reset (all on the host clock,
    read only after the device has been synchronised by the caller)."""

    def __init__(self, now: float):
        self.reset(now)

    def reset(self, now: float) -> None:
        self.start = now
        self.samples = 0
        self.wait = 0.0
        self.steps = 0

    def add(self, samples: int, wait: float) -> None:
        self.samples += samples
        self.wait += wait
        self.steps += 1

    def rates(self, now: float):
        """(img/s on this device, data-wait fraction), or (None, None) when empty."""
        elapsed = now - self.start
        if self.steps == 0 or elapsed <= 0:
            return None, None
        return self.samples / elapsed, min(1.0, self.wait / elapsed)


def _mean(xs: List[float]) -> Optional[float]:
    return float(statistics.fmean(xs)) if xs else None


def _median(xs: List[float]) -> Optional[float]:
    return float(statistics.median(xs)) if xs else None


class RunStats:
    """What the final records summarise: this run's measured step records."""

    def __init__(self):
        self.img_s_global: List[float] = []
        self.img_s_device: List[float] = []
        self.data_wait: List[float] = []

    def add_step(self, rec: dict) -> None:
        if rec["img_s_global"] is not None:
            self.img_s_global.append(rec["img_s_global"])
        if rec["img_s_device"] is not None:
            self.img_s_device.append(rec["img_s_device"])
        if rec["data_wait_frac"] is not None:
            self.data_wait.append(rec["data_wait_frac"])

    def rank_summary(self, rank: int) -> dict:
        return {"type": "rank_summary", "rank": rank,
                "img_s_device_mean": _mean(self.img_s_device),
                "img_s_device_median": _median(self.img_s_device),
                "data_wait_frac_mean": _mean(self.data_wait)}

    def img_s_mean(self):
        return _mean(self.img_s_global)

    def img_s_median(self):
        return _median(self.img_s_global)
