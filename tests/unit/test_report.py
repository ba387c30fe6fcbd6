"""orchestrate report: the seed's table computed from a run's metrics, verdict, exit codes, bad input."""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_fakerun import make_group, make_run, set_summary  # noqa: E402

from orchestrator.baselines import resolve_baseline  # noqa: E402
from orchestrator.errors import ReportError, UsageError  # noqa: E402
from orchestrator.report import build_report  # noqa: E402
from orchestrator.report_metrics import percentile  # noqa: E402
from orchestrator.report_schema import REPORT_SCHEMA, validate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
V100 = str(REPO / "baselines" / "v100_2x8_seed.yaml")
TIMM = str(REPO / "baselines" / "timm_seresnet50_ra2.yaml")


def invoke(*args):
    return CliRunner().invoke(make_group(), list(args), catch_exceptions=False)


def seed_run(root, **kw):
    """The seed's MLU370 row: 2 hosts x 8 cards, acc=1.0, 7016 img/s."""
    fake = make_run(root, hosts=("mlu-a", "mlu-b"), nproc=8, device="mlu", top1=[0.5, 1.0], epochs=2, **kw)
    set_summary(fake, top1=1.0, img_s_mean=7016.0)
    return fake


def test_seed_table_is_computed(runs):
    fake = seed_run(runs)
    res = invoke("report", fake.rd.run_id, "--baseline", V100, "--lang", "zh")
    assert res.exit_code == 0, res.output
    header, _, row = res.output.split("\n")[2:5]
    assert header == "|环境配置|V100精度|MLU精度|精度相对误差|V100效率|MLU效率|效率比例|"
    assert row == f"|2机16卡|acc=1.0|acc=1.0|0.00% 达标|throughput: 5788|throughput: 7016|{7016 / 5788:.0%}|"
    assert "121%" in row
    doc = json.loads(invoke("report", fake.rd.run_id, "--baseline", V100, "--format", "json").output)
    assert doc["comparison"]["throughput_ratio"] == pytest.approx(7016 / 5788)
    assert doc["comparison"]["throughput_ratio"] == pytest.approx(1.2122, abs=1e-4)
    assert doc["verdict"] == "pass" and doc["comparison"]["acc_rel_err"] == 0


def test_english_table_and_conclusion(runs):
    fake = seed_run(runs)
    out = invoke("report", fake.rd.run_id, "--baseline", V100, "--lang", "en").output
    assert "|Environment|Reference accuracy (V100)|This accuracy (MLU)|" in out
    assert "|2 hosts x 8 cards|acc=1.0|acc=1.0|0.00% pass|" in out
    assert "**Conclusion**: PASS: MLU, 2 hosts x 8 cards, top-1 acc=1.0 vs V100 acc=1.0" in out


def test_per_node_and_per_rank_numbers_match_the_records(runs):
    fake = make_run(runs, hosts=("alpha", "beta"), nproc=2)
    doc = build_report(fake.rd)
    for r in doc["ranks"]:
        dev = [s["img_s_device"] for s in fake.steps(r["rank"])]
        assert r["img_s_device"]["mean"] == pytest.approx(np.mean(dev))
        assert r["img_s_device"]["median"] == pytest.approx(np.median(dev))
        assert r["img_s_device"]["p10"] == pytest.approx(np.percentile(dev, 10))
        assert r["img_s_device"]["n"] == len(dev)
        assert r["data_wait_frac"] == pytest.approx(np.mean([s["data_wait_frac"] for s in fake.steps(r["rank"])]))
        assert r["peak_mem_bytes"] == max(s["peak_mem_bytes"] for s in fake.steps(r["rank"], measured=False))
    for n in doc["nodes"]:
        ranks = [r for r, node in fake.node_of.items() if node == n["node_rank"]]
        assert n["ranks"] == ranks and n["host"] == fake.hosts[n["node_rank"]]
        per_step = [sum(x) for x in zip(*[[s["img_s_device"] for s in fake.steps(r)] for r in ranks])]
        assert n["img_s"]["mean"] == pytest.approx(np.mean(per_step))
        assert n["img_s"]["p10"] == pytest.approx(np.percentile(per_step, 10))
        waits = [s["data_wait_frac"] for r in ranks for s in fake.steps(r)]
        assert n["data_wait_frac"] == pytest.approx(np.mean(waits))
        assert n["exit_code"] == 0
    s = fake.summary()
    assert doc["result"]["img_s"] == s["img_s_mean"] and doc["result"]["top1"] == s["top1"]
    assert doc["config"]["device_count"] == 4 and doc["env"] == {"zh": "2机4卡", "en": "2 hosts x 2 cards"}
    assert doc["run"]["duration_s"] == 31 * 60 + 2


def test_percentile_is_numpys_linear():
    xs = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6, 5.3]
    for q in (0, 10, 50, 90, 100):
        assert percentile(xs, q) == pytest.approx(np.percentile(xs, q))
    assert percentile([], 10) is None


