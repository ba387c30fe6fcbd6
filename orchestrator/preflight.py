"""Checks run on every host, in parallel, before anything is started: a table of (host, check, ok, detail).

The facts it learns (the interface facing the master, the device nodes present) feed the plan.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from rich.markup import escape
from rich.table import Table

from .errors import PreflightError
from .fanout import fanout
from .plan import HostFacts
from .spec import JobSpec

if TYPE_CHECKING:  # pragma: no cover
    from .console import Console
    from .hosts import Hosts

MLU_EXTRA = re.compile(r"^(cambricon_ipcm\d+|commu\d+|cmsg_ctrl\d+|cambr-msgq:\d+|cambr-rpc:\d+|cambricon_gdr)$")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class HostReport:
    host: str
    checks: list[Check] = field(default_factory=list)
    facts: HostFacts = field(default_factory=HostFacts)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def discover_devices(kind: str, dev: list[str], dri: list[str]) -> tuple[int, list[str], Optional[str]]:
    """From the names under /dev and /dev/dri: (accelerators found, device nodes to pass, missing control node).

    MLU: /dev/cambricon_devN + /dev/cambricon_ctl (+ the ipcm/commu/msgq/rpc/gdr nodes where present), as
    Cambricon's device plugin passes them; CUDA: /dev/nvidiaN + nvidiactl/uvm; DCU/ROCm: /dev/kfd + renderD*.
    """
    names = set(dev)
    if kind == "mlu":
        cards = sorted((n for n in names if re.fullmatch(r"cambricon_dev\d+", n)), key=_num)
        extra = sorted(n for n in names if MLU_EXTRA.match(n))
        ctl = "cambricon_ctl" in names
        nodes = [f"/dev/{n}" for n in cards + (["cambricon_ctl"] if ctl else []) + extra]
        return len(cards), nodes, None if ctl else "/dev/cambricon_ctl"
    if kind == "cuda":
        cards = sorted((n for n in names if re.fullmatch(r"nvidia\d+", n)), key=_num)
        ctl = [n for n in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset") if n in names]
        nodes = [f"/dev/{n}" for n in cards + ctl]
        return len(cards), nodes, None if "nvidiactl" in names or not cards else "/dev/nvidiactl"
    if kind == "dcu":
        render = sorted((n for n in dri if re.fullmatch(r"renderD\d+", n)), key=_num)
        kfd = "kfd" in names
        nodes = (["/dev/kfd"] if kfd else []) + [f"/dev/dri/{n}" for n in render]
        return len(render), nodes, None if kfd else "/dev/kfd"
    return 0, [], None


def _num(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else 0


def parse_route_dev(text: str) -> Optional[str]:
    m = re.search(r"\bdev\s+(\S+)", text)
    return m.group(1) if m else None


def parse_addr_dev(text: str) -> Optional[str]:
    """`ip -o addr show to ADDR`: '2: eth0    inet 10.0.0.1/24 ...' -> 'eth0' (veth names carry '@ifN')."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            return parts[1].split("@")[0]
    return None


# One exec gathers what preflight needs from a host (each ssh exec costs a login shell's start-up).
# The script is constant; the address and port arrive as "$1" and "$2", never parsed as shell code.
_FACTS = (
    'ip -o route get "$1" 2>&1; echo @@; ip -o addr show to "$1" 2>&1; echo @@; '
    'ss -Hltn "sport = :$2" 2>/dev/null || echo ERR; echo @@; ls -1A /dev 2>/dev/null; echo @@; '
    'ls -1A /dev/dri 2>/dev/null; true'
)


def _gather_facts(t, master_addr: str, port: int) -> dict[str, str]:
    res = t.run(["sh", "-c", _FACTS, "orchestrate-preflight", master_addr, str(port)], timeout=30)
    parts = res.text().split("@@\n")
    parts += [""] * (5 - len(parts))
    return dict(zip(("route", "addr", "ss", "dev", "dri"), parts))


