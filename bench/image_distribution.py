"""Time to get an image tarball from the controller onto N = 1, 2, 4 testbed hosts, and the bytes moved.

Uses the same code as `orchestrate up` (images.ensure_image over each host's SSH connection, in parallel:
the tarball is streamed straight into each daemon). A >= 500 MB image of incompressible data is made on
the first run (kept in /var/tmp). Sizes alternate (1, 2, 4, 1, 2, 4, ...) so the shared machine's noise
hits all alike; a plain `cat tarball > /dev/null` read rate of the same file is printed beside it.
The second pass, with the image already on every host, must move 0 bytes.

    .venv/bin/python bench/image_distribution.py [--repeats 2] [--mb 520]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from orchestrator import images  # noqa: E402
from orchestrator.fanout import fanout  # noqa: E402
from orchestrator.hosts import Hosts  # noqa: E402
from orchestrator.spec import JobSpec  # noqa: E402

STATE = Path(os.environ.get("ORCHESTRATE_TESTBED_DIR", "/var/tmp/orchestrate-testbed"))
BIG = Path("/var/tmp/orchestrate-bench-image.tar")
NAME = "orchestrate/bench-big:1"


def hosts_json():
    return json.loads((STATE / "hosts.json").read_text())


def make_big_tarball(mb: int) -> None:
    """An image whose one layer is `mb` MB of random bytes, saved as a plain tar (random data does not gzip)."""
    if BIG.exists() and BIG.stat().st_size >= mb * 1_000_000:
        return
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        data = os.urandom(mb * 1_000_000)
        info = tarfile.TarInfo("payload.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    sock = hosts_json()[0]["docker_sock"]
    client = docker.DockerClient(base_url=f"unix://{sock}")
    img = client.api.import_image_from_data(layer.getvalue(), repository="orchestrate/bench-big", tag="1")
    del layer
    with open(BIG, "wb") as f:
        for chunk in client.api.get_image(NAME):
            f.write(chunk)
    client.images.remove(NAME, force=True)
    print(f"made {BIG} ({BIG.stat().st_size / 1e6:.0f} MB) {img}")


def spec_for(hosts: list[str]) -> JobSpec:
    return JobSpec.model_validate({
        "name": "bench-image", "hosts": hosts,
        "ssh": {"config_file": str(STATE / "ssh_config"), "known_hosts": str(STATE / "known_hosts"),
                "identity_file": str(STATE / "id_ed25519")},
        "image": {"name": NAME, "tarball": str(BIG), "location": "controller"},
        "command": ["true"],
    })


def drop(hosts: list[str]) -> None:
    for h in hosts_json():
        if h["name"] in hosts:
            client = docker.DockerClient(base_url=f"unix://{h['docker_sock']}")
            for img in client.images.list(name="orchestrate/bench-big"):
                client.images.remove(img.id, force=True)


def machine_cpu_s() -> float:
    """CPU seconds used by the whole machine so far (all cores, /proc/stat), to see where the time goes."""
    fields = Path("/proc/stat").read_text().split("\n")[0].split()[1:]
    busy = sum(int(x) for i, x in enumerate(fields) if i not in (3, 4))  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


CPU: dict[int, list[tuple[float, float]]] = {1: [], 2: [], 4: []}


def distribute(hosts: list[str], ident) -> tuple[float, int]:
    spec = spec_for(hosts)
    conn = Hosts.connect_all(spec)
    try:
        t0, c0, m0 = time.perf_counter(), time.process_time(), machine_cpu_s()
        results, _ = fanout([(h, h) for h in hosts],
                            lambda h: images.ensure_image(conn.transports[h], conn.docker(h), spec.image, ident),
                            "image")
        elapsed = time.perf_counter() - t0
        CPU.setdefault(len(hosts), []).append((time.process_time() - c0, machine_cpu_s() - m0))
        return elapsed, sum(r.bytes_moved for r in results.values())
    finally:
        conn.close()


def cat_rate() -> float:
    t0 = time.perf_counter()
    subprocess.run(["cat", str(BIG)], stdout=subprocess.DEVNULL, check=True)
    return BIG.stat().st_size / (time.perf_counter() - t0) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--mb", type=int, default=520)
    args = ap.parse_args()
    names = [h["name"] for h in hosts_json()]
    if len(names) < 4:
        sys.exit("needs a 4-host testbed: tests/testbed/testbed.sh up 4")
    make_big_tarball(args.mb)
    ident = images.read_identity_local(str(BIG))
    size = BIG.stat().st_size
    times: dict[int, list[float]] = {1: [], 2: [], 4: []}
    for _ in range(args.repeats):
        for n in (1, 2, 4):
            drop(names[:n])
            elapsed, moved = distribute(names[:n], ident)
            assert moved == n * size, (moved, n * size)
            times[n].append(elapsed)
    again, moved_again = distribute(names[:4], ident)
    rate = cat_rate()
    m1 = statistics.median(times[1])
    print(f"tarball {size / 1e6:.0f} MB; plain `cat > /dev/null` read: {rate:.0f} MB/s")
    for n in (1, 2, 4):
        m = statistics.median(times[n])
        ctrl = statistics.median(c for c, _ in CPU[n][: args.repeats])
        mach = statistics.median(x for _, x in CPU[n][: args.repeats])
        print(f"N={n}: median {m:.1f}s {['%.1f' % t for t in times[n]]}, {n * size / 1e6:.0f} MB moved, "
              f"{n * size / m / 1e6:.0f} MB/s aggregate, {m / m1:.2f}x the 1-host time; CPU: controller "
              f"{ctrl:.1f}s, whole machine {mach:.1f}s of {os.cpu_count() * m:.1f}s available")
    print(f"second run on 4 hosts (image present): {again:.2f}s, {moved_again} bytes moved")
    drop(names[:4])


if __name__ == "__main__":
    main()
