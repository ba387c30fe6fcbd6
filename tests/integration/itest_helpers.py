"""Running the real CLI against the testbed, and looking at the hosts afterwards."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import yaml

REPO = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("ORCHESTRATE_TESTBED_DIR", "/var/tmp/orchestrate-testbed"))
IMAGE = "orchestrate/testbed-cpu:1"
HOST_TARBALL = "/var/lib/orchestrate/images/testbed-cpu.tar.gz"
# generous guard so a broken run cannot hang CI forever; not a performance assertion
GUARD_S = 900


def base_job(name: str, hosts=("tb1", "tb2"), **over: Any) -> dict:
    job: dict[str, Any] = {
        "name": name,
        "hosts": list(hosts),
        "ssh": {"config_file": str(STATE / "ssh_config"), "known_hosts": str(STATE / "known_hosts"),
                "identity_file": str(STATE / "id_ed25519"), "connect_timeout": 5},
        "image": {"name": IMAGE, "tarball": HOST_TARBALL, "location": "host"},
        "container": {"shm_size": "256m", "volumes": [f"{REPO}:{REPO}:ro"],
                      "env": {"PATH": f"{REPO}/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                              "OMP_NUM_THREADS": "1"}},
        "distributed": {"launcher": "none", "master_port": 29600},
        "faults": {"stop_grace": 3},
        "command": ["sh", "-c", "echo hello from $NODE_RANK"],
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(job.get(key), dict):
            job[key] = {**job[key], **value}
        else:
            job[key] = value
    return job


def write_job(tmp_path: Path, job: dict, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


class Result:
    def __init__(self, rc: int, out: str, err: str):
        self.rc, self.out, self.err = rc, out, err

    @property
    def all(self) -> str:
        return self.out + self.err

    def __repr__(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.out[-4000:]}\n--- stderr\n{self.err[-4000:]}"


def orchestrate(*args: str, runs: Path, env: Optional[dict] = None, cwd: Optional[Path] = None) -> Result:
    e = dict(os.environ, ORCHESTRATE_RUNS_DIR=str(runs), COLUMNS="200")
    e.pop("ORCHESTRATE_DEBUG", None)
    e.update(env or {})
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                       env=e, cwd=cwd or REPO, timeout=GUARD_S)
    return Result(p.returncode, p.stdout, p.stderr)


def start_orchestrate(*args: str, runs: Path, env: Optional[dict] = None) -> subprocess.Popen:
    e = dict(os.environ, ORCHESTRATE_RUNS_DIR=str(runs), COLUMNS="200", PYTHONUNBUFFERED="1")
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=e, cwd=REPO)


def only_run(runs: Path) -> Path:
    found = [p for p in runs.iterdir() if (p / "run.json").exists()]
    assert len(found) == 1, f"expected one run under {runs}, found {found}"
    return found[0]


def run_record(runs: Path) -> dict:
    return json.loads((only_run(runs) / "run.json").read_text())


def containers_of(testbed, run_id: Optional[str] = None) -> dict[str, list]:
    """Every container labelled orchestrate.run(=run_id) on every testbed host, asked of each daemon."""
    out = {}
    for h in testbed:
        label = f"orchestrate.run={run_id}" if run_id else "orchestrate.run"
        out[h.name] = testbed.docker_client(h.name).containers.list(all=True, filters={"label": label})
    return out


def assert_nothing_left(testbed, run_id: str) -> None:
    left = {h: [c.name for c in cs] for h, cs in containers_of(testbed, run_id).items() if cs}
    assert not left, f"containers of run {run_id} left behind: {left}"


def wait_for(predicate, what: str, limit_s: float = 300, every: float = 0.5):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what}")


def interrupt(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
