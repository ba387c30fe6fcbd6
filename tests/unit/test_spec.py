"""The job file: what a user writes, and the one-line errors they get when it is wrong."""
import textwrap

import pytest

from orchestrator.errors import SpecError
from orchestrator.spec import load_job, parse_job

BASE = """\
name: demo
hosts: [tb1, tb2]
image: {name: "img:1"}
command: [python, -m, trainer.train]
"""


def err(text: str, **kw) -> str:
    with pytest.raises(SpecError) as e:
        parse_job(textwrap.dedent(text), "jobs/x.yaml", environ=kw.get("env", {}))
    return str(e.value)


def test_defaults_and_master():
    spec = parse_job(BASE, environ={})
    assert spec.master_addr == "tb1"
    assert spec.container.network == "host" and spec.container.ipc == "host"
    assert spec.container.privileged is False
    assert spec.distributed.launcher == "torchrun"
    assert spec.ssh.host_key_policy == "reject"
    assert spec.world_size == 2


@pytest.mark.parametrize("text,expected", [
    (BASE + "contianer: {}\n", "jobs/x.yaml:5 contianer: unknown key 'contianer'; did you mean 'container'?"),
    (BASE + "container:\n  shm_sise: 1g\n", "jobs/x.yaml:6 container.shm_sise: unknown key"),
    (BASE.replace("[tb1, tb2]", "\n  - tb1\n  - tb2\n  - tb1"), "jobs/x.yaml:5 hosts[2]: duplicate host 'tb1'"),
    (BASE.replace("[tb1, tb2]", "\n  - tb1\n  - 'a;b'"), "jobs/x.yaml:4 hosts[1]: 'a;b' is not [user@]address[:port]"),
    (BASE.replace("[tb1, tb2]", "[tb1, 'tb2:70000']"), "hosts[1]: port 70000 out of range"),
    (BASE + "distributed:\n  nproc_per_node: 0\n", "jobs/x.yaml:6 distributed.nproc_per_node: Input should be greater than or equal to 1"),
    (BASE + "distributed:\n  master_port: 99999\n", "jobs/x.yaml:6 distributed.master_port:"),
    (BASE + "distributed:\n  nproc_per_node: two\n", "distributed.nproc_per_node: Input should be a valid integer"),
    (BASE + "ssh:\n  host_key_policy: auto-add\n", "ssh.host_key_policy: Input should be 'reject' or 'accept-new'"),
    (BASE.replace("name: demo", "name: ../etc"), "jobs/x.yaml:1 name: '../etc'"),
    (BASE + "container:\n  volumes:\n    - /data:/data\n    - 'rel/path:/x'\n", "jobs/x.yaml:8 container.volumes[1]"),
    (BASE + "container:\n  env: {NODE_RANK: '3'}\n", "NODE_RANK is set by orchestrate"),
    (BASE + "container:\n  env: {A: '${NOT_SET}'}\n", "jobs/x.yaml:6 container.env.A: ${NOT_SET} is not set"),
    (BASE + "container:\n  devices: [/tmp/x]\n", "container.devices[0]"),
    ("name: demo\nhosts: [a]\ncommand: [x]\n", "jobs/x.yaml:1 image: runtime: docker needs an image"),
    ("name: demo\nhosts: [a\n", "jobs/x.yaml:3: not valid YAML"),
    ("name: demo\nname: again\n", "jobs/x.yaml:2 name: duplicate key"),
    ("- a\n- b\n", "jobs/x.yaml:1: the job file must be a mapping"),
    (BASE.replace("command: [python, -m, trainer.train]", "command: python train.py"), "jobs/x.yaml:4 command: Input should be a valid list"),
    (BASE + "runtime: process\n", "runtime: process runs nodes as local processes; it needs transport: local"),
])
def test_errors_name_file_line_and_key(text, expected):
    assert expected in err(text)


def test_error_is_one_line():
    message = err(BASE + "container:\n  shm_size: lots\n")
    assert "\n" not in message and message.startswith("jobs/x.yaml:6 container.shm_size:")


def test_interpolation_and_job_dir(tmp_path):
    job = tmp_path / "jobs" / "j.yaml"
    job.parent.mkdir()
    job.write_text(BASE + "container:\n  volumes: ['${JOB_DIR}/..:/src:ro']\n  env: {A: '${X:-dflt}', B: '$$HOME', C: '$(touch /tmp/pwned)'}\n")
    spec = load_job(job, environ={})
    assert str(spec.container.volumes[0]) == f"{tmp_path}:/src:ro"
    assert spec.container.env == {"A": "dflt", "B": "$HOME", "C": "$(touch /tmp/pwned)"}


def test_env_numbers_become_strings():
    spec = parse_job(BASE + "container:\n  env: {OMP_NUM_THREADS: 4, FLAG: true}\n", environ={})
    assert spec.container.env == {"OMP_NUM_THREADS": "4", "FLAG": "true"}


def test_missing_file():
    with pytest.raises(SpecError, match="nope.yaml: no such job file"):
        load_job("nope.yaml")


def test_shipped_jobs_validate():
    for name in ("seresnet_2x16", "testbed_2x2", "local_cpu"):
        spec = load_job(f"jobs/{name}.yaml", environ={"PATH": "/usr/bin"})
        assert spec.command
    seed = load_job("jobs/seresnet_2x16.yaml", environ={})
    assert (seed.nnodes, seed.distributed.nproc_per_node, seed.device) == (2, 8, "mlu")
    assert seed.container.shm_size == "100g" and seed.container.devices == "auto"
