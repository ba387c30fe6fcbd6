"""The fault suite: fail fast, tear down everything, lose no log, leak no secret. Real hosts, real daemons.

Every test ends with the two invariants: no container labelled with the run on any host, and every node's
log under runs/<run_id>/logs/ up to the moment of failure.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from itest_helpers import (assert_nothing_left, base_job, containers_of, only_run, orchestrate, run_record,
                           start_orchestrate, wait_for, write_job)


@pytest.fixture
def runs(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    return d


def logs_of(runs: Path, attempt: int = 0) -> dict[str, str]:
    d = only_run(runs) / "logs" / (f"attempt{attempt}" if attempt else "")
    return {p.name: p.read_text(errors="replace") for p in d.glob("*.log")}


def running_container(testbed, host: str, job: str):
    def find():
        for c in testbed.docker_client(host).containers.list(filters={"label": f"orchestrate.job={job}"}):
            return c
        return None
    return wait_for(find, f"a running container of {job} on {host}")


def read_until(proc: subprocess.Popen, needle: str, seen: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            return
    raise AssertionError(f"{needle!r} never appeared:\n{''.join(seen)[-3000:]}")


def finish(proc: subprocess.Popen, seen: list[str]) -> str:
    out, _ = proc.communicate(timeout=600)
    return "".join(seen) + (out or "")


# 1 ---------------------------------------------------------------------------------------------------------
def test_node_exit_3_stops_the_others_within_grace(testbed, runs, tmp_path):
    job = base_job("exit3", faults={"stop_grace": 3}, command=["sh", "-c",
        'echo "node $NODE_RANK up"; if [ "$NODE_RANK" = 1 ]; then sleep 3; echo "bad batch"; exit 3; fi; '
        'trap "" TERM; sleep 600'])  # node 0 ignores SIGTERM: the SIGKILL after stop_grace must come
    res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    assert res.rc == 1, res
    assert "node1 (tb2) exited with code 3" in res.err and "bad batch" in res.err  # names it, shows its last lines
    rec = run_record(runs)
    ended = {n["rank"]: datetime.fromisoformat(n["ended"]) for n in rec["nodes"]}
    # the stop is part of the behaviour: SIGTERM, then SIGKILL after stop_grace, not a 10-minute hang
    assert (ended[0] - ended[1]).total_seconds() <= 3 + 5
    assert rec["nodes"][0]["exit_code"] == 137
    assert_nothing_left(testbed, rec["run_id"])
    logs = logs_of(runs)
    assert "node 0 up" in logs["node0-tb1.log"] and "bad batch" in logs["node1-tb2.log"]


# 2 ---------------------------------------------------------------------------------------------------------
def test_container_killed_from_outside(testbed, runs, tmp_path):
    job = base_job("killed", command=["sh", "-c", 'echo "node $NODE_RANK up"; sleep 600'])
    proc = start_orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    seen: list[str] = []
    read_until(proc, "[node1 tb2] node 1 up", seen)
    running_container(testbed, "tb2", "killed").kill()
    out = finish(proc, seen)
    assert proc.returncode == 1, out
    assert "node1 (tb2) exited with code 137" in out
    rec = run_record(runs)
    assert_nothing_left(testbed, rec["run_id"])
    assert "node 0 up" in logs_of(runs)["node0-tb1.log"]


# 3 ---------------------------------------------------------------------------------------------------------
def _kill_sshd_sessions(testbed, host: str) -> None:
    """Stop the host's sshd and the sessions it forked: the host can no longer be reached over ssh."""
    testbed.stop_sshd(host)
    ns = f"o{host}"  # tbN -> netns otbN
    pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_sshd_stopped_mid_run_is_a_lost_host(testbed, runs, tmp_path):
    job = base_job("lost", faults={"lost_host_timeout": 4, "stop_grace": 2},
                   command=["sh", "-c", 'echo "node $NODE_RANK up"; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 1; done'])
    proc = start_orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    seen: list[str] = []
    try:
        read_until(proc, "[node1 tb2] tick 2", seen)
        _kill_sshd_sessions(testbed, "tb2")
        out = finish(proc, seen)
    finally:
        testbed.start_sshd("tb2")
    assert proc.returncode == 1, out
    assert "node1 (tb2) host lost" in out
    assert "orchestrate down" in out  # says what may be left and how to remove it
    rec = run_record(runs)
    assert rec["nodes"][1]["lost"] is True
    assert not containers_of(testbed, rec["run_id"])["tb1"]
    # the host is back: `down` removes what was left there and keeps that node's log up to now
    down = orchestrate("down", rec["run_id"], runs=runs)
    assert down.rc == 0, down
    assert_nothing_left(testbed, rec["run_id"])
    logs = logs_of(runs)
    assert "tick 2" in logs["node1-tb2.log"] and "node 0 up" in logs["node0-tb1.log"]