def check_host(spec: JobSpec, hosts: "Hosts", host: str, is_master: bool, master_addr: str) -> HostReport:
    t = hosts.transports[host]
    rep = HostReport(host)
    rep.checks.append(Check("ssh", True, "connected, host key verified" if not t.is_local else "local"))
    if spec.runtime == "docker":
        try:
            v = hosts.docker(host).version()
            rep.checks.append(Check("docker", True, f"Engine {v.get('Version', '?')}"))
            rep.checks.append(_disk_check(spec, t, hosts.docker(host)))
        except Exception as err:  # noqa: BLE001 - reported in the table
            rep.checks.append(Check("docker", False, f"daemon not reachable: {str(err).splitlines()[0][:160]}"))
    ifname = None
    facts = _gather_facts(t, master_addr, spec.distributed.master_port) if spec.transport == "ssh" or \
        spec.device != "cpu" else {}
    if spec.transport == "ssh":
        ifname = parse_route_dev(facts["route"])
        if ifname == "lo" and not master_addr.startswith("127."):
            # the master itself: the route is local; the interface is the one that holds the address
            ifname = parse_addr_dev(facts["addr"]) or ifname
        if ifname:
            rep.checks.append(Check("route to master", True, f"{master_addr} via {ifname}"))
        else:
            why = facts["route"].strip().splitlines()[-1] if facts["route"].strip() else "ip route get failed"
            rep.checks.append(Check("route to master", False, f"no route to {master_addr}: {why}"))
    devices: list[str] = []
    if spec.device != "cpu":
        count, devices, missing = discover_devices(spec.device, facts["dev"].split(), facts["dri"].split())
        need = spec.distributed.nproc_per_node
        ok = count >= need and missing is None
        detail = f"{count} {spec.device} device(s) found, nproc_per_node is {need}"
        if missing:
            detail += f"; {missing} missing"
        rep.checks.append(Check("accelerators", ok, detail))
    if is_master and spec.transport == "ssh":
        port = spec.distributed.master_port
        ss_out = facts["ss"]
        checked = not ss_out.startswith("ERR")
        busy = checked and ss_out.strip() != ""
        rep.checks.append(Check("master port", checked and not busy,
                                f"{port} already in use on the master" if busy else
                                (f"{port} free" if checked else "cannot check: `ss` failed on the master")))
    rep.facts = HostFacts(ifname=ifname, devices=tuple(devices))
    return rep


def _disk_check(spec: JobSpec, t, client) -> Check:
    """Free space in the daemon's data root for the image, when it still has to be loaded there."""
    img = spec.image
    if img is None or not img.tarball:
        return Check("disk", True, "no tarball to load")
    try:
        client.images.get(img.name)
        return Check("disk", True, "image present")
    except Exception:  # noqa: BLE001 - not present (or not by this name): it may need loading
        pass
    root = client.info().get("DockerRootDir", "/var/lib/docker")
    if img.location == "host":
        res = t.run(["stat", "-c", "%s", img.tarball], timeout=15)
        if not res.ok:
            return Check("disk", False, f"image tarball {img.tarball} not found on this host")
        size = int(res.text().strip() or 0)
    else:
        import os

        size = os.path.getsize(img.tarball) if os.path.isfile(img.tarball) else 0
    df = t.run(["df", "-Pk", root], timeout=15)
    if not df.ok:
        return Check("disk", True, f"cannot read free space of {root} ({df.err_line()}); not checked")
    free = int(df.text().splitlines()[-1].split()[3]) * 1024
    need = int(size * DISK_FACTOR)
    ok = free >= need
    return Check("disk", ok, f"{free / 1e9:.1f} GB free in {root}, the image needs about {need / 1e9:.1f} GB"
                 + ("" if ok else " (tarball x%.1f)" % DISK_FACTOR))


# A gzip'd `docker save` unpacks to about 2-3x its size in the data root.
DISK_FACTOR = 3.0

# Short-lived listener and client for the master-reachability check. Constant code; the address and port
# are argv values (sys.argv), never formatted into the program text.
_LISTEN = ("import os,socket,sys,threading\n"
           "threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()\n"
           "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
           "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64); s.settimeout(float(sys.argv[3]))\n"
           "print('ready', flush=True)\n"
           "for _ in range(int(sys.argv[4])):\n    c, _ = s.accept(); c.close()\n"
           "s.close()\n")
_CONNECT = ("import socket,sys\n"
            "socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()\n")


