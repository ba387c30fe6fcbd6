"""`orchestrate report --format json` against its schema (report_schema.REPORT_SCHEMA, docs/report.md)."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_fakerun import make_group, make_run  # noqa: E402

from orchestrator.report import SCHEMA_VERSION  # noqa: E402
from orchestrator.report_schema import REPORT_SCHEMA, validate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def report_json(*args):
    res = CliRunner().invoke(make_group(), ["report", *args, "--format", "json"])
    return res.exit_code, json.loads(res.output)


@pytest.mark.parametrize("baseline", [None, "v100_2x8_seed", "mlu370_2x8_seed", "timm_seresnet50_ra2"])
def test_json_matches_schema(runs, baseline):
    one = make_run(runs, "20260101-100000-0001", hosts=("a",), nproc=1)
    fake = make_run(runs, top1=[0.5, 0.7, 0.8])
    args = [fake.rd.run_id, "--scaling-from", one.rd.run_id] + (["--baseline", baseline] if baseline else [])
    _, doc = report_json(*args)
    assert validate(doc, REPORT_SCHEMA) == []
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert (doc["baseline"] is None) == (baseline is None) and doc["scaling"] is not None


def test_json_of_partial_and_cpu_runs(runs):
    fake = make_run(runs, device="cpu", summary=False, status="failed", epochs=1, top1=[0.1])
    code, doc = report_json(fake.rd.run_id, "--baseline", "timm_seresnet50_ra2")
    assert code == 1 and validate(doc, REPORT_SCHEMA) == []


def test_schema_documented_keys(runs):
    """Every top-level key is documented in docs/report.md."""
    doc_text = (REPO / "docs" / "report.md").read_text(encoding="utf-8")
    for key in REPORT_SCHEMA["properties"]:
        assert f"`{key}`" in doc_text, key


def test_validator_catches_problems(runs):
    fake = make_run(runs)
    _, doc = report_json(fake.rd.run_id)
    bad = copy.deepcopy(doc)
    del bad["run"]["run_id"]
    bad["result"]["top1"] = 3
    bad["verdict"] = "maybe"
    bad["extra"] = 1
    bad["ranks"][0]["img_s_device"]["n"] = "x"
    errs = validate(bad, REPORT_SCHEMA)
    assert "$.run: missing key 'run_id'" in errs
    assert "$.result.top1: 3 > maximum 1" in errs
    assert any(e.startswith("$.verdict: 'maybe' not one of") for e in errs)
    assert "$: unexpected key 'extra'" in errs
    assert any(e.startswith("$.ranks[0].img_s_device.n: expected integer") for e in errs)
    assert validate(1, {"const": 1}) == [] and validate(2, {"const": 1})