def test_failed_verdict_exits_1(runs):
    fake = make_run(runs, top1=[0.3, 0.5, 0.7])
    res = invoke("report", fake.rd.run_id, "--baseline", TIMM, "--lang", "zh")
    assert res.exit_code == 1
    err = abs(0.7 - 0.8026) / 0.8026
    assert f"{err:.2%} 未达标" in res.output
    res = invoke("report", fake.rd.run_id, "--baseline", TIMM, "--format", "json")
    assert res.exit_code == 1 and json.loads(res.output)["verdict"] == "fail"


def test_tolerance_decides(runs):
    fake = make_run(runs, top1=[0.5, 0.7, 0.795])
    err = abs(0.795 - 0.8026) / 0.8026  # 0.95 %
    assert invoke("report", fake.rd.run_id, "--baseline", TIMM).exit_code == 0
    assert invoke("report", fake.rd.run_id, "--baseline", TIMM, "--acc-tolerance", str(err * 0.99)).exit_code == 1
    assert invoke("report", fake.rd.run_id, "--baseline", TIMM, "--acc-tolerance", str(err * 1.01)).exit_code == 0


def test_timm_baseline_has_no_throughput_ratio(runs):
    fake = make_run(runs, top1=[0.5, 0.7, 0.8026])
    res = invoke("report", fake.rd.run_id, "--baseline", "timm_seresnet50_ra2", "--lang", "en")
    assert res.exit_code == 0, res.output
    row = res.output.split("\n")[4]
    assert row.endswith("|n/a|throughput: %.0f|n/a|" % fake.summary()["img_s_mean"])
    assert "Reference accuracy|" in res.output.split("\n")[2]


def test_no_baseline_no_verdict(runs):
    fake = make_run(runs)
    res = invoke("report", "--lang", "en")  # latest run
    assert res.exit_code == 0
    assert fake.rd.run_id in res.output and "no baseline" in res.output


def test_uses_the_job_default_baseline(runs):
    fake = make_run(runs, job_spec={"name": "x", "report": {"baseline": TIMM}}, top1=[0.1, 0.2, 0.3])
    assert invoke("report", fake.rd.run_id).exit_code == 1


def test_not_like_for_like_warns_but_does_not_fail(runs, tmp_path):
    fake = make_run(runs, model="resnet50", global_batch=512, top1=[0.5, 0.7, 0.8026])
    b = tmp_path / "ref.yaml"
    b.write_text("model: seresnet50\nglobal_batch: 256\ntop1: 0.8026\nimg_s: 500\nsource: test\n")
    res = invoke("report", fake.rd.run_id, "--baseline", str(b), "--lang", "en")
    assert res.exit_code == 0
    assert "model differs (this resnet50, baseline seresnet50): not a like-for-like comparison" in res.output
    assert "global batch differs (this 512, baseline 256)" in res.output
    assert "note: not like for like" in res.output
    codes = [w["code"] for w in build_report(fake.rd, resolve_baseline(str(b)))["warnings"]]
    assert codes == ["model", "global_batch"]


def test_timm_tag_is_the_same_model(runs):
    fake = make_run(runs, model="seresnet50", top1=[0.5, 0.7, 0.8])
    doc = build_report(fake.rd, resolve_baseline(TIMM))
    assert "model" not in [w["code"] for w in doc["warnings"]]


def test_run_without_metrics(runs):
    fake = make_run(runs, with_metrics=False, status="failed")
    res = invoke("report", fake.rd.run_id)
    assert res.exit_code == ReportError.exit_code
    assert res.output.strip() == (f"error: run {fake.rd.run_id} has no metrics: it failed before training "
                                  f"(see orchestrate logs {fake.rd.run_id})")
    # an empty metrics dir, or files with only a torn line, are the same case
    (fake.rd.metrics_dir(0, "alpha")).mkdir(parents=True)
    (fake.rd.metrics_dir(0, "alpha") / "metrics-rank0.jsonl").write_text('{"type": "st')
    with pytest.raises(ReportError, match="has no metrics"):
        build_report(fake.rd)


def test_unknown_run_exits_2(runs):
    make_run(runs)
    res = invoke("report", "20990101-000000-ffff")
    assert res.exit_code == UsageError.exit_code == 2
    assert "unknown run 20990101-000000-ffff" in res.output
    assert invoke("report", "not-a-run").exit_code == 2


def test_baseline_missing_field(runs, tmp_path):
    fake = make_run(runs)
    b = tmp_path / "broken.yaml"
    b.write_text("model: seresnet50\nimg_s: 5788\ntop1: 1.0\n")
    res = invoke("report", fake.rd.run_id, "--baseline", str(b))
    assert res.exit_code == 1
    assert res.output.strip() == f"error: baseline {b}: missing field 'source'"
    b.write_text("model: seresnet50\nsource: x\ntop1: 80.26\ncolour: red\n")
    res = invoke("report", fake.rd.run_id, "--baseline", str(b))
    assert "'top1': Value error, must be a fraction" in res.output and "unknown field 'colour'" in res.output
    assert invoke("report", fake.rd.run_id, "--baseline", "nope.yaml").exit_code == 2