# 4 ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", ["image load", "start", "training"])
def test_ctrl_c_at_any_phase_removes_everything(testbed, runs, tmp_path, phase):
    if phase == "image load":  # the image must be missing for a load to happen
        for h in ("tb1", "tb2"):
            client = testbed.docker_client(h)
            for img in client.images.list(name="orchestrate/testbed-cpu"):
                client.images.remove(img.id, force=True)
    job = base_job(f"sigint-{phase.replace(' ', '-')}", command=["sh", "-c", 'echo "node $NODE_RANK up"; sleep 600'])
    proc = start_orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    seen: list[str] = []
    needle = {"image load": "loading /var/lib/orchestrate/images", "start": "already present",
              "training": "[node1 tb2] node 1 up"}[phase]
    read_until(proc, needle, seen)
    proc.send_signal(signal.SIGINT)
    out = finish(proc, seen)
    assert proc.returncode == 130, out
    rec = run_record(runs)
    assert rec["status"] == "stopped"
    assert_nothing_left(testbed, rec["run_id"])
    if phase == "training":
        logs = logs_of(runs)
        assert "node 0 up" in logs["node0-tb1.log"] and "node 1 up" in logs["node1-tb2.log"]


def test_second_ctrl_c_stops_waiting_and_says_what_is_left(testbed, runs, tmp_path):
    job = base_job("sigint-twice", faults={"stop_grace": 20},
                   command=["sh", "-c", 'trap "" TERM; echo "node $NODE_RANK up"; sleep 600'])
    job_file = write_job(tmp_path, job)
    proc = start_orchestrate("up", str(job_file), runs=runs)
    seen: list[str] = []
    read_until(proc, "[node1 tb2] node 1 up", seen)
    proc.send_signal(signal.SIGINT)
    read_until(proc, "interrupted: stopping and removing", seen)
    proc.send_signal(signal.SIGINT)  # the nodes ignore SIGTERM: the first stop is still waiting out its grace
    out = finish(proc, seen)
    assert proc.returncode == 130, out
    rid = run_record(runs)["run_id"]
    assert f"may be left: remove them with `orchestrate down {rid}`" in out
    down = orchestrate("down", rid, runs=runs)
    assert down.rc == 0, down
    assert_nothing_left(testbed, rid)
    logs = logs_of(runs)
    assert "node 0 up" in logs["node0-tb1.log"] and "node 1 up" in logs["node1-tb2.log"]


def test_detach_ctrl_c_only_detaches(testbed, runs, tmp_path):
    job = base_job("detach-int", command=["sh", "-c", 'echo "node $NODE_RANK up"; sleep 600'])
    res = orchestrate("up", str(write_job(tmp_path, job)), "--detach", runs=runs)
    assert res.rc == 0
    rid = run_record(runs)["run_id"]
    follow = start_orchestrate("logs", rid, "--follow", runs=runs)
    seen: list[str] = []
    read_until(follow, "node 1 up", seen)
    follow.send_signal(signal.SIGINT)
    follow.communicate(timeout=120)
    assert {h: len(v) for h, v in containers_of(testbed, rid).items() if v} == {"tb1": 1, "tb2": 1}
    assert orchestrate("down", rid, runs=runs).rc == 0
    assert_nothing_left(testbed, rid)


