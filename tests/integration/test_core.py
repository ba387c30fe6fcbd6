"""`orchestrate up | status | logs | down` on the testbed: real sshd, real dockerd per host, real torchrun."""
from __future__ import annotations

import json
import time

import pytest

from itest_helpers import (REPO, assert_nothing_left, base_job, containers_of, only_run, orchestrate, run_record,
                      wait_for, write_job)


@pytest.fixture
def runs(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    return d


def test_testbed_job_2x2_gloo_across_hosts(testbed, runs):
    """The shipped job: 2 hosts x 2 ranks of the trainer under torchrun, gloo across the namespaces."""
    res = orchestrate("up", "jobs/testbed_2x2.yaml", runs=runs)
    assert res.rc == 0, res
    rec = run_record(runs)
    run_id, run = rec["run_id"], only_run(runs)
    assert rec["status"] == "succeeded"
    assert [(n["rank"], n["host"], n["exit_code"]) for n in rec["nodes"]] == [(0, "tb1", 0), (1, "tb2", 0)]
    # every rank ran, on the host its node rank says: ranks 0-1 on tb1, 2-3 on tb2 (their metrics came back)
    assert sorted(p.name for p in (run / "metrics" / "node0-tb1").iterdir()) == ["metrics-rank0.jsonl", "metrics-rank1.jsonl"]
    assert sorted(p.name for p in (run / "metrics" / "node1-tb2").iterdir()) == ["metrics-rank2.jsonl", "metrics-rank3.jsonl"]
    summary = [json.loads(x) for x in (run / "metrics/node0-tb1/metrics-rank0.jsonl").read_text().splitlines()][-1]
    assert summary["type"] == "summary" and summary["world_size"] == 4 and summary["nnodes"] == 2
    # every node's log is on this machine, and the terminal showed node-prefixed lines
    assert (run / "logs" / "node0-tb1.log").stat().st_size > 0
    assert (run / "logs" / "node1-tb2.log").exists()
    assert "[node0 tb1] " in res.out and "img/s" in res.out
    # both nodes show that they train, and both passed the watchdog's stages
    assert "[node1 tb2] node 1: epoch 0 step" in res.out
    for node in ("[node0 tb1]", "[node1 tb2]"):
        assert f"{node} [orchestrate] rendezvous" in res.out and f"{node} [orchestrate] first-step" in res.out
    assert_nothing_left(testbed, run_id)
    # status and logs from a later shell
    st = orchestrate("status", run_id, "--json", runs=runs)
    assert st.rc == 0, st
    status = json.loads(st.out)
    assert status["status"] == "succeeded"
    assert {(n["rank"], n["state"]) for n in status["nodes"]} == {(0, "removed"), (1, "removed")}
    logs = orchestrate("logs", run_id, "--node", "0", runs=runs)
    assert logs.rc == 0 and "[node0 tb1] " in logs.out and "[node1" not in logs.out
    down = orchestrate("down", run_id, runs=runs)
    assert down.rc == 0 and "nothing left" in down.err


def test_detach_status_logs_down_from_another_shell(testbed, runs, tmp_path):
    job = write_job(tmp_path, base_job("detached", command=["sh", "-c", "echo started $NODE_RANK of $NNODES; sleep 600"]))
    res = orchestrate("up", str(job), "--detach", runs=runs)
    assert res.rc == 0, res
    run_id = run_record(runs)["run_id"]
    try:
        on_hosts = containers_of(testbed, run_id)
        assert {h: len(v) for h, v in on_hosts.items() if v} == {"tb1": 1, "tb2": 1}
        c = on_hosts["tb1"][0]
        assert c.labels["orchestrate.rank"] == "0" and c.labels["orchestrate.job"] == "detached"
        assert c.name == f"detached-{run_id}-node0"
        assert c.attrs["HostConfig"]["NetworkMode"] == "host" and c.attrs["HostConfig"]["IpcMode"] == "host"
        assert c.attrs["HostConfig"]["Init"] is True

        st = json.loads(orchestrate("status", run_id, "--json", runs=runs).out)
        assert {(n["rank"], n["host"], n["state"]) for n in st["nodes"]} == {(0, "tb1", "running"), (1, "tb2", "running")}
        wait_for(lambda: "started 1 of 2" in orchestrate("logs", run_id, runs=runs).out, "node 1's first line")
        logs = orchestrate("logs", run_id, runs=runs)
        assert "[node0 tb1] started 0 of 2" in logs.out and "[node1 tb2] started 1 of 2" in logs.out
    finally:
        down = orchestrate("down", run_id, runs=runs)
    assert down.rc == 0, down
    assert_nothing_left(testbed, run_id)
    # the logs of the removed containers were kept
    assert "started 1 of 2" in (only_run(runs) / "logs" / "node1-tb2.log").read_text()
    again = orchestrate("down", run_id, runs=runs)
    assert again.rc == 0 and "nothing left" in again.err


def test_down_touches_only_its_own_run(testbed, runs, tmp_path):
    job = write_job(tmp_path, base_job("keepme", hosts=["tb1"], command=["sleep", "600"]))
    first = orchestrate("up", str(job), "--detach", runs=runs)
    assert first.rc == 0, first
    second = orchestrate("up", str(job), "--detach", runs=runs)
    assert second.rc == 0, second
    ids = sorted(p.name for p in runs.iterdir())
    try:
        assert orchestrate("down", ids[0], runs=runs).rc == 0
        assert_nothing_left(testbed, ids[0])
        assert len(containers_of(testbed, ids[1])["tb1"]) == 1
    finally:
        orchestrate("down", ids[1], runs=runs)
    assert_nothing_left(testbed, ids[1])


def test_second_up_loads_nothing(testbed, runs, tmp_path):
    for h in testbed:  # start from hosts without the image
        client = testbed.docker_client(h.name)
        for img in client.images.list(name="orchestrate/testbed-cpu"):
            client.images.remove(img.id, force=True)
    job = write_job(tmp_path, base_job("reload"))
    t0 = int(time.time())
    first = orchestrate("up", str(job), runs=runs)
    assert first.rc == 0, first
    assert first.err.count("loaded") == 2
    t1 = int(time.time()) + 1
    time.sleep(1.1)
    second = orchestrate("up", str(job), runs=runs)
    assert second.rc == 0, second
    assert second.err.count("already present") == 2
    t2 = int(time.time()) + 1
    for h in ("tb1", "tb2"):
        client = testbed.docker_client(h)
        loads_first = list(client.events(since=t0, until=t1, filters={"type": "image", "event": "load"}, decode=True))
        loads_second = list(client.events(since=t1, until=t2, filters={"type": "image", "event": "load"}, decode=True))
        assert len(loads_first) == 1 and loads_second == [], (h, loads_first, loads_second)


def test_failed_node_stops_the_others(testbed, runs, tmp_path):
    job = write_job(tmp_path, base_job("gang", command=[
        "sh", "-c", 'echo up $NODE_RANK; if [ "$NODE_RANK" = 1 ]; then sleep 2; echo dying; exit 3; fi; sleep 600']))
    res = orchestrate("up", str(job), runs=runs)
    assert res.rc == 1, res
    assert "node1 (tb2) exited with code 3" in res.err
    rec = run_record(runs)
    assert rec["status"] == "failed"
    by_rank = {n["rank"]: n for n in rec["nodes"]}
    assert by_rank[1]["exit_code"] == 3
    assert by_rank[0]["stopped_by_orchestrate"] is True
    assert_nothing_left(testbed, rec["run_id"])
    logs = only_run(runs) / "logs"
    assert "dying" in (logs / "node1-tb2.log").read_text()
    assert "up 0" in (logs / "node0-tb1.log").read_text()


@pytest.mark.parametrize("case", ["unreachable", "unknown_key", "changed_key", "missing_tarball", "bad_user"])
def test_bad_input_starts_nothing(testbed, runs, tmp_path, case):
    job = base_job(f"bad-{case.replace('_', '-')}")
    if case == "unreachable":
        job["hosts"] = ["tb1", "10.213.0.99"]
        job["ssh"]["connect_timeout"] = 2
        needle = "10.213.0.99: "
    elif case == "unknown_key":
        kh = tmp_path / "known_hosts"
        kh.write_text("")
        job["ssh"]["known_hosts"] = str(kh)
        needle = "host key not in"
    elif case == "changed_key":
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        out = []
        for ln in testbed.known_hosts_path.read_text().splitlines():
            names = ln.split()[0].split(",") if ln.strip() else []
            if {"tb2", "10.213.0.12", "[10.213.0.12]:22"} & set(names):
                ln = f"{ln.split()[0]} {other}"
            out.append(ln)
        kh = tmp_path / "known_hosts"
        kh.write_text("\n".join(out) + "\n")
        job["ssh"]["known_hosts"] = str(kh)
        needle = "tb2: HOST KEY CHANGED"
    elif case == "missing_tarball":
        job["image"]["tarball"] = "/var/lib/orchestrate/images/nope.tar.gz"
        needle = "image tarball /var/lib/orchestrate/images/nope.tar.gz not found on this host"
    else:
        job["hosts"] = ["tb1", "nobody@tb2"]
        needle = "tb2: authentication failed"
    res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    assert res.rc == 1, res
    assert needle in res.err, res
    assert "Traceback" not in res.all
    assert len([ln for ln in res.err.splitlines() if ln.startswith("error:")]) == 1
    if case == "changed_key":
        assert res.err.count("SHA256:") >= 2  # expected and offered fingerprints
    if case == "unknown_key":
        assert "SHA256:" in res.err
    for h, cs in containers_of(testbed).items():
        assert not [c for c in cs if c.labels.get("orchestrate.job") == job["name"]], (h, cs)


def test_accept_new_records_key_then_refuses_a_change(testbed, runs, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    job = base_job("acceptnew", hosts=["tb1"], ssh={"known_hosts": str(kh), "host_key_policy": "accept-new"})
    res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    assert res.rc == 0, res
    assert "10.213.0.11" in kh.read_text() or "tb1" in kh.read_text()
    key_type, key = kh.read_text().split()[1:3]
    assert key in testbed.known_hosts_path.read_text()


def test_repo_is_mounted_read_only(testbed, runs, tmp_path):
    job = base_job("readonly", hosts=["tb1"], command=["sh", "-c", f"touch {REPO}/x 2>&1 || echo read-only-ok"])
    res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    assert res.rc == 0 and "read-only-ok" in res.out, res
