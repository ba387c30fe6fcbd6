"""Other ways in: a jump host, the local daemon, the in-container check, `image save`, and the report of a
real testbed run."""
from __future__ import annotations

import json
import os

import pytest

from itest_helpers import STATE, assert_nothing_left, base_job, only_run, orchestrate, run_record, write_job


@pytest.fixture
def runs(tmp_path):
    d = tmp_path / "runs"
    d.mkdir()
    return d


def test_proxyjump_through_another_host(testbed, runs, tmp_path):
    """tb2 reached through tb1 (ssh_config ProxyJump): both hops' host keys verified."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text((STATE / "ssh_config").read_text() + f"""
Host tb2-via-tb1
    HostName 10.213.0.12
    User root
    ProxyJump tb1
    IdentityFile {STATE / 'id_ed25519'}
""")
    job = base_job("jump", hosts=["tb1", "tb2-via-tb1"], command=["sh", "-c", "echo on $(hostname)"])
    job["ssh"]["config_file"] = str(cfg)
    res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs)
    assert res.rc == 0, res
    assert "[node1 10.213.0.12] on tb2" not in res.out  # the label is what the job file says
    assert "on tb2" in res.out and "on tb1" in res.out
    assert_nothing_left(testbed, run_record(runs)["run_id"])


def test_local_transport_uses_the_local_daemon(testbed, runs, tmp_path):
    """transport: local, runtime: docker: no ssh, the daemon of DOCKER_HOST."""
    tb1 = testbed.host("tb1")
    client = testbed.docker_client("tb1")
    if not client.images.list(name="orchestrate/testbed-cpu"):
        client.images.load(testbed.image_tarball.read_bytes())
    job = {"name": "localdocker", "hosts": ["localhost"], "transport": "local", "host_dir": str(tmp_path / "hostdir"),
           "image": {"name": "orchestrate/testbed-cpu:1"}, "distributed": {"launcher": "none"},
           "command": ["sh", "-c", "echo local daemon says hi; ls /orchestrate/out >/dev/null && echo out-mounted"]}
    res = orchestrate("up", str(write_job(tmp_path, job)), runs=runs, env={"DOCKER_HOST": tb1.docker_url})
    assert res.rc == 0, res
    assert "local daemon says hi" in res.out and "out-mounted" in res.out
    assert_nothing_left(testbed, run_record(runs)["run_id"])


def test_in_container_check_fails_fast_on_missing_devices(testbed, runs, tmp_path):
    """Preflight skipped: the container's own check still refuses to start the command without devices."""
    job = base_job("nodevices", hosts=["tb1"], device="cuda", command=["sh", "-c", "echo SHOULD-NOT-RUN"])
    job["distributed"]["nproc_per_node"] = 2
    res = orchestrate("up", str(write_job(tmp_path, job)), "--skip-preflight", runs=runs)
    assert res.rc == 1, res
    assert "in-container check failed: 0 cuda device(s) visible in the container, nproc_per_node is 2" in res.all
    assert "SHOULD-NOT-RUN" not in res.out
    assert run_record(runs)["nodes"][0]["exit_code"] == 97
    assert_nothing_left(testbed, run_record(runs)["run_id"])


def test_image_save_round_trip(testbed, tmp_path):
    client = testbed.docker_client("tb1")
    if not client.images.list(name="orchestrate/testbed-cpu"):
        client.images.load(testbed.image_tarball.read_bytes())
    image_id = client.images.get("orchestrate/testbed-cpu:1").id
    out = tmp_path / "saved.tar.gz"
    res = orchestrate("image", "save", "orchestrate/testbed-cpu:1", "-o", str(out), runs=tmp_path,
                      env={"DOCKER_HOST": testbed.host("tb1").docker_url})
    assert res.rc == 0, res
    from orchestrator.images import read_identity_local, sha256_local

    digest = sha256_local(str(out))
    assert (tmp_path / "saved.tar.gz.sha256").read_text().split()[0] == digest and digest in res.out
    assert read_identity_local(str(out)).id == image_id
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".save.")]


