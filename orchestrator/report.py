"""A run's metrics + a baseline -> the result sheet (one JSON-able dict), verdict and conclusion.

Reading and statistics are in report_metrics.py; rendering in report_render.py (md / terminal / html)
and plots.py (matplotlib, imported lazily); the JSON schema of the dict built here in report_schema.py.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from .baselines import Baseline, device_name, env_label
from .report_metrics import (RunMetrics, data_wait, default_baseline_ref, headline_from, load_headline,
                             load_metrics, mean, no_metrics_error, node_step_throughput, numbers, stats)
from .runs import RunDir

__all__ = ["SCHEMA_VERSION", "DEFAULT_TOLERANCE", "build_report", "same_model", "default_baseline_ref",
           "load_headline", "load_metrics", "RunMetrics"]

SCHEMA_VERSION = 1
DEFAULT_TOLERANCE = 0.01


# ----------------------------------------------------------------------------- the sheet

def same_model(a: Optional[str], b: Optional[str]) -> bool:
    """``seresnet50.ra2_in1k`` (a timm pretrained tag) is the same architecture as ``seresnet50``."""
    if not a or not b:
        return True
    norm = lambda s: s.lower().split(".", 1)[0].replace("timm/", "")  # noqa: E731
    return norm(a) == norm(b)


def _duration(a: Optional[str], b: Optional[str]) -> Optional[float]:
    try:
        return (datetime.fromisoformat(b.replace("Z", "+00:00")) -  # type: ignore[union-attr]
                datetime.fromisoformat(a.replace("Z", "+00:00"))).total_seconds()  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return None


def build_report(rd: RunDir, baseline: Optional[Baseline] = None, tolerance: float = DEFAULT_TOLERANCE,
                 lang: str = "en", scaling_from: Optional[RunDir] = None,
                 metrics: Optional[RunMetrics] = None) -> dict[str, Any]:
    """The whole sheet as one JSON-able dict (schema in report_schema.py, documented in docs/report.md)."""
    from . import report_text as T

    m = metrics if metrics is not None else load_metrics(rd)
    meta = m.meta
    head = headline_from(m)
    s = m.summary or {}
    epochs = m.epochs
    evaluated = [e for e in epochs if e.get("top1") is not None]
    last_eval = evaluated[-1] if evaluated else {}
    if s.get("top1") is not None:
        top1, top5, accuracy_source = s["top1"], s.get("top5"), "summary"
    elif last_eval:
        top1, top5, accuracy_source = last_eval["top1"], last_eval.get("top5"), "epoch"
    else:
        top1 = top5 = accuracy_source = None

    nodes_meta = {int(n["rank"]): n for n in meta.get("nodes") or [] if "rank" in n}
    node_tp = node_step_throughput(m)
    nodes = []
    for node_rank in sorted({r.node_rank for r in m.ranks.values()} | set(nodes_meta)):
        rs = [r for r in m.ranks.values() if r.node_rank == node_rank]
        host = rs[0].host if rs else str(nodes_meta[node_rank].get("host"))
        waits = [w for r in rs for w in data_wait(r.steps)]
        nodes.append({"node_rank": node_rank, "host": host, "ranks": sorted(r.rank for r in rs),
                      "img_s": stats(list(node_tp.get(node_rank, {}).values())),
                      "data_wait_frac": mean(waits),
                      "exit_code": nodes_meta.get(node_rank, {}).get("exit_code")})
    ranks = []
    for r in sorted(m.ranks.values(), key=lambda r: r.rank):
        dev = numbers(s_.get("img_s_device") for s_ in r.steps)
        st = stats(dev)
        if not dev and r.rank_summary:
            st = {"mean": r.rank_summary.get("img_s_device_mean"), "median": r.rank_summary.get("img_s_device_median"),
                  "p10": None, "n": 0}
        wait = mean(data_wait(r.steps))
        if wait is None and r.rank_summary:
            wait = r.rank_summary.get("data_wait_frac_mean")
        mem = numbers(s_.get("peak_mem_bytes") for s_ in r.steps)
        ranks.append({"rank": r.rank, "node_rank": r.node_rank, "host": r.host, "img_s_device": st,
                      "data_wait_frac": wait, "peak_mem_bytes": int(max(mem)) if mem else None})

    img_s = head["img_s"]
    if img_s is None and ranks and all(r["img_s_device"]["mean"] for r in ranks):
        img_s = sum(r["img_s_device"]["mean"] for r in ranks)
    device_kind = head["device_kind"]
    env = {lang_: env_label(head["nnodes"], head["device_count"], device_kind or "", lang_) for lang_ in ("zh", "en")}

    warnings: list[dict[str, str]] = []
    def warn(code: str, **kw: Any) -> None:
        warnings.append({"code": code, "message": T.warning(code, lang, **kw)})

    if meta.get("status") not in ("succeeded", None):
        warn("status", status=meta.get("status"))
    if not s:
        warn("no_summary")

    comparison = None
    verdict = "n/a"
    if baseline is not None:
        if not same_model(baseline.model, head["model"]):
            warn("model", ours=head["model"], ref=baseline.model)
        if baseline.global_batch and head["global_batch"] and baseline.global_batch != head["global_batch"]:
            warn("global_batch", ours=head["global_batch"], ref=baseline.global_batch)
        if baseline.precision and head["precision"] and baseline.precision != head["precision"]:
            warn("precision", ours=head["precision"], ref=baseline.precision)
        ref_count = (baseline.hosts or 0) * (baseline.devices_per_host or 0)
        if ref_count and ref_count != head["device_count"]:
            warn("device_count", ours=head["device_count"], ref=ref_count)
        rel_err = None
        if baseline.top1 is not None:
            if isinstance(top1, (int, float)):
                rel_err = abs(top1 - baseline.top1) / baseline.top1
                verdict = "pass" if rel_err <= tolerance + 1e-12 else "fail"
            else:
                verdict = "fail"
                warn("no_accuracy")
        ratio = (img_s / baseline.img_s) if (img_s and baseline.img_s) else None
        comparison = {"acc_rel_err": rel_err, "acc_tolerance": tolerance, "verdict": verdict,
                      "throughput_ratio": ratio}

    scaling = None
    if scaling_from is not None:
        one = load_headline(scaling_from)
        if one["model"] is None:
            raise no_metrics_error(scaling_from.run_id)
        k = head["device_count"] / one["device_count"] if one["device_count"] else None
        eff = (img_s / (k * one["img_s"])) if (img_s and one["img_s"] and k) else None
        scaling = {"from_run": scaling_from.run_id, "from_device_count": one["device_count"],
                   "from_img_s": one["img_s"], "device_count": head["device_count"], "img_s": img_s,
                   "k": k, "efficiency": eff}

    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "lang": lang,
        "run": {"run_id": rd.run_id, "job": (meta.get("job") or {}).get("name"), "status": meta.get("status"),
                "image": (meta.get("image") or {}).get("name"), "image_id": (meta.get("image") or {}).get("id"),
                "started": meta.get("started"), "ended": meta.get("ended"),
                "duration_s": _duration(meta.get("started"), meta.get("ended")),
                "hosts": list(meta.get("hosts") or [n["host"] for n in nodes]), "attempt": meta.get("attempt")},
        "config": {"model": head["model"], "device_kind": device_kind, "device": device_name(device_kind),
                   "device_count": head["device_count"], "nnodes": head["nnodes"],
                   "world_size": s.get("world_size", head["device_count"]), "precision": head["precision"],
                   "global_batch": head["global_batch"], "epochs": s.get("epochs", len(epochs) or None),
                   "steps": s.get("steps"), "torch_version": s.get("torch_version"), "data": s.get("data")},
        "env": env,
        "result": {"top1": top1, "top5": top5, "accuracy_source": accuracy_source, "img_s": img_s,
                   "img_s_median": head["img_s_median"], "total_time_s": s.get("total_time_s")},
        "baseline": baseline.as_dict() if baseline is not None else None,
        "comparison": comparison,
        "verdict": verdict,
        "warnings": warnings,
        "nodes": nodes,
        "ranks": ranks,
        "epochs": [{k: e.get(k) for k in ("epoch", "train_loss", "val_loss", "top1", "top5", "img_s_global")}
                   for e in epochs],
        "scaling": scaling,
    }
    doc["conclusion"] = T.conclusion(doc, lang)
    return doc
