"""Connections to every host of a job, and what is done to a run on all of them by label: remove its
containers (saving their logs first), bring its metrics back, remove its secret files."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import docker

from . import docker_api
from .console import Masker
from .fanout import fanout
from .plan import make_plan
from .runs import RunDir
from .spec import JobSpec
from .transport import Transport, connect


@dataclass
class Hosts:
    """Connections to every host of a job, in rank order (one transport per host)."""

    spec: JobSpec
    transports: dict[str, Transport]
    _clients: dict[tuple[str, bool], docker.DockerClient] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def connect_all(cls, spec: JobSpec) -> "Hosts":
        refs = spec.host_refs
        results, _ = fanout([(r.text, r) for r in refs],
                            lambda r: connect(r, spec.transport, spec.ssh), "connect")
        return cls(spec, results)

    def docker(self, host: str, streaming: bool = False) -> docker.DockerClient:
        with self._lock:
            key = (host, streaming)
            if key not in self._clients:
                self._clients[key] = docker_api.docker_client(self.transports[host], None if streaming else 60)
            return self._clients[key]

    def reconnect(self, host: str) -> None:
        ref = next(r for r in self.spec.host_refs if r.text == host)
        t = connect(ref, self.spec.transport, self.spec.ssh)
        with self._lock:
            old = self.transports[host]
            self.transports[host] = t
            for k in [k for k in self._clients if k[0] == host]:
                del self._clients[k]
        try:
            old.close()
        except Exception:
            pass

    def close(self) -> None:
        for c in self._clients.values():
            try:
                c.close()
            except Exception:
                pass
        for t in self.transports.values():
            t.close()


def remove_run_containers(hosts: Hosts, run_id: str, grace: float, rd: Optional[RunDir] = None,
                          only: Optional[list[str]] = None) -> dict[str, list[str]]:
    """Stop and remove every container labelled with the run on every host; save their logs first."""

    def one(host: str) -> list[str]:
        client = hosts.docker(host)
        removed = []
        for c in docker_api.find_containers(client, run_id):
            if rd is not None:
                _save_container_log(rd, c)
            docker_api.stop_and_remove(client, c, grace)
            removed.append(c.name)
        return removed

    targets = only or list(hosts.transports)
    results, _ = fanout([(h, h) for h in targets], one, "remove containers")
    return results


def _save_container_log(rd: RunDir, container) -> None:
    labels = container.labels or {}
    try:
        rank = int(labels.get("orchestrate.rank", "-1"))
        attempt = int(labels.get("orchestrate.attempt", "0"))
    except ValueError:
        return
    path = rd.log_file(rank, labels.get("orchestrate.host", "unknown"), attempt)
    try:
        data = container.logs(stdout=True, stderr=True)
    except docker.errors.APIError:
        return
    if path.exists() and path.stat().st_size >= len(data):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(Masker.current().mask_bytes(data))


def gather_node_metrics(t: Optional[Transport], output_dir: str, dest: Path) -> int:
    """Copy the trainer's *.jsonl files from a node's output dir (on its host, or here when ``t`` is None)."""
    if t is None:
        src = Path(output_dir)
        files = sorted(p.name for p in src.glob("*.jsonl")) if src.is_dir() else []
        read = lambda name: (src / name).read_bytes()  # noqa: E731
    else:
        files = [f for f in t.list_files(output_dir) if f.endswith(".jsonl")]
        read = lambda name: t.read_file(f"{output_dir}/{name}")  # noqa: E731
    for name in files:
        safe = os.path.basename(name)
        if safe in ("", ".", ".."):
            continue
        dest.mkdir(parents=True, exist_ok=True)
        (dest / safe).write_bytes(Masker.current().mask_bytes(read(name)))
    return len(files)


def gather_run(hosts: "Hosts", run_id: str, rd: RunDir, attempt: int = 0) -> dict[str, int]:
    """Metrics of every node of a run back to runs/<id>/metrics/ (``orchestrate gather``, ``down``)."""
    plan = make_plan(hosts.spec, run_id, attempt)

    def one(node):
        return gather_node_metrics(hosts.transports[node.host.text], node.output_dir,
                                   rd.metrics_dir(node.rank, node.label))

    results, _ = fanout([(n.host.text, n) for n in plan.nodes], one, "gather metrics")
    return results


def remove_secret_files(hosts: "Hosts", run_id: str) -> None:
    plan = make_plan(hosts.spec, run_id)
    for node in plan.nodes:
        if node.secret_file:
            _quiet(hosts.transports[node.host.text].run, ["rm", "-f", node.secret_file])


def _probe(t: Transport, timeout: float = 6.0) -> Optional[str]:
    """None if the host runs a trivial command within ``timeout``; else why not."""
    result: list[Optional[str]] = []

    def go():
        try:
            res = t.run(["true"], timeout=timeout)
            result.append(None if res.ok else f"exit {res.rc}")
        except Exception as err:  # noqa: BLE001
            result.append(str(err) or type(err).__name__)

    th = threading.Thread(target=go, daemon=True)
    th.start()
    th.join(timeout)
    return result[0] if result else f"no answer within {timeout:g}s"


def _quiet(fn: Callable, *args) -> None:
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        pass
