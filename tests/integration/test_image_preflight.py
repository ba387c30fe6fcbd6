"""Getting the image onto hosts by content, and a preflight that stops a broken cluster before it starts."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from itest_helpers import HOST_TARBALL, base_job, containers_of, orchestrate, write_job


@pytest.fixture
def runs(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    return d


def drop_image(testbed, hosts=("tb1", "tb2")):
    for h in hosts:
        client = testbed.docker_client(h)
        for img in client.images.list(name="orchestrate/testbed-cpu"):
            client.images.remove(img.id, force=True)


def loads_between(testbed, host, since, until):
    return list(testbed.docker_client(host).events(since=since, until=until,
                                                   filters={"type": "image", "event": "load"}, decode=True))


def no_containers_of_job(testbed, name):
    for h, cs in containers_of(testbed).items():
        assert not [c for c in cs if c.labels.get("orchestrate.job") == name], (h, cs)


def test_controller_tarball_is_streamed_once_then_never(testbed, runs, tmp_path):
    drop_image(testbed)
    job = base_job("ship", image={"location": "controller", "tarball": str(testbed.image_tarball),
                                  "sha256": testbed.image_sha256})
    job_file = write_job(tmp_path, job)
    size = os.path.getsize(testbed.image_tarball)
    t0 = int(time.time())
    first = orchestrate("up", str(job_file), runs=runs)
    assert first.rc == 0, first
    assert first.err.count(f"loaded ({size / 1e6:.0f} MB sent)") == 2
    t1 = int(time.time()) + 1
    time.sleep(1.1)
    second = orchestrate("up", str(job_file), runs=runs)
    assert second.rc == 0, second
    assert second.err.count("already present") == 2 and "MB sent" not in second.err
    t2 = int(time.time()) + 1
    for h in ("tb1", "tb2"):
        assert len(loads_between(testbed, h, t0, t1)) == 1 and loads_between(testbed, h, t1, t2) == []
    # nothing was left on the hosts' disks: the bytes went straight into each daemon
    for h in ("tb1", "tb2"):
        assert not [p for p in testbed.host(h).lib_path().rglob("*.tar*") if "images" not in p.parts]


@pytest.mark.parametrize("case", ["missing_on_one_host", "corrupt", "sha256_mismatch", "disk_too_small",
                                  "daemon_stopped", "too_few_devices", "master_port_taken"])
def test_broken_cluster_is_refused_before_anything_starts(testbed, runs, tmp_path, case):
    drop_image(testbed)
    name = f"pre-{case.replace('_', '-')}"
    job = base_job(name)
    cleanup = []
    if case == "missing_on_one_host":
        tb2 = testbed.host("tb2").lib_path(HOST_TARBALL)
        moved = tb2.with_suffix(".away")
        shutil.move(tb2, moved)
        cleanup.append(lambda: shutil.move(moved, tb2))
        needle = "tb2: disk: image tarball /var/lib/orchestrate/images/testbed-cpu.tar.gz not found on this host"
    elif case == "corrupt":
        for h in ("tb2",):
            p = testbed.host(h).lib_path("images/broken.tar.gz")
            good = testbed.image_tarball.read_bytes()
            p.write_bytes(good[: len(good) // 3])  # truncated, as an interrupted copy leaves it
            cleanup.append(lambda p=p: p.unlink())
        shutil.copy(testbed.image_tarball, testbed.host("tb1").lib_path("images/broken.tar.gz"))
        cleanup.append(lambda: testbed.host("tb1").lib_path("images/broken.tar.gz").unlink())
        job["image"]["tarball"] = "/var/lib/orchestrate/images/broken.tar.gz"
        needle = "tb2: image tarball /var/lib/orchestrate/images/broken.tar.gz is corrupt or truncated"
    elif case == "sha256_mismatch":
        job["image"]["sha256"] = "0" * 64
        needle = f"sha256 is {testbed.image_sha256}, the job expects {'0' * 64}"
    elif case == "disk_too_small":
        # a sparse 10 TB "tarball": no daemon's disk can take it, and none is written
        p = testbed.host("tb2").lib_path("images/huge.tar.gz")
        cleanup.append(lambda: p.unlink(missing_ok=True))
        subprocess.run(["truncate", "-s", "10T", str(p)], check=True)
        shutil.copy(testbed.image_tarball, testbed.host("tb1").lib_path("images/huge.tar.gz"))
        cleanup.append(lambda: testbed.host("tb1").lib_path("images/huge.tar.gz").unlink())
        job["image"]["tarball"] = "/var/lib/orchestrate/images/huge.tar.gz"
        needle = "tb2: disk: "
    elif case == "daemon_stopped":
        testbed.stop_dockerd("tb2")
        cleanup.append(lambda: testbed.start_dockerd("tb2"))
        needle = "tb2: docker: daemon not reachable"
    elif case == "too_few_devices":
        job["device"] = "cuda"
        job["distributed"]["nproc_per_node"] = 2
        needle = "accelerators: 0 cuda device(s) found, nproc_per_node is 2"
    else:
        listener = subprocess.Popen(
            ["ip", "netns", "exec", testbed.host("tb1").netns, sys.executable, "-c",
             "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('10.213.0.11', 29600)); s.listen(); print('ok', flush=True); time.sleep(300)"],
            stdout=subprocess.PIPE, text=True)
        assert listener.stdout.readline().strip() == "ok"
        cleanup.append(lambda: (listener.kill(), listener.wait()))
        needle = "tb1: master port: 29600 already in use on the master"
    try:
        res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    finally:
        for undo in reversed(cleanup):
            undo()
    assert res.rc == 1, res
    assert needle in res.err, res
    assert "Traceback" not in res.all
    no_containers_of_job(testbed, name)
    # no partial files: nothing but the tarballs the testbed put there
    for h in ("tb1", "tb2"):
        leftovers = [p for p in testbed.host(h).lib_path("images").iterdir() if p.name != "testbed-cpu.tar.gz"]
        assert leftovers == [], leftovers


def test_check_prints_the_table(testbed, runs):
    res = orchestrate("check", "jobs/testbed_2x2.yaml", runs=runs)
    assert res.rc == 0, res
    for column in ("ssh", "docker", "disk", "route to master", "master port", "reach master"):
        assert column in res.out
    assert "10.213.0.11 via eth0" in res.out  # the interface facing the master, on both hosts
    assert "FAIL" not in res.out


def test_skip_preflight_is_a_warning(testbed, runs, tmp_path):
    res = orchestrate("up", str(write_job(tmp_path, base_job("skipcheck", hosts=["tb1"]))), "--skip-preflight", runs=runs)
    assert res.rc == 0, res
    assert "warning: --skip-preflight" in res.err
