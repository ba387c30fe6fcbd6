"""JobSpec -> Plan: the one place that decides names, labels, env, mounts and argv. Pure: no I/O.

A plan is data: ``orchestrate up --dry-run`` prints it as the docker commands a person could paste,
and the launcher executes it without deciding anything of its own.
"""
from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .spec import HostRef, JobSpec

LABEL_RUN = "orchestrate.run"
LABEL_JOB = "orchestrate.job"
LABEL_RANK = "orchestrate.rank"
LABEL_ATTEMPT = "orchestrate.attempt"
LABEL_HOST = "orchestrate.host"

CONTAINER_OUTPUT_DIR = "/orchestrate/out"
CONTAINER_SECRET_FILE = "/run/orchestrate/secret.env"

PLACEHOLDER_RE = re.compile(r"\{(node_rank|nnodes|nproc_per_node|master_addr|master_port|world_size|run_id)\}")

# The container's entry point. It is a constant: spec values reach it only as positional arguments
# ("$@", never parsed by the shell) or, for `setup:` (which is shell by definition), appended after it
# with every placeholder value shell-quoted. Secrets are read from a 0600 file mounted read-only, so they
# never appear in `docker inspect` or on a command line.
WRAPPER_HEAD = f"""set -e
if [ -r {CONTAINER_SECRET_FILE} ]; then set -a; . {CONTAINER_SECRET_FILE}; set +a; fi
# in-container check, before the command: the accelerators this container can see, and /dev/shm
n=-1
case "$ORCHESTRATE_DEVICE_KIND" in
  mlu) n=$(ls -1 /dev 2>/dev/null | grep -c '^cambricon_dev[0-9][0-9]*$' || true) ;;
  cuda) n=$(ls -1 /dev 2>/dev/null | grep -c '^nvidia[0-9][0-9]*$' || true) ;;
  dcu) n=$(ls -1 /dev/dri 2>/dev/null | grep -c '^renderD[0-9][0-9]*$' || true) ;;
esac
if [ "$n" -ge 0 ] && [ "$n" -lt "$NPROC_PER_NODE" ]; then
  echo "orchestrate: in-container check failed: $n $ORCHESTRATE_DEVICE_KIND device(s) visible in the container, nproc_per_node is $NPROC_PER_NODE" >&2
  exit 97
fi
shm_kb=$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {{print $2}}' || true)
if [ -n "$shm_kb" ] && [ -n "$ORCHESTRATE_SHM_KB" ] && [ "$shm_kb" -lt "$ORCHESTRATE_SHM_KB" ]; then
  echo "orchestrate: warning: /dev/shm in the container is $((shm_kb / 1024)) MiB, the job asks for $((ORCHESTRATE_SHM_KB / 1024)) MiB (with ipc: host it is the host's /dev/shm)" >&2
fi
"""
WRAPPER_TAIL = 'exec "$@"\n'


@dataclass(frozen=True)
class HostFacts:
    """What preflight learned about a host that changes the plan."""

    ifname: Optional[str] = None          # interface facing the master (GLOO/NCCL_SOCKET_IFNAME)
    devices: tuple[str, ...] = ()         # device nodes present for the job's device kind (devices: auto)


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    def docker_arg(self) -> str:
        return f"{self.source}:{self.target}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True)
class NodePlan:
    rank: int
    host: HostRef
    container_name: str
    labels: dict[str, str]
    env: dict[str, str]
    argv: list[str]                  # the node's command, torchrun-wrapped when the launcher is torchrun
    entrypoint: list[str]            # sh -c WRAPPER orchestrate ; argv follows as "$@"
    mounts: list[Mount]
    devices: list[str]
    host_run_dir: str                # <host_dir>/runs/<run_id>/node<rank> on that host
    secret_file: Optional[str]       # host path of the 0600 secret env file, when secret_env is used

    @property
    def label(self) -> str:
        return self.host.label

    @property
    def output_dir(self) -> str:
        return posixpath.join(self.host_run_dir, "out")

    @property
    def full_command(self) -> list[str]:
        """What the container (or the local process) runs: wrapper + argv."""
        return self.entrypoint + self.argv


