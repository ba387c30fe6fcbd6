"""The CLI as a user meets it: instant help, one-line errors with the right exit codes, no traceback."""
import os
import subprocess
import sys

import pytest

PY = sys.executable


def orchestrate(*args, env=None, cwd=None, drop=()):
    e = dict(os.environ)
    for name in ("ORCHESTRATE_DEBUG", *drop):
        e.pop(name, None)
    e.update(env or {})
    return subprocess.run([PY, "-m", "orchestrator.cli", *args], capture_output=True, text=True, env=e,
                          cwd=cwd, timeout=120)


def test_help_does_not_import_torch_timm_or_matplotlib():
    code = ("import sys; from orchestrator.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'matplotlib', 'numpy') if m in sys.modules))")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "Commands:" in out.stdout and "up" in out.stdout


@pytest.mark.parametrize("yaml_text,needle", [
    ("name: x\nhosts: [a]\ncommand: [x]\nimage: {name: i}\ncontianer: {}\n", "x.yaml:5 contianer: unknown key"),
    ("name: x\nhosts: [a, a]\ncommand: [x]\nimage: {name: i}\n", "x.yaml:2 hosts[1]: duplicate host"),
    ("name: x\nhosts: [a\n", "x.yaml:3: not valid YAML"),
])
def test_spec_errors_exit_2_one_line_no_traceback(tmp_path, yaml_text, needle):
    job = tmp_path / "x.yaml"
    job.write_text(yaml_text)
    out = orchestrate("up", str(job))
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_debug_shows_traceback(tmp_path):
    job = tmp_path / "x.yaml"
    job.write_text("name: x\nhosts: [a, a]\ncommand: [x]\nimage: {name: i}\n")
    out = orchestrate("up", str(job), env={"ORCHESTRATE_DEBUG": "1"})
    assert "Traceback" in out.stderr and "SpecError" in out.stderr


def test_dry_run_prints_paste_able_commands_and_starts_nothing(tmp_path):
    out = orchestrate("up", "jobs/seresnet_2x16.yaml", "--dry-run", env={"ORCHESTRATE_RUNS_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("docker load -i /data/images/guochanhua-mlu-v1.18.0-torch1.13.1_20240409.tar.gz") == 2
    assert out.stdout.count("docker run -d --name seresnet-2x16-") == 2
    assert "--node_rank=0" in out.stdout and "--node_rank=1" in out.stdout
    assert "--shm-size=100g" in out.stdout and "--privileged" not in out.stdout
    assert not any(tmp_path.iterdir()), "a dry run must not create a run"


def test_dry_run_never_shows_secret_values(tmp_path):
    job = tmp_path / "s.yaml"
    job.write_text("name: s\nhosts: [h1]\nimage: {name: i}\ncontainer: {secret_env: [API_TOKEN]}\ncommand: [x]\n")
    out = orchestrate("up", str(job), "--dry-run", env={"API_TOKEN": "hunter2-very-secret"})
    assert out.returncode == 0
    assert "hunter2-very-secret" not in out.stdout + out.stderr
    assert "API_TOKEN" in out.stdout
    missing = orchestrate("up", str(job), "--dry-run", drop=("API_TOKEN",))
    assert missing.returncode == 2 and "API_TOKEN not set in the controller's environment" in missing.stderr


def test_unknown_run_id_exits_2(tmp_path):
    out = orchestrate("logs", "20990101-000000-0000", env={"ORCHESTRATE_RUNS_DIR": str(tmp_path)})
    assert out.returncode == 2 and "unknown run 20990101-000000-0000" in out.stderr
    out = orchestrate("down", "../../etc", env={"ORCHESTRATE_RUNS_DIR": str(tmp_path)})
    assert out.returncode == 2 and "is not a run id" in out.stderr


def test_privileged_warning_names_what_it_grants(tmp_path):
    job = tmp_path / "p.yaml"
    job.write_text("name: p\nhosts: [h1]\nimage: {name: i}\ncontainer: {privileged: true}\ncommand: [x]\n")
    out = orchestrate("up", str(job), "--dry-run")
    assert "warning: container.privileged: true gives every container all host devices" in out.stderr