def test_report_of_a_real_testbed_run(testbed, runs, tmp_path):
    """up on the testbed, then the result sheet from that run's own metrics (and against itself: pass)."""
    res = orchestrate("up", "jobs/testbed_2x2.yaml", runs=runs)
    assert res.rc == 0, res
    rid = run_record(runs)["run_id"]
    summary = [json.loads(x) for x in (only_run(runs) / "metrics/node0-tb1/metrics-rank0.jsonl").read_text().splitlines()
               if '"summary"' in x][-1]
    rep = orchestrate("report", rid, "--baseline", "baselines/mlu370_2x8_seed.yaml", "--format", "json", runs=runs)
    assert rep.rc == 1, rep  # the synthetic CPU job has no accuracy: the verdict cannot pass
    doc = json.loads(rep.out)
    assert doc["result"]["img_s"] == pytest.approx(summary["img_s_mean"])
    assert doc["comparison"]["throughput_ratio"] == pytest.approx(summary["img_s_mean"] / 7016)
    assert doc["comparison"]["verdict"] != "pass"
    assert [n["host"] for n in doc["nodes"]] == ["tb1", "tb2"]
    assert sorted(r["rank"] for r in doc["ranks"]) == [0, 1, 2, 3]
    md = orchestrate("report", rid, "--baseline", "baselines/mlu370_2x8_seed.yaml", "--format", "md", "--lang", "zh", runs=runs)
    assert "环境配置" in md.out and "7016" in md.out and "tb2" in md.out
    html = tmp_path / "report.html"
    h = orchestrate("report", rid, "--format", "html", "-o", str(html), runs=runs)
    assert html.exists() and "data:image/png;base64," in html.read_text()
    assert h.rc in (0, 1)


def test_ssh_agent_authentication(testbed, runs, tmp_path):
    """No identity file anywhere: the key comes from a running ssh-agent (SSH_AUTH_SOCK)."""
    import subprocess

    sock = tmp_path / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(sock)], capture_output=True, text=True, check=True)
    pid = int(agent.stdout.split("SSH_AGENT_PID=")[1].split(";")[0])
    try:
        env = {"SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(testbed.identity_file)], env={**os.environ, **env}, check=True,
                       capture_output=True)
        cfg = tmp_path / "ssh_config"
        cfg.write_text("Host tb1\n    HostName 10.213.0.11\n    User root\n")
        job = base_job("agent", hosts=["tb1"], command=["sh", "-c", "echo via agent"])
        job["ssh"] = {"config_file": str(cfg), "known_hosts": str(testbed.known_hosts_path)}
        job_file = write_job(tmp_path, job)
        res = orchestrate("up", str(job_file), runs=runs, env={**env, "HOME": str(tmp_path)})
        assert res.rc == 0, res
        assert "via agent" in res.out
        # and without the agent the same job cannot log in: the agent is what authenticated
        no_agent = orchestrate("up", str(job_file), runs=runs, env={"SSH_AUTH_SOCK": "", "HOME": str(tmp_path)})
        assert no_agent.rc == 1 and "authentication failed" in no_agent.err, no_agent
    finally:
        os.kill(pid, 15)


def test_digits_across_the_testbed_and_the_verdict(testbed, runs):
    """Real data end to end: 2 hosts x 2 ranks learn the digits; the report judges that real top-1."""
    import subprocess
    import sys

    from itest_helpers import REPO

    data = REPO / ".data" / "digits"
    if not (data / "val").is_dir():
        subprocess.run([sys.executable, "-m", "trainer.digits", str(data)], check=True, cwd=REPO)
    res = orchestrate("up", "jobs/testbed_digits.yaml", runs=runs)
    assert res.rc == 0, res
    rid = run_record(runs)["run_id"]
    summary = [json.loads(x) for x in (only_run(runs) / "metrics/node0-tb1/metrics-rank0.jsonl").read_text().splitlines()
               if '"summary"' in x][-1]
    assert summary["world_size"] == 4 and summary["top1"] >= 0.9
    rel_err = abs(summary["top1"] - 1.0) / 1.0  # the seed's V100 row: acc=1.0
    strict = orchestrate("report", rid, "--baseline", "baselines/v100_2x8_seed.yaml", "--format", "json", runs=runs)
    doc = json.loads(strict.out)
    assert doc["result"]["top1"] == pytest.approx(summary["top1"])
    assert doc["comparison"]["acc_rel_err"] == pytest.approx(rel_err)
    assert doc["comparison"]["throughput_ratio"] == pytest.approx(summary["img_s_mean"] / 5788)
    assert (strict.rc, doc["comparison"]["verdict"]) == ((0, "pass") if rel_err <= 0.01 else (1, "fail"))
    loose = orchestrate("report", rid, "--baseline", "baselines/v100_2x8_seed.yaml", "--format", "json",
                        "--acc-tolerance", f"{rel_err + 0.005:.4f}", runs=runs)
    assert loose.rc == 0 and json.loads(loose.out)["comparison"]["verdict"] == "pass"
