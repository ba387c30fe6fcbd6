"""Time `orchestrate up --detach` to all-containers-running on the testbed, 1 host vs N hosts, side by side.

Connecting, checking, loading the image and starting containers run in parallel across hosts, so N hosts
should cost about what 1 host costs. Cold = the image is loaded from each host's tarball first; warm = it
is already there. Runs alternate (1, N, 1, N, ...) so the shared machine's noise hits both alike; the
result is the ratio of medians.

    .venv/bin/python bench/up_scaling.py [--hosts 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("ORCHESTRATE_TESTBED_DIR", "/var/tmp/orchestrate-testbed"))


def job(hosts: list[str]) -> dict:
    return {
        "name": "bench-up",
        "hosts": hosts,
        "ssh": {"config_file": str(STATE / "ssh_config"), "known_hosts": str(STATE / "known_hosts"),
                "identity_file": str(STATE / "id_ed25519")},
        "image": {"name": "orchestrate/testbed-cpu:1", "tarball": "/var/lib/orchestrate/images/testbed-cpu.tar.gz",
                  "location": "host"},
        "container": {"shm_size": "64m"},
        "distributed": {"launcher": "none"},
        "command": ["sleep", "600"],
    }


def drop_image(hosts: list[str]) -> None:
    import docker

    for h in json.loads((STATE / "hosts.json").read_text()):
        if h["name"] in hosts:
            client = docker.DockerClient(base_url=f"unix://{h['docker_sock']}")
            for img in client.images.list(name="orchestrate/testbed-cpu"):
                client.images.remove(img.id, force=True)


def time_up(hosts: list[str], cold: bool, runs: Path) -> float:
    if cold:
        drop_image(hosts)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(job(hosts), f)
    env = dict(os.environ, ORCHESTRATE_RUNS_DIR=str(runs))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", "up", f.name, "--detach"], env=env,
                       capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"up failed:\n{p.stderr}")
    run_id = sorted(x.name for x in runs.iterdir())[-1]
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "down", run_id], env=env, capture_output=True)
    os.unlink(f.name)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    all_hosts = [h["name"] for h in json.loads((STATE / "hosts.json").read_text())]
    if len(all_hosts) < args.hosts:
        sys.exit(f"the testbed has {len(all_hosts)} hosts; start it with tests/testbed/testbed.sh up {args.hosts}")
    one, many = all_hosts[:1], all_hosts[: args.hosts]
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        for cold in (True, False):
            times: dict[int, list[float]] = {1: [], args.hosts: []}
            for _ in range(args.repeats):
                for hosts in (one, many):
                    times[len(hosts)].append(time_up(hosts, cold, runs))
            m1, mn = statistics.median(times[1]), statistics.median(times[args.hosts])
            kind = "cold (image loaded from each host's tarball)" if cold else "warm (image present)"
            print(f"{kind}: 1 host median {m1:.2f}s {['%.2f' % t for t in times[1]]}; "
                  f"{args.hosts} hosts median {mn:.2f}s {['%.2f' % t for t in times[args.hosts]]}; "
                  f"ratio {mn / m1:.2f}")


if __name__ == "__main__":
    main()