def check_master_reachable(spec: JobSpec, hosts: "Hosts", master_host: str, master_addr: str) -> dict[str, Check]:
    """Open a listener on the master's port for a few seconds; every host must connect to it."""
    port = spec.distributed.master_port
    t = hosts.transports[master_host]
    if not hasattr(t, "open_exec"):
        return {}
    if not t.run(["python3", "-c", "pass"], timeout=15).ok:
        return {h: Check("reach master", True, "not checked: no python3 on the master host") for h in hosts.transports}
    # exits after one connection per host, on EOF of its stdin, or after 20 s: the port is free again
    chan = t.open_exec(["python3", "-c", _LISTEN, master_addr, str(port), "20", str(len(hosts.transports))])
    try:
        chan.settimeout(20)
        first = chan.makefile("rb").readline().decode(errors="replace").strip()
        if first != "ready":
            if chan.recv_exit_status() == 127:
                return {h: Check("reach master", True, "not checked: no python3 on the master host")
                        for h in hosts.transports}
            err = chan.makefile_stderr("rb").read().decode(errors="replace").strip().splitlines()
            why = err[-1] if err else "listener did not start"
            return {master_host: Check("reach master", False, f"cannot listen on {master_addr}:{port}: {why}")}

        def probe(h: str) -> Check:
            res = hosts.transports[h].run(["python3", "-c", _CONNECT, master_addr, str(port), "5"], timeout=20)
            if res.ok:
                return Check("reach master", True, f"TCP {master_addr}:{port} ok")
            if res.rc == 127:
                return Check("reach master", True, "not checked: no python3 on this host")
            return Check("reach master", False, f"cannot open TCP to {master_addr}:{port}: {res.err_line()}")

        results, failures = fanout([(h, h) for h in hosts.transports], probe, "reach master", raise_errors=False)
        results.update({h: Check("reach master", False, str(e)) for h, e in failures.items()})
        return results
    finally:
        try:
            chan.shutdown_write()
            deadline = time.monotonic() + 25
            while not chan.exit_status_ready() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            chan.close()


def run_checks(spec: JobSpec, hosts: "Hosts", master_addr: Optional[str] = None) -> list[HostReport]:
    from .transport import resolve_master_addr

    master_addr = master_addr or resolve_master_addr(spec)
    master_host = spec.hosts[0]
    for h, t in hosts.transports.items():
        if getattr(t, "address", None) == master_addr:
            master_host = h
    results, failures = fanout([(h, h) for h in hosts.transports],
                               lambda h: check_host(spec, hosts, h, h == master_host, master_addr), "preflight",
                               raise_errors=False)
    reports = []
    for h in hosts.transports:
        if h in results:
            reports.append(results[h])
        else:
            reports.append(HostReport(h, [Check("preflight", False, str(failures[h]))]))
    master_ok = all(c.ok for r in reports if r.host == master_host for c in r.checks if c.name == "master port")
    if spec.transport == "ssh" and master_ok and not failures:
        reach = check_master_reachable(spec, hosts, master_host, master_addr)
        for r in reports:
            if r.host in reach:
                r.checks.append(reach[r.host])
    return reports


def render(reports: list[HostReport]) -> Table:
    names: list[str] = []
    for r in reports:
        for c in r.checks:
            if c.name not in names:
                names.append(c.name)
    table = Table(title="preflight")
    table.add_column("host")
    for n in names:
        table.add_column(n)
    for r in reports:
        cells = []
        for n in names:
            c = next((c for c in r.checks if c.name == n), None)
            cells.append("" if c is None else (f"[green]ok[/] {escape(c.detail)}" if c.ok
                                               else f"[red]FAIL[/] {escape(c.detail)}"))
        table.add_row(escape(r.host), *cells)
    return table


def run_preflight(spec: JobSpec, hosts: "Hosts", console: "Console", master_addr: str) -> dict[str, HostFacts]:
    reports = run_checks(spec, hosts, master_addr)
    failed = [r for r in reports if not r.ok]
    if failed:
        console.table(render(reports))
        details = "; ".join(f"{r.host}: " + ", ".join(f"{c.name}: {c.detail}" for c in r.checks if not c.ok)
                            for r in failed)
        raise PreflightError(f"preflight failed on {len(failed)} host(s): {details}")
    return {r.host: r.facts for r in reports}
