"""up / wait / teardown: the only module that executes a Plan.

Gang semantics: the first node that exits non-zero (or whose host is lost) stops every other node
(SIGTERM, SIGKILL after ``faults.stop_grace``); every node's output is written to
``runs/<run_id>/logs/`` as it arrives and re-read from the daemon before a container is removed, so no
log is lost; metrics files come back to ``runs/<run_id>/metrics/``.
"""
from __future__ import annotations

import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from . import docker_api, images, preflight
from .console import Console, HostProgress, Masker
from .errors import OrchestrateError, SpecError
from .fanout import fanout
from .nodes import ContainerNode, NodeHandle, ProcessNode
from .plan import Plan, make_plan
from .runs import RunDir, new_run_id, runs_root
from .spec import JobSpec
from .hosts import Hosts, _probe, _quiet, gather_node_metrics, remove_run_containers
from .transport import resolve_master_addr


# Lines a node prints to tell the watchdog how far it got: "[orchestrate] rendezvous", "[orchestrate] first-step"
# (the trainer prints both on every node; any command may).
MARKER = b"[orchestrate] "


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def secret_values(spec: JobSpec, environ: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    missing = [n for n in spec.container.secret_env if n not in env]
    if missing:
        raise SpecError(f"container.secret_env: {', '.join(missing)} not set in the controller's environment")
    return {n: env[n] for n in spec.container.secret_env}


def secret_file_bytes(values: dict[str, str]) -> bytes:
    import shlex

    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items()).encode()


# ------------------------------------------------------------------------------------------ up


@dataclass
class NodeOutcome:
    rank: int
    host: str
    exit_code: Optional[int] = None
    started: Optional[str] = None
    ended: Optional[str] = None
    duration_s: Optional[float] = None
    stopped_by_us: bool = False
    lost: bool = False
    container: Optional[str] = None
    container_id: Optional[str] = None


class Interrupted(OrchestrateError):
    exit_code = 130


