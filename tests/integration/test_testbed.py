"""The testbed is real: separate hosts with their own sshd, dockerd, address and files.

If these fail, every other integration test proves nothing; they run first (file order).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_hosts_json_contract(testbed):
    assert len(testbed) >= 2
    for i, h in enumerate(testbed.hosts, start=1):
        assert (h.name, h.address, h.netns, h.ifname) == (f"tb{i}", f"10.213.0.{10 + i}", f"otb{i}", "eth0")
        assert Path(h.docker_sock).is_socket()
    for f in (testbed.ssh_config_path, testbed.known_hosts_path, testbed.identity_file, testbed.image_tarball):
        assert f.is_file(), f


def test_each_sshd_is_checked_against_known_hosts(testbed, tmp_path):
    import paramiko

    for h in testbed.hosts:
        client = testbed.ssh_client(h)  # RejectPolicy: an unknown or wrong key raises
        try:
            key = client.get_transport().get_remote_server_key()
            assert (key.get_name(), key.get_base64()) == tuple(h.host_key)
        finally:
            client.close()
    # The policy is really enforced: with tb2's key filed under tb1's address, tb1 is rejected.
    tb1, tb2 = testbed.hosts[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{tb1.address} {tb2.host_key[0]} {tb2.host_key[1]}\n")
    client = paramiko.SSHClient()
    client.load_host_keys(str(wrong))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(tb1.address, username="root", key_filename=str(testbed.identity_file),
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()


def test_docker_over_ssh_reaches_that_hosts_own_daemon(testbed):
    ids = {}
    for h in testbed.hosts:
        rc, out, err = testbed.ssh_run(h, "hostname; docker info --format '{{.ID}} {{.Name}}'")
        assert rc == 0, err
        hostname, info = out.split("\n", 1)
        daemon_id, name = info.split()
        assert hostname == name == h.name
        local = testbed.docker_client(h)
        try:
            assert local.info()["ID"] == daemon_id  # the socket the controller inspects is that daemon
        finally:
            local.close()
        ids[h.name] = daemon_id
    assert len(set(ids.values())) == len(ids), f"hosts share a daemon: {ids}"


def test_docker_sdk_over_ssh_with_paramiko(testbed, tmp_path, monkeypatch):
    """What TESTBED.md verified: the SDK's own paramiko transport (docker system dial-stdio on the host)."""
    import docker

    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(testbed.ssh_config_path, home / ".ssh" / "config")
    shutil.copy(testbed.known_hosts_path, home / ".ssh" / "known_hosts")
    monkeypatch.setenv("HOME", str(home))  # the SDK reads ~/.ssh/config and ~/.ssh/known_hosts
    for h in testbed.hosts[:2]:
        client = docker.DockerClient(base_url=f"ssh://root@{h.address}", use_ssh_client=False, timeout=30)
        try:
            assert client.info()["Name"] == h.name
        finally:
            client.close()


def test_var_lib_orchestrate_is_per_host(testbed):
    tb1, tb2 = testbed.hosts[:2]
    name = f"isolation-{uuid.uuid4().hex[:8]}"
    path = f"/var/lib/orchestrate/{name}"
    try:
        rc, _, err = testbed.ssh_run(tb1, f"echo {tb1.name} > {path}")
        assert rc == 0, err
        assert testbed.ssh_run(tb1, f"cat {path}")[1].strip() == tb1.name
        assert testbed.ssh_run(tb2, f"test -e {path}")[0] == 1
        assert tb1.lib_path(name).read_text().strip() == tb1.name
        assert not tb2.lib_path(name).exists()
        assert not Path(path).exists()  # nor on the controller
    finally:
        tb1.lib_path(name).unlink(missing_ok=True)


def test_image_tarball_on_every_host_and_no_image_loaded(testbed):
    want = testbed.image_sha256
    assert _sha256(testbed.image_tarball) == want
    inodes = set()
    for h in testbed.hosts:
        tarball = h.lib_path(testbed.host_image_path)
        assert tarball.is_file(), f"{h.name}: {tarball}"
        st = tarball.stat()
        assert st.st_nlink == 1, f"{h.name}: tarball is a hardlink"
        inodes.add(st.st_ino)
        rc, out, err = testbed.ssh_run(h, f"sha256sum {testbed.host_image_path}")
        assert rc == 0, err
        assert out.split()[0] == want
    assert len(inodes) == len(testbed.hosts)


def test_hosts_started_without_the_image(testbed):
    """`up` leaves every host image-less (tests of loading a missing image rely on it).

    Checked on what the hosts held when this session first used them: right after a
    fresh `up` (always so in CI) that is what `up` left. A testbed reused from an earlier
    session may hold what that session loaded; outside CI that is skipped, not failed."""
    start = testbed.at_session_start
    loaded = {name: s["images"] for name, s in start.items() if s["images"] or s["containers"]}
    if loaded and os.environ.get("CI") != "true":
        pytest.skip(f"testbed was used before this session: {loaded}")
    assert not loaded, f"hosts were not empty after `up`: {loaded}"


def test_hosts_reach_each_other_by_name_and_address(testbed):
    tb1, tb2 = testbed.hosts[:2]
    rc, out, err = testbed.ssh_run(
        tb1, f"ip -o -4 addr show dev {tb1.ifname}; getent hosts {tb2.name}; "
             f"timeout 3 bash -c 'exec 3<>/dev/tcp/{tb2.address}/22 && head -c 4 <&3'")
    assert rc == 0, err
    assert f"{tb1.address}/24" in out and tb2.address in out and out.rstrip().endswith("SSH-")
    # and the controller reaches them at their addresses (10.213.0.1 is the bridge)
    with socket.create_connection((tb2.address, 22), timeout=5) as s:
        assert s.recv(4) == b"SSH-"


