"""The run ledger: one row per past run (``orchestrate runs``) and two runs side by side (``compare``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from . import report_text as T
from .baselines import Baseline, resolve_baseline
from .errors import OrchestrateError
from .report import DEFAULT_TOLERANCE, build_report, default_baseline_ref, load_headline
from .runs import RunDir, list_runs

LEDGER_COLUMNS = ("run_id", "job", "hosts", "status", "top1", "img_s", "verdict")


def ledger_rows(root: Optional[Path] = None, baseline_ref: Optional[str] = None,
                tolerance: float = DEFAULT_TOLERANCE) -> list[dict[str, Any]]:
    """Oldest first. ``verdict`` is judged against ``baseline_ref``, else each run's default baseline
    (``$ORCHESTRATE_BASELINE`` or the job's ``baseline`` key); None when there is none or it cannot be read."""
    cache: dict[str, Optional[Baseline]] = {}

    def baseline(ref: Optional[str]) -> Optional[Baseline]:
        if not ref:
            return None
        if ref not in cache:
            try:
                cache[ref] = resolve_baseline(ref, root)
            except OrchestrateError:
                cache[ref] = None
        return cache[ref]

    rows = []
    for rd in list_runs(root):
        row: dict[str, Any] = {"run_id": rd.run_id, "job": None, "hosts": [], "status": None, "top1": None,
                               "img_s": None, "verdict": None, "baseline": None}
        try:
            meta = rd.load()
            row.update(job=(meta.get("job") or {}).get("name"), hosts=list(meta.get("hosts") or []),
                       status=meta.get("status"))
            head = load_headline(rd, meta)
            row.update(top1=head["top1"], img_s=head["img_s"])
            b = baseline(baseline_ref or default_baseline_ref(meta))
            if b is not None and b.top1 is not None and head["model"] is not None:
                row["baseline"] = b.name
                if isinstance(head["top1"], (int, float)):
                    row["verdict"] = "pass" if abs(head["top1"] - b.top1) / b.top1 <= tolerance + 1e-12 else "fail"
                else:
                    row["verdict"] = "fail"
        except (OrchestrateError, OSError, ValueError, TypeError, KeyError) as err:
            row["status"] = row["status"] or f"unreadable ({type(err).__name__})"
        rows.append(row)
    return rows


def ledger_table(rows: list[dict[str, Any]], lang: str) -> tuple[list[str], list[list[str]]]:
    """A verdict names its baseline only when the rows were judged against different ones
    (otherwise the caller says it once, see ``common_baseline``)."""
    mixed = len({r["baseline"] for r in rows if r["verdict"] is not None}) > 1
    headers = ["run", T.word("job", lang), T.word("host", lang), T.word("status", lang), "top-1", "img/s",
               T.word("verdict", lang)]
    body = [[r["run_id"], r["job"] or "", ",".join(r["hosts"]), r["status"] or "",
             "" if r["top1"] is None else T.acc(r["top1"]), "" if r["img_s"] is None else T.img_s(r["img_s"]),
             "" if r["verdict"] is None else T.word(r["verdict"], lang) + (f" ({r['baseline']})" if mixed else "")]
            for r in rows]
    return headers, body


def common_baseline(rows: list[dict[str, Any]]) -> Optional[str]:
    judged = {r["baseline"] for r in rows if r["verdict"] is not None}
    return judged.pop() if len(judged) == 1 else None


def compare_docs(a: RunDir, b: RunDir, lang: str = "en") -> dict[str, Any]:
    """Both runs' sheets (no baseline) and a row per field: value A, value B, change B vs A."""
    da, db = build_report(a, lang=lang), build_report(b, lang=lang)

    def wait(doc: dict[str, Any]) -> Optional[float]:
        vals = [n["data_wait_frac"] for n in doc["nodes"] if n["data_wait_frac"] is not None]
        return sum(vals) / len(vals) if vals else None

    fields: list[tuple[str, Any, Any, str]] = [
        ("job", da["run"]["job"], db["run"]["job"], "text"),
        ("status", da["run"]["status"], db["run"]["status"], "text"),
        ("model", da["config"]["model"], db["config"]["model"], "text"),
        ("env", da["env"][lang], db["env"][lang], "text"),
        ("device", da["config"]["device_kind"], db["config"]["device_kind"], "text"),
        ("device_count", da["config"]["device_count"], db["config"]["device_count"], "int"),
        ("precision", da["config"]["precision"], db["config"]["precision"], "text"),
        ("global_batch", da["config"]["global_batch"], db["config"]["global_batch"], "int"),
        ("top1", da["result"]["top1"], db["result"]["top1"], "acc"),
        ("top5", da["result"]["top5"], db["result"]["top5"], "acc"),
        ("img_s", da["result"]["img_s"], db["result"]["img_s"], "img_s"),
        ("img_s_median", da["result"]["img_s_median"], db["result"]["img_s_median"], "img_s"),
        ("data_wait_frac", wait(da), wait(db), "frac"),
        ("total_time_s", da["result"]["total_time_s"], db["result"]["total_time_s"], "secs"),
        ("image_id", da["run"]["image_id"], db["run"]["image_id"], "id"),
    ]
    rows = []
    for name, va, vb, kind in fields:
        change = None
        if kind not in ("text", "id") and isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            change = (vb - va) if kind in ("acc", "frac") else ((vb / va - 1) if va else None)
        rows.append({"field": name, "a": va, "b": vb, "change": change, "kind": kind})
    return {"schema_version": 1, "a": da["run"]["run_id"], "b": db["run"]["run_id"], "rows": rows}


def compare_table(cmp: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    def fmt(v: Any, kind: str) -> str:
        if v is None:
            return "n/a"
        return {"acc": T.acc, "img_s": T.img_s, "frac": lambda x: T.pct(x, 1), "secs": T.seconds,
                "id": lambda x: str(x)[:19]}.get(
            kind, str)(v)

    def delta(r: dict[str, Any]) -> str:
        c = r["change"]
        if c is None:
            return "" if r["kind"] not in ("text", "id") or r["a"] == r["b"] else "≠"
        if r["kind"] == "acc":
            return f"{c:+.4f}"
        if r["kind"] == "frac":
            return f"{c * 100:+.1f} pt"
        return f"{c * 100:+.1f}%"

    body = [[r["field"], fmt(r["a"], r["kind"]), fmt(r["b"], r["kind"]), delta(r)] for r in cmp["rows"]]
    return ["", cmp["a"], cmp["b"], "B vs A"], body