class Launcher:
    def __init__(self, spec: JobSpec, job_file: str, console: Console, detach: bool = False,
                 skip_preflight: bool = False, runs_dir: Optional[Path] = None):
        self.spec = spec
        self.job_file = job_file
        self.console = console
        self.detach = detach
        self.skip_preflight = skip_preflight
        self.run_id = new_run_id()
        self.rd = RunDir(runs_dir or runs_root(), self.run_id)
        self.secrets = secret_values(spec)
        Masker.install(self.secrets.values())
        self.hosts: Optional[Hosts] = None
        self.interrupts = 0
        self._interrupt_said = False
        self.events: "queue.Queue[tuple]" = queue.Queue()
        self.record: dict = {}
        self.image_id: Optional[str] = None
        self.master_addr = resolve_master_addr(spec)

    # -- signals -------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        # Only a counter: a handler that takes a lock (printing, a queue) can deadlock against the very
        # code it interrupted. The main loop notices within half a second; a second signal stops waiting.
        self.interrupts += 1
        if self.interrupts > 1:
            raise KeyboardInterrupt

    def _say_interrupted(self) -> None:
        if not self._interrupt_said:
            self._interrupt_said = True
            self.console.warn("interrupted: stopping and removing this run's containers on every host "
                              "(press Ctrl-C again to stop waiting)")

    def _check_interrupt(self, phase: str) -> None:
        if self.interrupts:
            self._say_interrupted()
            raise Interrupted(f"interrupted during {phase}; run {self.run_id} torn down")

    # -- run.json ------------------------------------------------------------------------------
    def _write_record(self, status: str, outcomes: Optional[list[NodeOutcome]] = None, plan: Optional[Plan] = None):
        rec = self.record
        if not rec:
            rec.update({
                "run_id": self.run_id, "created": now_iso(), "started": None, "ended": None,
                "job": {"name": self.spec.name, "file": self.job_file,
                        "spec": self.spec.model_dump(mode="json")},
                "hosts": list(self.spec.hosts), "device": self.spec.device, "nnodes": self.spec.nnodes,
                "nproc_per_node": self.spec.distributed.nproc_per_node, "attempt": 0,
                "image": {"name": self.spec.image.name if self.spec.image else None, "id": None},
                "nodes": [],
            })
        rec["status"] = status
        rec["image"]["id"] = self.image_id
        if plan is not None:
            rec["attempt"] = plan.attempt
        if outcomes is not None:
            rec["nodes"] = [{
                "rank": o.rank, "host": o.host, "container": o.container, "container_id": o.container_id,
                "exit_code": o.exit_code, "started": o.started, "ended": o.ended,
                "stopped_by_orchestrate": o.stopped_by_us, "lost": o.lost,
                "log": str(self.rd.log_file(o.rank, _label(self.spec, o.host), plan.attempt if plan else 0)
                           .relative_to(self.rd.path)),
            } for o in outcomes]
        self.rd.save(Masker.current().mask_obj(rec))

    # -- the whole thing -----------------------------------------------------------------------
    def up(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._up()
        except KeyboardInterrupt:
            self.console.error(f"stopped waiting; containers of run {self.run_id} may be left: "
                               f"remove them with `orchestrate down {self.run_id}`")
            self._write_record("unknown")
            return 130
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if self.hosts:
                self.hosts.close()

    def _up(self) -> int:
        spec = self.spec
        self._write_record("starting")
        self.console.info(f"run {self.run_id}: job {spec.name}, {spec.nnodes} node(s) x "
                          f"{spec.distributed.nproc_per_node} process(es); logs in {self.rd.path}/logs/")
        attempt = 0
        while True:
            try:
                code = self._attempt(attempt)
            except Interrupted as err:
                self._write_record("stopped")
                self.console.error(str(err))
                return 130
            except OrchestrateError:
                self._write_record("failed")
                raise
            if code == 0 or self.detach:
                return code
            if self.interrupts or attempt >= spec.faults.max_restarts:
                return code
            attempt += 1
            self.console.warn(f"attempt {attempt - 1} failed; restarting the whole job "
                              f"(attempt {attempt} of {spec.faults.max_restarts})")

    def _attempt(self, attempt: int) -> int:
        spec = self.spec
        facts = {}
        if spec.runtime == "docker" or spec.transport == "ssh":
            if self.hosts is None:
                self.hosts = Hosts.connect_all(spec)
                self._check_interrupt("connecting")
            if not self.skip_preflight:
                facts = preflight.run_preflight(spec, self.hosts, self.console, self.master_addr)
            self._check_interrupt("preflight")
        plan = make_plan(spec, self.run_id, attempt, facts, master_addr=self.master_addr)
        for w in plan.warnings:
            self.console.warn(w)
        if spec.runtime == "docker":
            self._ensure_images()
            self._check_interrupt("image load")
        handles: list[NodeHandle] = []
        outcomes = [NodeOutcome(n.rank, n.host.text, container=n.container_name) for n in plan.nodes]
        try:
            handles = self._start_nodes(plan, outcomes)
            self.record.setdefault("started", None)
            self.record["started"] = self.record["started"] or now_iso()
            self._write_record("running", outcomes, plan)
            self._check_interrupt("start")
        except BaseException:
            self._teardown_everything(plan)
            raise
        if self.detach:
            self.console.info(f"detached; follow with `orchestrate logs {self.run_id} --follow`, "
                              f"stop with `orchestrate down {self.run_id}`")
            return 0
        return self._supervise(plan, handles, outcomes)

    # -- image ---------------------------------------------------------------------------------
    def _ensure_images(self) -> None:
        img = self.spec.image
        assert img is not None and self.hosts is not None
        local_ident = None
        if img.tarball and img.location == "controller":
            if not os.path.isfile(img.tarball):
                raise images.ImageError(f"{img.tarball}: image tarball not found on the controller")
            if img.sha256:
                got = images.sha256_local(img.tarball)
                if got != img.sha256:
                    raise images.ImageError(f"{img.tarball}: sha256 is {got}, the job expects {img.sha256}")
            local_ident = images.read_identity_local(img.tarball)
        hosts = list(self.hosts.transports)
        with HostProgress(self.console, "image", hosts) as progress:
            def one(h: str):
                return images.ensure_image(self.hosts.transports[h], self.hosts.docker(h), img, local_ident,
                                           progress=lambda done, total: progress.update(h, done, total),
                                           note=lambda text: progress.note(h, text),
                                           cache_dir=self.spec.host_dir)
            results, _ = fanout([(h, h) for h in hosts], one, "image")
        for r in results.values():
            self.console.info(f"[{r.host}] image {r.image_id[:19]} "
                              + (f"loaded ({r.bytes_moved / 1e6:.0f} MB sent)" if r.loaded and r.bytes_moved
                                 else "loaded" if r.loaded else "already present"))
        self.image_id = next(iter(results.values())).image_id if results else None

    # -- start ---------------------------------------------------------------------------------
    def _start_nodes(self, plan: Plan, outcomes: list[NodeOutcome]) -> list[NodeHandle]:
        spec = self.spec
        if spec.runtime == "process":
            handles = []
            for node, out in zip(plan.nodes, outcomes):
                handles.append(ProcessNode(node, self.secrets))
                out.started = now_iso()
            return handles
        assert self.hosts is not None
        secret_blob = secret_file_bytes(self.secrets) if self.secrets else None

        def prepare(node):
            t = self.hosts.transports[node.host.text]
            t.makedirs(node.output_dir)
            if node.secret_file and secret_blob is not None:
                t.write_file(node.secret_file, secret_blob, 0o600)
            return docker_api.create_node(self.hosts.docker(node.host.text), plan, node)

        created, _ = fanout([(n.host.text, n) for n in plan.nodes], prepare, "create containers")

        def start(node):
            c = created[node.host.text]
            c.start()
            return c

        fanout([(n.host.text, n) for n in plan.nodes], start, "start containers")
        handles = []
        for node, out in zip(plan.nodes, outcomes):
            c = created[node.host.text]
            out.container_id = c.id
            out.started = now_iso()
            handles.append(ContainerNode(node, self.hosts.docker(node.host.text),
                                         self.hosts.docker(node.host.text, streaming=True), c.id))
        return handles

    # -- supervise -----------------------------------------------------------------------------
    def _supervise(self, plan: Plan, handles: list[NodeHandle], outcomes: list[NodeOutcome]) -> int:
        spec = self.spec
        t0 = {h.node.rank: time.monotonic() for h in handles}
        last_output = {h.node.rank: time.monotonic() for h in handles}
        self.markers = {h.node.rank: {} for h in handles}
        started_at = time.monotonic()
        pumps = []
        for h in handles:
            path = self.rd.log_file(h.node.rank, h.node.label, plan.attempt)
            th = threading.Thread(target=self._pump, args=(h, path, last_output), daemon=True)
            th.start()
            pumps.append(th)
            threading.Thread(target=self._waiter, args=(h,), daemon=True).start()

        running = {h.node.rank for h in handles}
        by_rank = {h.node.rank: h for h in handles}
        monitor_stop = threading.Event()
        if self.hosts is not None and spec.runtime == "docker":
            threading.Thread(target=self._monitor_hosts, args=(monitor_stop,), daemon=True).start()
        first_failure: Optional[tuple[int, str]] = None
        stopping = False
        gang_started = False
        while running:
            try:
                ev = self.events.get(timeout=0.5)
            except queue.Empty:
                ev = None
            if ev is not None and ev[0] == "exit":
                _, rank, code = ev
                if rank not in running:
                    continue
                running.discard(rank)
                o = outcomes[rank]
                o.exit_code = code
                o.ended = now_iso()
                o.duration_s = time.monotonic() - t0[rank]
                if code != 0 and first_failure is None and not stopping:
                    first_failure = (rank, f"exited with code {code}")
            elif ev is not None and ev[0] == "lost":
                _, rank, why = ev
                if rank in running:
                    running.discard(rank)
                    outcomes[rank].lost = True
                    outcomes[rank].ended = now_iso()
                    if first_failure is None and not stopping:
                        first_failure = (rank, f"host lost: {why}")
            elif ev is not None and ev[0] == "host_lost":
                _, host, why = ev
                for r in sorted(running):
                    if plan.nodes[r].host.text == host:
                        running.discard(r)
                        outcomes[r].lost = True
                        outcomes[r].ended = now_iso()
                        if first_failure is None and not stopping:
                            first_failure = (r, f"host lost: {why}")
            if self.interrupts and not stopping:
                self._say_interrupted()
                stopping = True
            if not stopping and first_failure is None:
                fired = self._watchdog(plan, running, last_output, started_at)
                if fired is not None:
                    first_failure = fired
            if (first_failure is not None or stopping) and running and not gang_started:
                gang_started = True
                for r in running:
                    outcomes[r].stopped_by_us = True
                others = [by_rank[r] for r in running]
                threading.Thread(target=self._gang_stop, args=(others,), daemon=True).start()
        monitor_stop.set()
        lost = {o.rank for o in outcomes if o.lost}
        for h, th in zip(handles, pumps):
            th.join(timeout=1 if h.node.rank in lost else 30)
        self._finish(plan, [h for h in handles if h.node.rank not in lost], outcomes)
        for r in sorted(lost):
            self.console.error(f"node{r} ({plan.nodes[r].host.text}) was lost: its container may still run there; "
                               f"when the host is back, `orchestrate down {self.run_id}` removes it and saves its log")
        failed = first_failure is not None or any(o.exit_code != 0 for o in outcomes)
        status = "stopped" if stopping and first_failure is None else ("failed" if failed else "succeeded")
        self.record["ended"] = now_iso()
        self._write_record(status, outcomes, plan)
        self.console.summary(plan, outcomes, self.rd)
        if stopping and first_failure is None:
            raise Interrupted(f"interrupted during training; run {self.run_id} stopped and removed")
        if failed:
            if first_failure is not None:
                rank, why = first_failure
                tail = self._log_tail(plan, rank)
                self.console.error(f"node{rank} ({plan.nodes[rank].host.text}) {why}; the other nodes were stopped"
                                   + (f"\nlast lines of node{rank}:\n{tail}" if tail else ""))
            return 1
        return 0

    def _watchdog(self, plan: Plan, running: set, last_output: dict, started_at: float):
        """Staged timeouts: rendezvous and first step (marker lines every node prints), then output stalls."""
        f = self.spec.faults
        now = time.monotonic()
        stages = [("rendezvous", f.rendezvous_timeout, "faults.rendezvous_timeout"),
                  ("first-step", f.first_step_timeout, "faults.first_step_timeout")]
        for marker, limit, key in stages:
            if limit and now - started_at > limit:
                silent = sorted(r for r in running if marker not in self.markers[r])
                if silent:
                    return self._fire(plan, silent, f"did not report {marker} within {limit:g}s ({key})")
        stall = f.stall_timeout
        if stall:
            silent = sorted(r for r in running if now - last_output[r] > stall)
            if silent:
                return self._fire(plan, silent, f"no output for {stall:g}s (faults.stall_timeout)")
        return None

    def _fire(self, plan: Plan, silent: list[int], why: str):
        names = ", ".join(f"node{r} ({plan.nodes[r].host.text})" for r in silent)
        self.console.error(f"watchdog: {names} {why}; stopping the job")
        return silent[0], f"{why}: {names}"

    def _log_tail(self, plan: Plan, rank: int, n: int = 10) -> str:
        path = self.rd.log_file(rank, plan.nodes[rank].label, plan.attempt)
        try:
            lines = path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n".join("    " + ln for ln in lines)

    def _pump(self, h: NodeHandle, path: Path, last_output: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        prefix = f"[node{h.node.rank} {h.node.label}] "
        masker = Masker.current()
        pending = b""
        with open(path, "ab") as f:
            try:
                for chunk in h.output():
                    last_output[h.node.rank] = time.monotonic()
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.startswith(MARKER) and line[len(MARKER):].split():
                            stage = line[len(MARKER):].split()[0].decode(errors="replace")
                            self.markers[h.node.rank].setdefault(stage, time.monotonic())
                        line = masker.mask_bytes(line)
                        f.write(line + b"\n")
                        f.flush()
                        self.console.node_line(prefix, line.decode(errors="replace"))
            except Exception:  # noqa: BLE001 - a broken stream must not kill the run; the log is re-read at the end
                pass
            if pending:
                line = masker.mask_bytes(pending)
                f.write(line + b"\n")
                self.console.node_line(prefix, line.decode(errors="replace"))

    def _waiter(self, h: NodeHandle) -> None:
        spec = self.spec
        deadline = None
        while True:
            try:
                code = h.wait()
                self.events.put(("exit", h.node.rank, code))
                return
            except Exception as err:  # noqa: BLE001
                if isinstance(h, ProcessNode) or self.hosts is None:
                    self.events.put(("exit", h.node.rank, -1))
                    return
                host = h.node.host.text
                deadline = deadline or time.monotonic() + spec.faults.lost_host_timeout
                if time.monotonic() > deadline:
                    self.events.put(("lost", h.node.rank, f"{type(err).__name__}: {err}"[:200]))
                    return
                time.sleep(1.0)
                try:
                    if not self.hosts.transports[host].alive():
                        self.hosts.reconnect(host)
                    assert isinstance(h, ContainerNode)
                    h.api = self.hosts.docker(host)
                    h.stream = self.hosts.docker(host, streaming=True)
                except Exception:  # noqa: BLE001 - keep trying until lost_host_timeout
                    continue

    def _monitor_hosts(self, stop: threading.Event) -> None:
        """A host that answers no ssh request for faults.lost_host_timeout is lost (cable, sshd, power)."""
        assert self.hosts is not None
        limit = self.spec.faults.lost_host_timeout
        down_since: dict[str, float] = {}
        reported: set[str] = set()
        while not stop.wait(2.0):
            for host, t in list(self.hosts.transports.items()):
                if host in reported:
                    continue
                why = _probe(t)
                if why is None:
                    down_since.pop(host, None)
                    continue
                first = down_since.setdefault(host, time.monotonic())
                if time.monotonic() - first >= limit:
                    reported.add(host)
                    self.events.put(("host_lost", host, f"no answer over ssh for {limit:g}s ({why})"))

    def _gang_stop(self, handles: list[NodeHandle]) -> None:
        grace = self.spec.faults.stop_grace
        threads = [threading.Thread(target=_quiet, args=(h.stop, grace), daemon=True) for h in handles]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _finish(self, plan: Plan, handles: list[NodeHandle], outcomes: list[NodeOutcome]) -> None:
        """Re-read each container's full log, gather metrics, remove containers (lost hosts: say so)."""
        def one(h: NodeHandle):
            path = self.rd.log_file(h.node.rank, h.node.label, plan.attempt)
            data = h.full_log()
            if data is not None and (not path.exists() or path.stat().st_size < len(data)):
                path.write_bytes(Masker.current().mask_bytes(data))
            self._gather_metrics(h)
            h.remove()

        _, failures = fanout([(h.node.host.text, h) for h in handles], one, "teardown", raise_errors=False)
        for host, err in failures.items():
            self.console.error(f"{host}: could not clean up ({err}); run `orchestrate down {self.run_id}` "
                               "when the host is back")
        if self.hosts is not None and self.spec.runtime == "docker":
            reachable = [h for h in self.hosts.transports if h not in failures]
            _quiet(remove_run_containers, self.hosts, self.run_id, 0, self.rd, reachable)
            for node in plan.nodes:
                if node.secret_file and node.host.text in reachable:
                    _quiet(self.hosts.transports[node.host.text].run, ["rm", "-f", node.secret_file])

    def _gather_metrics(self, h: NodeHandle) -> None:
        t = None if self.spec.runtime == "process" else self.hosts.transports[h.node.host.text]  # type: ignore[union-attr]
        gather_node_metrics(t, h.node.output_dir, self.rd.metrics_dir(h.node.rank, h.node.label))

    def _teardown_everything(self, plan: Plan) -> None:
        if self.hosts is None or self.spec.runtime != "docker":
            return
        try:
            remove_run_containers(self.hosts, self.run_id, 0, self.rd)
        except OrchestrateError as err:
            self.console.error(f"cleanup after a failed start: {err}; run `orchestrate down {self.run_id}`")


def _label(spec: JobSpec, host_text: str) -> str:
    return next(r.label for r in spec.host_refs if r.text == host_text)
