"""The plan is pure data: names, labels, env and argv per node; --dry-run prints it as docker commands."""
import json
import os
import shlex
from dataclasses import asdict
from pathlib import Path

from orchestrator.plan import HostFacts, make_plan, render_dry_run
from orchestrator.spec import load_job, parse_job

GOLDEN = Path(__file__).parent / "golden"
RUN = "20261204-120000-abcd"


def plan_as_json(plan) -> str:
    nodes = []
    for n in plan.nodes:
        d = asdict(n)
        d["host"] = n.host.text
        nodes.append(d)
    return json.dumps({"run_id": plan.run_id, "master": [plan.master_addr, plan.master_port],
                       "warnings": plan.warnings, "nodes": nodes}, indent=1, sort_keys=True) + "\n"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":  # after an intended change: regenerate, review, commit
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; if intended, rerun with UPDATE_GOLDEN=1 and review the diff"


def test_seed_job_golden():
    spec = load_job("jobs/seresnet_2x16.yaml", environ={})
    facts = {"mlu-master": HostFacts(ifname="ib0", devices=("/dev/cambricon_dev0", "/dev/cambricon_ctl")),
             "mlu-slave": HostFacts(ifname="eth1", devices=("/dev/cambricon_dev0", "/dev/cambricon_ctl"))}
    plan = make_plan(spec, RUN, facts=facts, master_addr="192.0.2.10")
    check_golden("seresnet_2x16.plan.json", plan_as_json(plan))
    check_golden("seresnet_2x16.dryrun.txt", render_dry_run(plan))


def test_ranks_names_labels_env():
    spec = parse_job("""
name: j
hosts: [a, b, c]
image: {name: img}
distributed: {nproc_per_node: 4, master_port: 29999}
command: [python, train.py, '--rank={node_rank}', '{literal}']
""", environ={})
    plan = make_plan(spec, RUN)
    assert [n.rank for n in plan.nodes] == [0, 1, 2]
    n = plan.nodes[2]
    assert n.container_name == f"j-{RUN}-node2"
    assert n.labels == {"orchestrate.run": RUN, "orchestrate.job": "j", "orchestrate.rank": "2",
                        "orchestrate.attempt": "0", "orchestrate.host": "c"}
    for key, value in {"NODE_RANK": "2", "NNODES": "3", "NPROC_PER_NODE": "4", "MASTER_ADDR": "a",
                       "MASTER_PORT": "29999", "WORLD_SIZE": "12"}.items():
        assert n.env[key] == value
    assert n.argv == ["torchrun", "--nnodes=3", "--nproc_per_node=4", "--node_rank=2", "--master_addr=a",
                      "--master_port=29999", "--no_python", "python", "train.py", "--rank=2", "{literal}"]


def test_torchrun_script_and_module_forms():
    from orchestrator.plan import torchrun_argv

    assert torchrun_argv(["train.py", "-x"], 1, 1, 0, "a", 1)[-3:] == ["--master_port=1", "train.py", "-x"]
    assert torchrun_argv(["-m", "trainer.train"], 1, 1, 0, "a", 1)[-2:] == ["-m", "trainer.train"]


def test_launcher_none_runs_command_as_is_with_placeholders():
    spec = parse_job("""
name: j
hosts: [m, s]
image: {name: img}
distributed: {launcher: none, master_addr: 10.0.0.5}
command: [bash, main-seresnet.sh, '--master_addr={master_addr}', '--node_rank={node_rank}', '--nnodes={nnodes}']
""", environ={})
    plan = make_plan(spec, RUN)
    assert plan.nodes[1].argv == ["bash", "main-seresnet.sh", "--master_addr=10.0.0.5", "--node_rank=1", "--nnodes=2"]


def test_hostile_values_stay_literal_in_argv_and_quoted_in_setup():
    spec = parse_job("""
name: j
hosts: [h]
image: {name: img}
container: {env: {EVIL: '$(touch /tmp/pwned)'}, volumes: ['/data;rm -rf /:/d']}
setup: ['echo {master_addr}']
command: [python, x.py, '$(touch /tmp/pwned)', '; reboot']
""", environ={})
    node = make_plan(spec, RUN).nodes[0]
    # argv is passed to the container as "$@": never parsed by a shell
    assert node.argv[-2:] == ["$(touch /tmp/pwned)", "; reboot"]
    assert node.entrypoint[:2] == ["sh", "-c"] and "$(touch" not in node.entrypoint[2]
    assert node.env["EVIL"] == "$(touch /tmp/pwned)"
    # the dry run is paste-safe: shell-split gives back exactly the argv
    text = render_dry_run(make_plan(spec, RUN))
    run_line = next(ln for ln in text.split("\n'") if "orchestrate torchrun" in ln or ln.startswith(" orchestrate"))
    assert shlex.split(run_line)[-2:] == ["$(touch /tmp/pwned)", "; reboot"]


def test_devices_auto_and_privileged_warning():
    spec = parse_job("""
name: j
hosts: [h]
image: {name: img}
device: mlu
container: {devices: auto, privileged: true}
command: [x]
""", environ={})
    plan = make_plan(spec, RUN, facts={"h": HostFacts(devices=("/dev/cambricon_dev0",), ifname="eth0")})
    assert plan.nodes[0].devices == ["/dev/cambricon_dev0:/dev/cambricon_dev0:rwm"]
    assert plan.nodes[0].env["GLOO_SOCKET_IFNAME"] == "eth0"
    assert any("privileged" in w and "devices" in w for w in plan.warnings)


def test_user_ifname_wins_over_preflight():
    spec = parse_job("name: j\nhosts: [h]\nimage: {name: i}\ncontainer: {env: {GLOO_SOCKET_IFNAME: ib0}}\n"
                     "command: [x]\n", environ={})
    plan = make_plan(spec, RUN, facts={"h": HostFacts(ifname="eth0")})
    assert plan.nodes[0].env["GLOO_SOCKET_IFNAME"] == "ib0"
    assert plan.nodes[0].env["NCCL_SOCKET_IFNAME"] == "eth0"


def test_secret_values_never_in_plan():
    spec = parse_job("name: j\nhosts: [h]\nimage: {name: i}\ncontainer: {secret_env: [TOKEN]}\ncommand: [x]\n",
                     environ={})
    node = make_plan(spec, RUN).nodes[0]
    assert "TOKEN" not in node.env
    assert node.secret_file == f"/var/lib/orchestrate/runs/{RUN}/node0/secret.env"
    assert any(m.target == "/run/orchestrate/secret.env" and m.read_only for m in node.mounts)
