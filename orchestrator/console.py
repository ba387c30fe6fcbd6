"""What the user sees: info/warn/error lines, node output prefixed `[node1 host]`, the per-node summary.
Every line goes through the Masker, so a secret value never reaches the terminal."""
from __future__ import annotations

import json
import sys
import threading
from typing import Any, Iterable, Optional

from rich.console import Console as RichConsole
from rich.markup import escape
from rich.table import Table


class Masker:
    """Replaces every secret value with *** in text, bytes and JSON-able objects."""

    _current: "Masker" = None  # type: ignore[assignment]

    def __init__(self, values: Iterable[str] = ()):
        self.values = sorted({v for v in values if v}, key=len, reverse=True)
        self.bvalues = [v.encode() for v in self.values]

    @classmethod
    def install(cls, values: Iterable[str]) -> "Masker":
        cls._current = cls(values)
        return cls._current

    @classmethod
    def current(cls) -> "Masker":
        if cls._current is None:
            cls._current = cls()
        return cls._current

    def mask(self, text: str) -> str:
        for v in self.values:
            text = text.replace(v, "***")
        return text

    def mask_bytes(self, data: bytes) -> bytes:
        for v in self.bvalues:
            data = data.replace(v, b"***")
        return data

    def mask_obj(self, obj: Any) -> Any:
        if not self.values:
            return obj
        return json.loads(self.mask(json.dumps(obj)))


class Console:
    def __init__(self, quiet: bool = False, stream=None):
        self.out = RichConsole(file=stream or sys.stdout, highlight=False, soft_wrap=True)
        self.err = RichConsole(file=sys.stderr, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self._lock = threading.Lock()

    def _say(self, con: RichConsole, style: str, text: str) -> None:
        with self._lock:
            con.print(f"[{style}]{escape(Masker.current().mask(text))}[/]" if style else
                      escape(Masker.current().mask(text)))

    def info(self, text: str) -> None:
        if not self.quiet:
            self._say(self.err, "dim", text)

    def warn(self, text: str) -> None:
        self._say(self.err, "yellow", f"warning: {text}")

    def error(self, text: str) -> None:
        self._say(self.err, "red", f"error: {text}")

    def node_line(self, prefix: str, line: str) -> None:
        with self._lock:
            self.out.print(escape(prefix + Masker.current().mask(line)))

    def summary(self, plan, outcomes, rd) -> None:
        table = Table(title=f"run {plan.run_id} (attempt {plan.attempt})")
        for col in ("node", "host", "exit", "duration", "note", "log"):
            table.add_column(col)
        for o in outcomes:
            note = "host lost" if o.lost else ("stopped by orchestrate" if o.stopped_by_us else "")
            code = "-" if o.exit_code is None else str(o.exit_code)
            dur = "-" if o.duration_s is None else f"{o.duration_s:.1f}s"
            log = rd.log_file(o.rank, plan.nodes[o.rank].label, plan.attempt)
            table.add_row(f"node{o.rank}", escape(o.host), code, dur, note, escape(str(log)))
        with self._lock:
            self.out.print(table)

    def table(self, table: Table) -> None:
        with self._lock:
            self.out.print(table)

    def print(self, text: str) -> None:
        with self._lock:
            self.out.print(escape(Masker.current().mask(text)))


class HostProgress:
    """Per-host progress for image transfer and load: a rich display on a terminal (bytes, rate, ETA),
    plain lines at every 10% otherwise (CI logs, pipes)."""

    def __init__(self, console: Console, title: str, hosts: list[str], live: Optional[bool] = None):
        self.console = console
        self.title = title
        self.live = console.err.is_terminal if live is None else live
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}
        self._tasks: dict[str, Any] = {}
        self._progress = None
        if self.live:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                      TransferSpeedColumn(), TimeRemainingColumn(), console=console.err,
                                      transient=False)
            for h in hosts:
                self._tasks[h] = self._progress.add_task(escape(f"[{h}] {title}"), total=None, start=False)

    def __enter__(self) -> "HostProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, host: str, done: int, total: int) -> None:
        if self._progress is not None:
            task = self._tasks[host]
            self._progress.start_task(task)
            self._progress.update(task, completed=done, total=total)
            return
        step = int(done * 10 / total) if total else 10
        with self._lock:
            if step > self._last.get(host, -1):
                self._last[host] = step
                self.console.info(f"[{host}] {self.title}: {done / 1e6:.0f}/{total / 1e6:.0f} MB ({step * 10}%)")

    def note(self, host: str, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._tasks[host], description=escape(f"[{host}] {text}"))
        else:
            self.console.info(f"[{host}] {text}")
