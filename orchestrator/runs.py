"""The local ``runs/`` directory: one folder per run, holding run.json, gathered logs and metrics.

Layout (stable; report.py and users read it)::

    runs/<run_id>/run.json                          resolved spec (secrets redacted), nodes, image, times, exit codes
    runs/<run_id>/logs/node<rank>-<host>.log        every node's full output (attempt 0)
    runs/<run_id>/logs/attempt<k>/node<rank>-<host>.log   later attempts (faults.max_restarts)
    runs/<run_id>/metrics/node<rank>-<host>/*.jsonl the trainer's metrics files gathered from each node

Paths under a run are built only from validated components (``safe_component``), so no host name or
label can make the tool write outside ``runs/<run_id>/``.
"""
from __future__ import annotations

import json
import os
import re
import secrets as _secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import UsageError

RUN_ID_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def runs_root() -> Path:
    """``$ORCHESTRATE_RUNS_DIR`` or ``./runs``."""
    return Path(os.environ.get("ORCHESTRATE_RUNS_DIR", "runs"))


def new_run_id(now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{_secrets.token_hex(2)}"


def safe_component(text: str) -> str:
    """A single path component made of [A-Za-z0-9._-] only, never '.', '..' or empty."""
    cleaned = _UNSAFE.sub("_", text).strip(".") or "_"
    return cleaned


def node_stem(rank: int, host: str) -> str:
    return f"node{rank}-{safe_component(host)}"


@dataclass(frozen=True)
class RunDir:
    root: Path
    run_id: str

    @property
    def path(self) -> Path:
        return self.root / self.run_id

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    def logs_dir(self, attempt: int = 0) -> Path:
        base = self.path / "logs"
        return base if attempt == 0 else base / f"attempt{attempt}"

    def log_file(self, rank: int, host: str, attempt: int = 0) -> Path:
        return self.logs_dir(attempt) / f"{node_stem(rank, host)}.log"

    def metrics_dir(self, rank: int | None = None, host: str | None = None) -> Path:
        base = self.path / "metrics"
        return base if rank is None else base / node_stem(rank, host or "")

    def exists(self) -> bool:
        return self.run_json.is_file()

    def load(self) -> dict[str, Any]:
        try:
            return json.loads(self.run_json.read_text())
        except FileNotFoundError:
            raise UsageError(f"run {self.run_id}: no run.json under {self.path}") from None
        except json.JSONDecodeError as err:
            raise UsageError(f"{self.run_json}: not valid JSON ({err})") from None

    def save(self, record: dict[str, Any]) -> None:
        """Atomic write: a reader never sees half a run.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".run.json.")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.run_json)


def run_dir(run_id: str, root: Path | None = None) -> RunDir:
    if not RUN_ID_RE.match(run_id):
        raise UsageError(f"{run_id!r} is not a run id (expected YYYYmmdd-HHMMSS-xxxx; see `orchestrate runs`)")
    return RunDir(root or runs_root(), run_id)


def list_runs(root: Path | None = None) -> list[RunDir]:
    """Every run with a run.json, oldest first (run ids sort by time)."""
    base = root or runs_root()
    if not base.is_dir():
        return []
    found = [RunDir(base, p.name) for p in base.iterdir() if RUN_ID_RE.match(p.name) and (p / "run.json").is_file()]
    return sorted(found, key=lambda r: r.run_id)


def resolve_run(run_id: str | None, root: Path | None = None) -> RunDir:
    """A run by id, or the latest one when ``run_id`` is None; a clear error otherwise."""
    if run_id is None:
        runs = list_runs(root)
        if not runs:
            raise UsageError(f"no runs under {root or runs_root()}/ (start one with `orchestrate up JOB.yaml`)")
        return runs[-1]
    rd = run_dir(run_id, root)
    if not rd.exists():
        raise UsageError(f"unknown run {run_id}: nothing under {rd.path} (see `orchestrate runs`)")
    return rd


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; a torn last line (node killed mid-write) is skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                yield rec