def test_partial_run_uses_last_epoch_and_steps(runs):
    fake = make_run(runs, summary=False, status="failed", top1=[0.2, 0.6, 0.61])
    doc = build_report(fake.rd, resolve_baseline(TIMM), lang="en")
    assert doc["result"]["top1"] == 0.61 and doc["result"]["accuracy_source"] == "epoch"
    g = [s["img_s_global"] for s in fake.steps(0)]
    assert doc["result"]["img_s"] == pytest.approx(statistics.fmean(g))
    assert {w["code"] for w in doc["warnings"]} >= {"status", "no_summary"}
    assert validate(doc, REPORT_SCHEMA) == []


def test_restarted_attempt_steps_are_not_double_counted(runs):
    fake = make_run(runs, hosts=("alpha",), nproc=2)
    path = fake.rd.metrics_dir(0, "alpha") / "metrics-rank1.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5] + lines) + "\n")  # steps 1..5 written twice
    doc = build_report(fake.rd)
    assert doc["ranks"][1]["img_s_device"]["n"] == len(fake.steps(1))


def test_scaling_efficiency(runs):
    one = make_run(runs, "20260101-100000-0001", hosts=("alpha",), nproc=1, speed={0: 100.0}, seed=1)
    big = make_run(runs, "20260101-110000-0002", hosts=("alpha", "beta"), nproc=2, seed=2,
                   speed={r: 90.0 for r in range(4)})
    doc = json.loads(invoke("report", big.rd.run_id, "--scaling-from", one.rd.run_id, "--format", "json").output)
    t1, tn = one.summary()["img_s_mean"], big.summary()["img_s_mean"]
    assert doc["scaling"]["k"] == 4
    assert doc["scaling"]["efficiency"] == pytest.approx(tn / (4 * t1))
    out = invoke("report", big.rd.run_id, "--scaling-from", one.rd.run_id, "--lang", "en").output
    assert f"{tn / (4 * t1):.1%}" in out
    assert invoke("report", big.rd.run_id, "--scaling-from", "20990101-000000-ffff").exit_code == 2


def test_baseline_can_be_an_earlier_run(runs):
    ref = make_run(runs, "20260101-100000-0001", top1=[0.5, 0.7, 0.8], seed=1)
    new = make_run(runs, "20260101-110000-0002", top1=[0.5, 0.7, 0.796], seed=2, img_s_scale=1.3)
    for ref_arg in (ref.rd.run_id, f"{runs}/{ref.rd.run_id}"):
        doc = json.loads(invoke("report", new.rd.run_id, "--baseline", ref_arg, "--format", "json").output)
        assert doc["baseline"]["source"] == f"run {ref.rd.run_id}"
        assert doc["comparison"]["acc_rel_err"] == pytest.approx(abs(0.796 - 0.8) / 0.8)
        assert doc["comparison"]["throughput_ratio"] == pytest.approx(
            new.summary()["img_s_mean"] / ref.summary()["img_s_mean"])
        assert doc["warnings"] == []
    empty = make_run(runs, "20260101-090000-0000", with_metrics=False)
    res = invoke("report", new.rd.run_id, "--baseline", empty.rd.run_id)
    assert res.exit_code == 1 and "has no metrics" in res.output


def test_output_flag_only_for_html(runs):
    fake = make_run(runs)
    assert invoke("report", fake.rd.run_id, "-o", "x.html").exit_code == 2


def test_verdict_fail_exits_1_through_the_real_main(runs):
    """cli.main runs click with standalone_mode=False: the exit code must still reach the process."""
    from orchestrator import cli

    assert "report" in cli.cli.commands
    fake = make_run(runs, top1=[0.1, 0.2, 0.3])
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", fake.rd.run_id, "--baseline", TIMM])
    assert exc.value.code == 1


def test_tiny_cpu_run_never_past_warm_up_and_never_evaluated(runs):
    """What a short smoke run on the testbed can look like: no throughput, no accuracy."""
    fake = make_run(runs, device="cpu", hosts=("h1", "h2"), nproc=2, steps_per_epoch=3, epochs=1, warmup=10,
                    top1=[None])
    assert fake.summary()["img_s_mean"] is None and fake.summary()["top1"] is None
    doc = build_report(fake.rd, resolve_baseline(TIMM), lang="en")
    assert validate(doc, REPORT_SCHEMA) == []
    assert doc["verdict"] == "fail" and [w["code"] for w in doc["warnings"]] == ["no_accuracy"]
    assert doc["result"]["img_s"] is None and doc["nodes"][0]["img_s"]["n"] == 0
    assert doc["env"]["en"] == "2 hosts x 2 procs (cpu)"
    res = invoke("report", fake.rd.run_id, "--lang", "en")  # no baseline: no verdict, exit 0
    assert res.exit_code == 0 and "|acc=n/a|" not in res.output and "|n/a|n/a|n/a|n/a|throughput: n/a|" not in res.output
    assert "|2 hosts x 2 procs (cpu)|n/a|n/a|n/a|n/a|n/a|n/a|" in res.output
    res = CliRunner().invoke(make_group(), ["report", fake.rd.run_id, "--format", "html", "--lang", "en"])
    assert res.exit_code == 0, res.output
