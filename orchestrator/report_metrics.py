"""Reading a run's metrics: ``runs/<id>/metrics/node<rank>-<host>/metrics-rank<R>.jsonl`` (record types
step / epoch / rank_summary / summary, see trainer/metrics.py), and the statistics the sheet uses."""
from __future__ import annotations

import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from .errors import ReportError
from .runs import RunDir, iter_jsonl, node_stem

_RANK_FILE = re.compile(r"metrics-rank(\d+)\.jsonl$")
_NODE_DIR = re.compile(r"^node(\d+)-(.+)$")


# ----------------------------------------------------------------------------- reading

@dataclass
class RankData:
    rank: int
    node_rank: int
    host: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    summary: Optional[dict[str, Any]] = None
    rank_summary: Optional[dict[str, Any]] = None


@dataclass
class RunMetrics:
    rd: RunDir
    meta: dict[str, Any]
    ranks: dict[int, RankData]

    @property
    def summary(self) -> Optional[dict[str, Any]]:
        for r in sorted(self.ranks):
            if self.ranks[r].summary:
                return self.ranks[r].summary
        return None

    @property
    def epochs(self) -> list[dict[str, Any]]:
        """Rank 0's epoch records (the lowest rank that wrote any), in order, last record per epoch."""
        for r in sorted(self.ranks):
            if self.ranks[r].epochs:
                by_epoch = {e.get("epoch"): e for e in self.ranks[r].epochs}
                return [by_epoch[k] for k in sorted(by_epoch, key=lambda k: (k is None, k))]
        return []


def _node_dirs(rd: RunDir, meta: dict[str, Any]) -> list[tuple[int, str, Path]]:
    base = rd.metrics_dir()
    if not base.is_dir():
        return []
    known = {node_stem(int(n["rank"]), str(n["host"])): (int(n["rank"]), str(n["host"]))
             for n in meta.get("nodes") or [] if "rank" in n and "host" in n}
    out = []
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        if d.name in known:
            out.append((*known[d.name], d))
        elif m := _NODE_DIR.match(d.name):
            out.append((int(m.group(1)), m.group(2), d))
    return out


def _rank_files(rd: RunDir, meta: dict[str, Any]) -> Iterable[tuple[int, str, Optional[int], Path]]:
    for node_rank, host, d in _node_dirs(rd, meta):
        for f in sorted(d.rglob("*.jsonl")):  # rglob: tolerate a launcher that keeps the trainer's subfolders
            m = _RANK_FILE.search(f.name)
            yield node_rank, host, (int(m.group(1)) if m else None), f


def no_metrics_error(run_id: str) -> ReportError:
    return ReportError(f"run {run_id} has no metrics: it failed before training (see orchestrate logs {run_id})")


def load_metrics(rd: RunDir) -> RunMetrics:
    meta = rd.load()
    ranks: dict[int, RankData] = {}
    for node_rank, host, file_rank, path in _rank_files(rd, meta):
        for rec in iter_jsonl(path):
            rank = rec.get("rank", file_rank)
            if not isinstance(rank, int):
                rank = file_rank if file_rank is not None else 0
            rd_ = ranks.setdefault(rank, RankData(rank, node_rank, host))
            kind = rec.get("type")
            if kind == "step":
                rd_.steps.append(rec)
            elif kind == "epoch":
                rd_.epochs.append(rec)
            elif kind == "summary":
                rd_.summary = rec
            elif kind == "rank_summary":
                rd_.rank_summary = rec
    if not any(r.steps or r.epochs or r.summary for r in ranks.values()):
        raise no_metrics_error(rd.run_id)
    for r in ranks.values():
        r.steps = _last_per_step(r.steps)
    return RunMetrics(rd, meta, ranks)


