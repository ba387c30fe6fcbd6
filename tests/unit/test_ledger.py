"""`orchestrate runs` and `orchestrate compare`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_fakerun import make_group, make_run  # noqa: E402

from orchestrator.ledger import ledger_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TIMM = str(REPO / "baselines" / "timm_seresnet50_ra2.yaml")


def invoke(*args):
    return CliRunner().invoke(make_group(), list(args))


@pytest.fixture
def three(runs):
    a = make_run(runs, "20260101-100000-0001", top1=[0.5, 0.7, 0.80], seed=1)
    b = make_run(runs, "20260101-110000-0002", top1=[0.5, 0.7, 0.60], seed=2, img_s_scale=1.5)
    c = make_run(runs, "20260101-120000-0003", with_metrics=False, status="failed")
    return a, b, c


def test_runs_lists_every_run(three):
    a, b, c = three
    res = invoke("runs", "--format", "json")
    assert res.exit_code == 0
    rows = json.loads(res.output)["runs"]
    assert [r["run_id"] for r in rows] == [a.rd.run_id, b.rd.run_id, c.rd.run_id]
    assert rows[0]["top1"] == 0.80 and rows[0]["img_s"] == a.summary()["img_s_mean"]
    assert rows[0]["hosts"] == ["alpha", "beta"] and rows[0]["job"] == "seresnet-test"
    assert rows[2]["status"] == "failed" and rows[2]["top1"] is None and rows[2]["verdict"] is None
    assert all(r["verdict"] is None for r in rows)  # no default baseline


def test_runs_verdict_against_a_baseline(three, monkeypatch):
    rows = json.loads(invoke("runs", "--baseline", TIMM, "--format", "json").output)["runs"]
    assert [r["verdict"] for r in rows] == ["pass", "fail", None]  # 0.80 vs 0.8026 within 1 %, 0.60 not
    monkeypatch.setenv("ORCHESTRATE_BASELINE", TIMM)
    assert [r["verdict"] for r in ledger_rows()] == ["pass", "fail", None]


def test_runs_table(three):
    a, _, c = three
    out = invoke("runs", "--lang", "en").output
    assert out.splitlines()[2] == "|run|job|host|status|top-1|img/s|verdict|"
    assert f"|{a.rd.run_id}|seresnet-test|alpha,beta|succeeded|acc=0.8|{a.summary()['img_s_mean']:.0f}||" in out
    assert f"|{c.rd.run_id}|seresnet-test|alpha,beta|failed||||" in out
    out = invoke("runs", "--baseline", TIMM, "--lang", "en").output
    assert "runs under" in out and "verdict vs timm_seresnet50_ra2" in out and "|pass|" in out and "|FAIL|" in out


def test_runs_empty_and_bad_baseline(runs):
    res = invoke("runs")
    assert res.exit_code == 0 and "no runs under" in res.output
    assert invoke("runs", "--baseline", "nope.yaml").exit_code == 2


def test_runs_survives_a_broken_run_json(three, runs):
    (runs / "20260101-130000-dead").mkdir()
    (runs / "20260101-130000-dead" / "run.json").write_text("{not json")
    rows = json.loads(invoke("runs", "--format", "json").output)["runs"]
    assert rows[-1]["run_id"] == "20260101-130000-dead" and rows[-1]["status"].startswith("unreadable")


def test_compare_side_by_side(three):
    a, b, _ = three
    res = invoke("compare", a.rd.run_id, b.rd.run_id, "--format", "json")
    assert res.exit_code == 0
    rows = {r["field"]: r for r in json.loads(res.output)["rows"]}
    ta, tb = a.summary()["img_s_mean"], b.summary()["img_s_mean"]
    assert rows["img_s"]["a"] == ta and rows["img_s"]["b"] == tb
    assert rows["img_s"]["change"] == pytest.approx(tb / ta - 1)
    assert rows["top1"]["change"] == pytest.approx(0.60 - 0.80)
    table = invoke("compare", a.rd.run_id, b.rd.run_id).output
    assert f"|img_s|{ta:.0f}|{tb:.0f}|{(tb / ta - 1) * 100:+.1f}%|" in table
    assert "|top1|acc=0.8|acc=0.6|-0.2000|" in table


def test_compare_bad_input(three):
    a, _, c = three
    assert invoke("compare", a.rd.run_id, "20990101-000000-ffff").exit_code == 2
    res = invoke("compare", a.rd.run_id, c.rd.run_id)
    assert res.exit_code == 1 and "has no metrics" in res.output


def test_ledger_finds_a_summary_in_a_file_without_rank_suffix(runs):
    """trainer --metrics-file metrics.jsonl: rank 0 writes metrics.jsonl, the others metrics-rank<N>.jsonl."""
    fake = make_run(runs, top1=[0.5, 0.7, 0.8])
    d = fake.rd.metrics_dir(0, "alpha")
    (d / "metrics-rank0.jsonl").rename(d / "metrics.jsonl")
    rows = ledger_rows()
    assert rows[0]["top1"] == 0.8 and rows[0]["img_s"] == fake.summary()["img_s_mean"]
