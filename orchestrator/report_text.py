"""Words and number formats of the result sheet, in Chinese (the seed's) and English."""
from __future__ import annotations

from typing import Any, Optional

LANGS = ("zh", "en")

_WORDS = {
    "env": ("环境配置", "Environment"),
    "ref_acc": ("{dev}精度", "Reference accuracy ({dev})"),
    "this_acc": ("{dev}精度", "This accuracy ({dev})"),
    "rel_err": ("精度相对误差", "Accuracy relative error"),
    "ref_tp": ("{dev}效率", "Reference throughput ({dev})"),
    "this_tp": ("{dev}效率", "This throughput ({dev})"),
    "ratio": ("效率比例", "Throughput ratio"),
    "pass": ("达标", "pass"),
    "fail": ("未达标", "FAIL"),
    "n/a": ("n/a", "n/a"),
    "title": ("结果对比", "Result sheet"),
    "baseline": ("参考", "Baseline"),
    "no_baseline": ("(未指定参考，只列出本次结果)", "(no baseline given: this run's numbers only)"),
    "tolerance": ("容差", "tolerance"),
    "nodes": ("各节点吞吐 (img/s, 预热后)", "Per-node throughput (img/s, after warm-up)"),
    "ranks": ("各进程吞吐 (img/s, 预热后)", "Per-rank throughput (img/s, after warm-up)"),
    "node": ("节点", "node"),
    "rank": ("进程", "rank"),
    "host": ("主机", "host"),
    "mean": ("均值", "mean"),
    "median": ("中位数", "median"),
    "p10": ("P10", "p10"),
    "data_wait": ("数据等待占比", "data wait"),
    "exit": ("退出码", "exit"),
    "peak_mem": ("显存峰值", "peak mem"),
    "details": ("运行信息", "Run details"),
    "run_id": ("运行 ID", "run id"),
    "job": ("作业", "job"),
    "status": ("状态", "status"),
    "device": ("设备", "device"),
    "precision": ("精度类型", "precision"),
    "global_batch": ("全局 batch", "global batch"),
    "model": ("模型", "model"),
    "image": ("镜像", "image"),
    "started": ("开始", "started"),
    "ended": ("结束", "ended"),
    "duration": ("耗时", "duration"),
    "top5": ("Top-5", "top-5"),
    "epochs": ("轮数", "epochs"),
    "torch": ("torch", "torch"),
    "scaling": ("扩展效率", "Scaling efficiency"),
    "warnings": ("警告", "Warnings"),
    "conclusion": ("结论", "Conclusion"),
    "field": ("项目", "field"),
    "value": ("值", "value"),
    "plots": ("曲线", "Plots"),
    "verdict": ("判定", "verdict"),
    "no_data": ("无数据", "no data"),
}

_WARN = {
    "status": ("运行状态为 {status}：数据来自未完成的运行", "run status is {status}: the numbers come from an unfinished run"),
    "no_summary": ("没有 summary 记录（训练未正常结束）：精度取最后一个 epoch，吞吐取各 step",
                   "no summary record (training did not finish): accuracy from the last epoch, throughput from the steps"),
    "model": ("模型不同（本次 {ours}，参考 {ref}）：不是同条件对比",
              "model differs (this {ours}, baseline {ref}): not a like-for-like comparison"),
    "global_batch": ("全局 batch 不同（本次 {ours}，参考 {ref}）：不是同条件对比",
                     "global batch differs (this {ours}, baseline {ref}): not a like-for-like comparison"),
    "precision": ("精度类型不同（本次 {ours}，参考 {ref}）：不是同条件对比",
                  "precision differs (this {ours}, baseline {ref}): not a like-for-like comparison"),
    "device_count": ("卡数不同（本次 {ours}，参考 {ref}）：效率比例不是同条件对比",
                     "device count differs (this {ours}, baseline {ref}): the throughput ratio is not like for like"),
    "no_accuracy": ("本次运行没有精度数据：判为未达标", "this run recorded no accuracy: verdict FAIL"),
}


def word(key: str, lang: str, **kw: Any) -> str:
    zh, en = _WORDS[key]
    return (zh if lang == "zh" else en).format(**kw)


def warning(code: str, lang: str, **kw: Any) -> str:
    zh, en = _WARN[code]
    return (zh if lang == "zh" else en).format(**kw)


def acc(x: Optional[float]) -> str:
    """The seed's style: ``acc=1.0``, ``acc=0.8026``."""
    return "n/a" if x is None else f"acc={round(float(x), 4)}"


def pct(x: Optional[float], digits: int = 2) -> str:
    return "n/a" if x is None else f"{x * 100:.{digits}f}%"


def img_s(x: Optional[float]) -> str:
    if x is None:
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}"


def throughput(x: Optional[float]) -> str:
    """The seed's style: ``throughput: 5788``."""
    return "n/a" if x is None else f"throughput: {img_s(x)}"


def gib(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x / 2**30:.1f} GiB"


def seconds(x: Optional[float]) -> str:
    if x is None:
        return "n/a"
    x = int(round(x))
    h, rem = divmod(x, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def verdict_cell(doc: dict[str, Any], lang: str) -> str:
    c = doc["comparison"]
    if c is None:
        return "n/a"
    return f"{pct(c['acc_rel_err'])} {word(c['verdict'], lang)}"


def conclusion(doc: dict[str, Any], lang: str) -> str:
    r, cfg, c, b = doc["result"], doc["config"], doc["comparison"], doc["baseline"]
    env = doc["env"][lang]
    dev = cfg["device"] or "?"
    top1 = acc(r["top1"])
    tp = img_s(r["img_s"])
    if c is None:
        if lang == "zh":
            return f"{dev} {env}：top-1 {top1}，吞吐 {tp} img/s（未指定参考，不做判定）。"
        return f"{dev}, {env}: top-1 {top1}, throughput {tp} img/s (no baseline, no verdict)."
    ref_name = f"{b['device'] or b['name']}"
    if lang == "zh":
        head = f"{word(c['verdict'], 'zh')}：{dev} {env} top-1 {top1}，参考 {ref_name} {acc(b['top1'])}"
        err = f"，相对误差 {pct(c['acc_rel_err'])}（容差 {pct(c['acc_tolerance'])}）" if c["acc_rel_err"] is not None else ""
        tail = (f"；吞吐 {tp} img/s，为参考的 {pct(c['throughput_ratio'], 0)}" if c["throughput_ratio"] is not None
                else f"；吞吐 {tp} img/s（参考无吞吐数据）")
        note = "；注意：不是同条件对比" if _unlike(doc) else ""
        return head + err + tail + note + "。"
    head = f"{word(c['verdict'], 'en').upper()}: {dev}, {env}, top-1 {top1} vs {ref_name} {acc(b['top1'])}"
    err = (f", relative error {pct(c['acc_rel_err'])} (tolerance {pct(c['acc_tolerance'])})"
           if c["acc_rel_err"] is not None else "")
    tail = (f"; throughput {tp} img/s = {pct(c['throughput_ratio'], 0)} of the baseline"
            if c["throughput_ratio"] is not None else f"; throughput {tp} img/s (baseline has none)")
    note = "; note: not like for like" if _unlike(doc) else ""
    return head + err + tail + note + "."


def _unlike(doc: dict[str, Any]) -> bool:
    return any(w["code"] in ("model", "global_batch", "precision") for w in doc["warnings"])