@pytest.fixture
def image_on(testbed):
    """Load the image on the hosts a test names; afterwards remove it where this loaded it."""
    loaded = []

    def load(*names):
        for name in names:
            h = testbed.host(name)
            client = testbed.docker_client(h)
            try:
                if any(testbed.image_name in img.tags for img in client.images.list()):
                    continue
                with open(h.lib_path(testbed.host_image_path), "rb") as f:
                    client.images.load(f.read())
                loaded.append(h)
            finally:
                client.close()

    yield load
    for h in loaded:
        client = testbed.docker_client(h)
        try:
            client.images.remove(testbed.image_name)
        except Exception:  # still used by a container of another test: leave it
            pass
        finally:
            client.close()


def test_containers_run_with_init_and_see_their_hosts_files(testbed, image_on):
    tb1 = testbed.hosts[0]
    image_on(tb1.name)
    marker = f"marker-{uuid.uuid4().hex[:8]}"
    tb1.lib_path(marker).write_text("from tb1\n")
    client = testbed.docker_client(tb1)
    try:
        out = client.containers.run(
            testbed.image_name,
            ["sh", "-c", f"cat /data/{marker}; hostname; ps -o comm= -p 1; ip -o -4 addr show {tb1.ifname}"],
            init=True, network_mode="host", remove=True,
            volumes={"/var/lib/orchestrate": {"bind": "/data", "mode": "ro"}},
        ).decode()
    finally:
        client.close()
        tb1.lib_path(marker).unlink(missing_ok=True)
    lines = out.splitlines()
    assert lines[0] == "from tb1"  # the daemon resolved the volume in tb1's own view
    assert lines[1] == tb1.name
    assert lines[2] in ("docker-init", "tini", "tini-static")
    assert tb1.address in lines[3]


@pytest.mark.skipif(not (VENV / "bin" / "torchrun").exists(), reason="no torch in .venv")
def test_torchrun_gloo_across_two_hosts(testbed, image_on):
    """The venv, mounted read-only, runs torch in the image; 2 hosts x 2 ranks all-reduce over gloo."""
    tb1, tb2 = testbed.hosts[:2]
    image_on(tb1.name, tb2.name)
    containers = []
    try:
        for node_rank, h in enumerate((tb1, tb2)):
            client = testbed.docker_client(h)
            containers.append(client.containers.run(
                testbed.image_name,
                [str(VENV / "bin" / "torchrun"), "--nnodes", "2", "--nproc-per-node", "2",
                 "--node-rank", str(node_rank), "--master-addr", tb1.address, "--master-port", "29531",
                 str(REPO / "tests" / "testbed" / "gloo_smoke.py")],
                detach=True, init=True, network_mode="host", ipc_mode="host",
                environment={"GLOO_SOCKET_IFNAME": h.ifname, "OMP_NUM_THREADS": "1"},
                volumes={str(REPO): {"bind": str(REPO), "mode": "ro"}},
            ))
        results = [c.wait(timeout=180) for c in containers]
        logs = [c.logs().decode() for c in containers]
    finally:
        for c in containers:
            c.remove(force=True)
    assert [r["StatusCode"] for r in results] == [0, 0], logs
    # two ranks share a container's stdout: their lines may run together
    oks = sorted(re.findall(r"gloo-ok rank=(\d) world=4 host=(tb\d+) sum=10", "".join(logs)))
    assert oks == [("0", "tb1"), ("1", "tb1"), ("2", "tb2"), ("3", "tb2")], logs


def _refused(address: str) -> bool:
    try:
        socket.create_connection((address, 22), timeout=3).close()
        return False
    except ConnectionRefusedError:
        return True


def test_fault_verbs_stop_and_restart_daemons_in_the_same_host(testbed):
    h = testbed.hosts[-1]
    daemon_id = testbed.ssh_run(h, "docker info --format '{{.ID}}'")[1].strip()
    testbed.stop_sshd(h)
    try:
        assert testbed.pid(h, "sshd") is None
        assert _refused(h.address)
    finally:
        testbed.start_sshd(h)
    # the restarted sshd is back in the host's own namespaces
    rc, out, _ = testbed.ssh_run(h, "hostname; ls /var/lib/orchestrate/images")
    assert rc == 0 and out.split() == [h.name, "testbed-cpu.tar.gz"]

    testbed.stop_dockerd(h)
    try:
        assert testbed.pid(h, "dockerd") is None
        rc, _, err = testbed.ssh_run(h, "docker info")
        assert rc != 0 and "Cannot connect to the Docker daemon" in err
    finally:
        testbed.start_dockerd(h)
    assert testbed.ssh_run(h, "docker info --format '{{.ID}}'")[1].strip() == daemon_id

    testbed.net_down(h)
    try:
        with pytest.raises(OSError):
            socket.create_connection((h.address, 22), timeout=2).close()
    finally:
        testbed.net_up(h)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((h.address, 22), timeout=2).close()
            break
        except OSError:
            time.sleep(0.2)
    assert testbed.ssh_run(h, "true")[0] == 0
    assert testbed.status()


def test_exec_runs_in_the_hosts_namespaces(testbed):
    h = testbed.hosts[0]
    proc = testbed.exec(h, ["sh", "-c", "hostname; echo $DOCKER_HOST; ls /var/lib/orchestrate/images"])
    assert proc.stdout.split() == [h.name, h.docker_url, "testbed-cpu.tar.gz"]
    assert os.uname().nodename != h.name