# 5 ---------------------------------------------------------------------------------------------------------
def test_controller_killed_then_down_from_a_new_shell_without_runs_dir(testbed, runs, tmp_path):
    job_file = write_job(tmp_path, base_job("orphan", command=["sh", "-c", 'echo "node $NODE_RANK up"; sleep 600']))
    proc = start_orchestrate("up", str(job_file), runs=runs)
    seen: list[str] = []
    read_until(proc, "[node1 tb2] node 1 up", seen)
    proc.kill()  # kill -9: no cleanup of any kind
    proc.communicate(timeout=60)
    rid = run_record(runs)["run_id"]
    shutil.rmtree(runs)
    runs.mkdir()
    st = orchestrate("status", "--job", str(job_file), "--json", runs=runs)
    assert st.rc == 0, st
    found = json.loads(st.out)["nodes"]
    assert {(n["run_id"], n["host"], n["state"]) for n in found} >= {(rid, "tb1", "running"), (rid, "tb2", "running")}
    down = orchestrate("down", rid, "--job", str(job_file), runs=runs)
    assert down.rc == 0, down
    assert_nothing_left(testbed, rid)
    # their logs were saved on the way out, even with runs/ gone
    assert "node 1 up" in (runs / rid / "logs" / "node1-tb2.log").read_text()


# 6 ---------------------------------------------------------------------------------------------------------
def test_watchdog_fires_on_a_node_that_hangs(testbed, runs, tmp_path):
    job = base_job("hang", faults={"stall_timeout": 6, "stop_grace": 2}, command=["sh", "-c",
        'echo "node $NODE_RANK up"; if [ "$NODE_RANK" = 1 ]; then sleep 100000; fi; '
        'while true; do echo alive; sleep 1; done'])
    res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    assert res.rc == 1, res
    assert "watchdog: node1 (tb2) no output for 6s (faults.stall_timeout)" in res.err
    rec = run_record(runs)
    assert_nothing_left(testbed, rec["run_id"])
    assert "node 1 up" in logs_of(runs)["node1-tb2.log"]


def test_watchdog_rendezvous_stage_names_the_silent_nodes(testbed, runs, tmp_path):
    job = base_job("rdzv", faults={"rendezvous_timeout": 4, "stop_grace": 1}, command=["sh", "-c",
        'if [ "$NODE_RANK" = 0 ]; then echo "[orchestrate] rendezvous"; fi; sleep 600'])
    res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    assert res.rc == 1, res
    assert "watchdog: node1 (tb2) did not report rendezvous within 4s" in res.err
    assert "node0 (tb1) did not" not in res.err
    assert_nothing_left(testbed, run_record(runs)["run_id"])


# 7 ---------------------------------------------------------------------------------------------------------
def test_restart_policy_succeeds_in_attempt_2(testbed, runs, tmp_path):
    job = base_job("restart", faults={"max_restarts": 1, "stop_grace": 1}, command=["sh", "-c",
        'echo "attempt $ORCHESTRATE_ATTEMPT node $NODE_RANK"; '
        'if [ "$NODE_RANK" = 1 ] && [ ! -e /orchestrate/out/failed-once ]; then touch /orchestrate/out/failed-once; exit 4; fi; '
        'sleep 2; echo done'])
    res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    assert res.rc == 0, res
    rec = run_record(runs)
    assert rec["status"] == "succeeded" and rec["attempt"] == 1
    assert "attempt 0 node 1" in logs_of(runs, 0)["node1-tb2.log"]
    assert "attempt 1 node 1" in logs_of(runs, 1)["node1-tb2.log"] and "done" in logs_of(runs, 1)["node0-tb1.log"]
    assert_nothing_left(testbed, rec["run_id"])