@dataclass(frozen=True)
class Plan:
    run_id: str
    attempt: int
    spec: JobSpec
    nodes: list[NodePlan]
    master_addr: str
    master_port: int
    warnings: list[str] = field(default_factory=list)

    @property
    def image(self) -> Optional[str]:
        return self.spec.image.name if self.spec.image else None


def size_kb(size: str) -> int:
    """'100g' -> KiB, with docker's binary units."""
    m = re.match(r"^([0-9.]+)([a-z]*)$", size.lower())
    if not m:
        raise ValueError(f"bad size {size!r}")
    mult = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30,
            "t": 1 << 40, "tb": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * mult) // 1024


def container_name(job: str, run_id: str, rank: int, attempt: int = 0) -> str:
    suffix = f"-a{attempt}" if attempt else ""
    return f"{job}-{run_id}-node{rank}{suffix}"


def fill_placeholders(text: str, values: Mapping[str, str], quote: bool = False) -> str:
    return PLACEHOLDER_RE.sub(lambda m: shlex.quote(values[m.group(1)]) if quote else values[m.group(1)], text)


def torchrun_argv(command: list[str], nnodes: int, nproc: int, rank: int, addr: str, port: int) -> list[str]:
    # Underscore spellings: accepted by every torchrun from torch 1.10 (vendor MLU images ship 1.13) to now.
    head = ["torchrun", f"--nnodes={nnodes}", f"--nproc_per_node={nproc}", f"--node_rank={rank}",
            f"--master_addr={addr}", f"--master_port={port}"]
    if command[0] == "-m" or command[0].endswith(".py"):
        return head + command
    return head + ["--no_python"] + command


def make_plan(spec: JobSpec, run_id: str, attempt: int = 0,
              facts: Optional[Mapping[str, HostFacts]] = None, master_addr: Optional[str] = None) -> Plan:
    """``master_addr``: the master's address as resolved by the caller (an ssh_config alias is not an
    address the ranks can use); defaults to what the job file says."""
    facts = facts or {}
    refs = spec.host_refs
    addr, port = master_addr or spec.master_addr, spec.distributed.master_port
    nnodes, nproc = spec.nnodes, spec.distributed.nproc_per_node
    warnings: list[str] = []
    if spec.container.privileged and spec.runtime == "docker":
        warnings.append("container.privileged: true gives every container all host devices and capabilities "
                        "(it can change the host's kernel settings and devices); prefer devices: auto")
    nodes = []
    for rank, ref in enumerate(refs):
        values = {"node_rank": str(rank), "nnodes": str(nnodes), "nproc_per_node": str(nproc),
                  "master_addr": addr, "master_port": str(port), "world_size": str(nnodes * nproc),
                  "run_id": run_id}
        command = [fill_placeholders(a, values) for a in spec.command]
        argv = (torchrun_argv(command, nnodes, nproc, rank, addr, port)
                if spec.distributed.launcher == "torchrun" else command)
        script = WRAPPER_HEAD + "".join(fill_placeholders(s, values, quote=True) + "\n" for s in spec.setup) \
            + WRAPPER_TAIL
        host_run_dir = posixpath.join(spec.host_dir, "runs", run_id, f"node{rank}")
        fact = facts.get(ref.text, HostFacts())

        env = {k: fill_placeholders(v, values) for k, v in spec.container.env.items()}
        if fact.ifname:
            env.setdefault("GLOO_SOCKET_IFNAME", fact.ifname)
            env.setdefault("NCCL_SOCKET_IFNAME", fact.ifname)
        env.update({
            "NODE_RANK": str(rank), "NNODES": str(nnodes), "NPROC_PER_NODE": str(nproc),
            "MASTER_ADDR": addr, "MASTER_PORT": str(port), "WORLD_SIZE": str(nnodes * nproc),
            "ORCHESTRATE_RUN_ID": run_id, "ORCHESTRATE_JOB": spec.name, "ORCHESTRATE_ATTEMPT": str(attempt),
            "ORCHESTRATE_DEVICE_KIND": spec.device, "ORCHESTRATE_SHM_KB": str(size_kb(spec.container.shm_size)),
            "ORCHESTRATE_OUTPUT_DIR": CONTAINER_OUTPUT_DIR if spec.runtime == "docker"
            else posixpath.join(host_run_dir, "out"),
        })

        secret_file = posixpath.join(host_run_dir, "secret.env") if spec.container.secret_env else None
        mounts = [Mount(v.source, v.target, v.mode == "ro") for v in spec.container.volumes]
        mounts.append(Mount(posixpath.join(host_run_dir, "out"), CONTAINER_OUTPUT_DIR, False))
        if secret_file:
            mounts.append(Mount(secret_file, CONTAINER_SECRET_FILE, True))

        if spec.container.devices == "auto":
            devices = [f"{d}:{d}:rwm" for d in fact.devices]
        else:
            devices = [d if d.count(":") == 2 else (f"{d}:rwm" if d.count(":") == 1 else f"{d}:{d}:rwm")
                       for d in spec.container.devices]

        labels = {LABEL_RUN: run_id, LABEL_JOB: spec.name, LABEL_RANK: str(rank),
                  LABEL_ATTEMPT: str(attempt), LABEL_HOST: ref.label}
        nodes.append(NodePlan(
            rank=rank, host=ref, container_name=container_name(spec.name, run_id, rank, attempt),
            labels=labels, env=env, argv=argv, entrypoint=["sh", "-c", script, "orchestrate"],
            mounts=mounts, devices=devices, host_run_dir=host_run_dir, secret_file=secret_file,
        ))
    return Plan(run_id=run_id, attempt=attempt, spec=spec, nodes=nodes, master_addr=addr, master_port=port,
                warnings=warnings)