def _last_per_step(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A restarted attempt appends to the same file and repeats steps: keep each step's last record."""
    by_step: dict[Any, dict[str, Any]] = {}
    for s in steps:
        by_step.pop(s.get("step"), None)
        by_step[s.get("step")] = s
    return list(by_step.values())


def _tail_records(path: Path, nbytes: int = 256 * 1024) -> list[dict[str, Any]]:
    """The records in the last ``nbytes`` of a JSON-lines file (the first, partial line dropped)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - nbytes))
        chunk = f.read().decode("utf-8", errors="replace")
    lines = chunk.splitlines()
    if size > nbytes:
        lines = lines[1:]
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def load_headline(rd: RunDir, meta: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The few numbers the ledger and a run-as-baseline need, cheaply: rank 0's summary from the
    tail of its file; the full metrics only when there is no summary. ``model`` is None when the run
    has no metrics at all."""
    meta = meta if meta is not None else rd.load()
    summary = None
    # rank 0 writes the summary; with --metrics-file without {rank} its file has no -rank0 suffix
    files = sorted(_rank_files(rd, meta), key=lambda t: (t[2] != 0, t[2] is not None))
    for _, _, file_rank, path in files:
        if file_rank not in (0, None):
            break
        recs = [r for r in _tail_records(path) if r.get("type") == "summary"]
        if recs:
            summary = recs[-1]
            break
    if summary is None:
        try:
            return headline_from(load_metrics(rd))
        except ReportError:
            head = _headline_meta(meta)
            head["model"] = None
            return head
    head = _headline_meta(meta)
    head.update(_headline_summary(summary, head))
    return head


def _headline_meta(meta: dict[str, Any]) -> dict[str, Any]:
    nnodes = int(meta.get("nnodes") or len(meta.get("nodes") or []) or 1)
    nproc = int(meta.get("nproc_per_node") or 1)
    spec = (meta.get("job") or {}).get("spec") or {}
    return {"model": _find_key(spec, "model"), "device_kind": meta.get("device"), "device_count": nnodes * nproc,
            "nnodes": nnodes, "precision": _find_key(spec, "precision"),
            "global_batch": _find_key(spec, "global_batch"), "top1": None, "top5": None, "img_s": None,
            "img_s_median": None}


def _headline_summary(s: dict[str, Any], head: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": s.get("model") or head["model"],
        "device_kind": s.get("device_kind") or head["device_kind"],
        "device_count": s.get("device_count") or s.get("world_size") or head["device_count"],
        "nnodes": s.get("nnodes") or head["nnodes"],
        "precision": s.get("precision") or head["precision"],
        "global_batch": s.get("global_batch") or head["global_batch"],
        "top1": s.get("top1"), "top5": s.get("top5"),
        "img_s": s.get("img_s_mean"), "img_s_median": s.get("img_s_median"),
    }


def headline_from(m: RunMetrics) -> dict[str, Any]:
    head = _headline_meta(m.meta)
    s = m.summary
    if s:
        head.update(_headline_summary(s, head))
        return head
    evaluated = [e for e in m.epochs if e.get("top1") is not None]
    last = evaluated[-1] if evaluated else {}
    g = global_series(m)
    head.update({"top1": last.get("top1"), "top5": last.get("top5"),
                 "img_s": mean(g), "img_s_median": median(g)})
    if head["model"] is None:
        head["model"] = "unknown"
    return head


def default_baseline_ref(meta: dict[str, Any]) -> Optional[str]:
    """``$ORCHESTRATE_BASELINE``, else a ``baseline`` key in the job spec (top level or one section down)."""
    ref = os.environ.get("ORCHESTRATE_BASELINE") or _find_key((meta.get("job") or {}).get("spec") or {}, "baseline")
    return str(ref) if ref else None


def _find_key(d: Any, key: str, depth: int = 2) -> Any:
    if not isinstance(d, dict):
        return None
    if d.get(key) is not None:
        return d[key]
    if depth:
        for v in d.values():
            found = _find_key(v, key, depth - 1)
            if found is not None:
                return found
    return None


# ----------------------------------------------------------------------------- statistics

def numbers(xs: Iterable[Any]) -> list[float]:
    return [float(x) for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)]


def mean(xs: list[float]) -> Optional[float]:
    return statistics.fmean(xs) if xs else None


def median(xs: list[float]) -> Optional[float]:
    return statistics.median(xs) if xs else None


def percentile(xs: list[float], q: float) -> Optional[float]:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not xs:
        return None
    s = sorted(xs)
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def stats(xs: list[float]) -> dict[str, Any]:
    return {"mean": mean(xs), "median": median(xs), "p10": percentile(xs, 10), "n": len(xs)}


def measured(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Post-warm-up steps: the trainer leaves throughput null while warming up."""
    return [s for s in steps if isinstance(s.get("img_s_device"), (int, float))]


def global_series(m: RunMetrics) -> list[float]:
    for r in sorted(m.ranks):
        g = numbers(s.get("img_s_global") for s in m.ranks[r].steps)
        if g:
            return g
    return []


def node_step_throughput(m: RunMetrics) -> dict[int, dict[int, float]]:
    """node rank -> {step: sum of its ranks' img_s_device}, only steps where every rank of the node reported."""
    out: dict[int, dict[int, float]] = {}
    by_node: dict[int, list[RankData]] = {}
    for r in m.ranks.values():
        by_node.setdefault(r.node_rank, []).append(r)
    for node, rs in by_node.items():
        per_step: dict[int, list[float]] = {}
        for r in rs:
            for s in measured(r.steps):
                if isinstance(s.get("step"), int):
                    per_step.setdefault(s["step"], []).append(float(s["img_s_device"]))
        out[node] = {k: sum(v) for k, v in sorted(per_step.items()) if len(v) == len(rs)}
    return out


def data_wait(steps: list[dict[str, Any]]) -> list[float]:
    after_warmup = numbers(s.get("data_wait_frac") for s in measured(steps))
    return after_warmup or numbers(s.get("data_wait_frac") for s in steps)