# 8 ---------------------------------------------------------------------------------------------------------
def test_hostile_values_are_never_executed(testbed, runs, tmp_path):
    for h in ("tb1", "tb2"):
        testbed.exec(h, ["rm", "-f", "/tmp/pwned", "/var/lib/orchestrate/pwned"])
    odd_dir = tmp_path / "data;touch $HOME"
    odd_dir.mkdir()
    (odd_dir / "f.txt").write_text("literal path ok\n")
    job = base_job("hostile", container={"env": {"EVIL": "$(touch /tmp/pwned)`touch /tmp/pwned`"},
                                         "volumes": [f"{odd_dir}:/data:ro"]},
                   setup=["echo setup on {master_addr}"],
                   command=["sh", "-c", 'echo "EVIL=[$EVIL]"; echo "$1"; cat /data/f.txt; test ! -e /tmp/pwned',
                            "x", "$(touch /tmp/pwned); touch /var/lib/orchestrate/pwned"])
    res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    assert res.rc == 0, res
    assert "EVIL=[$(touch /tmp/pwned)`touch /tmp/pwned`]" in res.out
    assert "$(touch /tmp/pwned); touch /var/lib/orchestrate/pwned" in res.out and "literal path ok" in res.out
    for h in ("tb1", "tb2"):
        assert testbed.exec(h, ["test", "-e", "/var/lib/orchestrate/pwned"], check=False).returncode != 0
    assert not Path("/tmp/pwned").exists()
    # names and hosts that could escape are refused before anything starts
    for field, value, needle in [("name", "../up", "name: '../up'"), ("hosts", ["tb1", "a;b"], "hosts[1]: 'a;b'")]:
        bad = base_job("x")
        bad[field] = value
        r = orchestrate("up", str(write_job(tmp_path, bad, "bad.yaml")), runs=runs)
        assert r.rc == 2 and needle in r.err
    assert_nothing_left(testbed, run_record(runs)["run_id"])


# 10 --------------------------------------------------------------------------------------------------------
def test_secret_reaches_the_container_and_nothing_else(testbed, runs, tmp_path):
    secret = "s3cr3t-" + os.urandom(6).hex()
    job = base_job("secret", hosts=["tb1", "tb2"], container={"secret_env": ["API_TOKEN"]},
                   command=["sh", "-c", 'echo "len=${#API_TOKEN}"; '
                            'echo "leak attempt: $API_TOKEN"; sleep 600'])
    job_file = write_job(tmp_path, job)
    env = {"API_TOKEN": secret}
    res = orchestrate("up", str(job_file), "--detach", runs=runs, env=env)
    assert res.rc == 0, res
    rid = run_record(runs)["run_id"]
    try:
        wait_for(lambda: "len=" in orchestrate("logs", rid, runs=runs, env=env).out, "the node's first line")
        printed = [res.all]
        logs = orchestrate("logs", rid, runs=runs, env=env)
        printed.append(logs.all)
        assert f"len={len(secret)}" in logs.out  # it reached the process, with its exact value
        assert "leak attempt: ***" in logs.out
        for h in ("tb1", "tb2"):
            c = containers_of(testbed, rid)[h][0]
            assert secret not in json.dumps(c.attrs)  # docker inspect: not in Env, Cmd, Args, Mounts, labels
            secret_file = c.attrs["Mounts"]
            assert any(m["Destination"] == "/run/orchestrate/secret.env" for m in secret_file)
        st = orchestrate("status", rid, runs=runs, env=env)
        printed.append(st.all)
        dry = orchestrate("up", str(job_file), "--dry-run", runs=runs, env=env)
        printed.append(dry.all)
        down = orchestrate("down", rid, runs=runs, env=env)
        printed.append(down.all)
        assert_nothing_left(testbed, rid)
    finally:
        orchestrate("down", rid, runs=runs, env=env)
    for text in printed:
        assert secret not in text
    for p in only_run(runs).rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
    # the 0600 file on the host is gone with the run
    for h in ("tb1", "tb2"):
        assert not list(Path(testbed.host(h).lib_path("runs")).glob(f"{rid}/node*/secret.env"))