def docker_run_argv(plan: Plan, node: NodePlan) -> list[str]:
    """The `docker run` a person could paste on that host: the exact equivalent of what `up` starts."""
    c = plan.spec.container
    out = ["docker", "run", "-d", "--name", node.container_name, "--init"]
    for k, v in node.labels.items():
        out += ["--label", f"{k}={v}"]
    out += [f"--network={c.network}", f"--ipc={c.ipc}", f"--shm-size={c.shm_size}"]
    if c.privileged:
        out.append("--privileged")
    for d in node.devices:
        out += ["--device", d]
    for m in node.mounts:
        out += ["-v", m.docker_arg()]
    if c.workdir:
        out += ["-w", c.workdir]
    for k, v in node.env.items():
        out += ["-e", f"{k}={v}"]
    out += ["--entrypoint", node.entrypoint[0], plan.image or "", *node.entrypoint[1:], *node.argv]
    return out


def render_dry_run(plan: Plan) -> str:
    """Per host: the commands that do by hand what `orchestrate up` does."""
    spec = plan.spec
    lines = [f"# job {spec.name}, run {plan.run_id}: {spec.nnodes} node(s) x {spec.distributed.nproc_per_node} "
             f"process(es), master {plan.master_addr}:{plan.master_port}"]
    for w in plan.warnings:
        lines.append(f"# WARNING: {w}")
    for node in plan.nodes:
        lines.append("")
        lines.append(f"# --- node {node.rank} on {node.host.text}"
                     + (" (over ssh)" if spec.transport == "ssh" else " (this machine)"))
        if spec.runtime == "process":
            lines.append("mkdir -p " + shlex.quote(node.output_dir))
            envs = " ".join(shlex.quote(f"{k}={v}") for k, v in node.env.items())
            lines.append(f"env {envs} {shlex.join(node.full_command)}")
            continue
        img = spec.image
        if img and img.tarball:
            where = "on this host" if img.location == "host" else "copied from the controller"
            lines.append(f"# load only if `docker image inspect {img.name}` fails (tarball {where})")
            lines.append(shlex.join(["docker", "load", "-i", img.tarball]))
        lines.append(shlex.join(["mkdir", "-p", node.output_dir]))
        if node.secret_file:
            names = ", ".join(spec.container.secret_env)
            lines.append(f"# write {names} as NAME=value lines to {node.secret_file} (mode 0600); "
                         "values are not shown")
        lines.append(shlex.join(docker_run_argv(plan, node)))
    return "\n".join(lines) + "\n"
