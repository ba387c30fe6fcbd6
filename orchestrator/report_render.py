"""The result sheet (report.build_report's dict) as sections, then as Markdown, rich tables or HTML.

One list of sections feeds every format, so md, terminal and html always show the same numbers.
"""
from __future__ import annotations

import html as _html
from dataclasses import dataclass, field
from typing import Any, Optional

from . import report_text as T


@dataclass
class Section:
    title: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    kind: str = "table"  # table | kv | list | text
    text: str = ""


def _dev_label(key: str, dev: Optional[str], lang: str) -> str:
    if dev:
        return T.word(key, lang, dev=dev)
    generic = {"ref_acc": ("参考精度", "Reference accuracy"), "ref_tp": ("参考效率", "Reference throughput"),
               "this_acc": ("本次精度", "This accuracy"), "this_tp": ("本次效率", "This throughput")}[key]
    return generic[0] if lang == "zh" else generic[1]


def main_table(doc: dict[str, Any], lang: str) -> Section:
    """The seed's table: 环境配置 | ref acc | this acc | 精度相对误差 | ref throughput | this throughput | 效率比例."""
    b, c, r = doc["baseline"], doc["comparison"], doc["result"]
    ref_dev = (b or {}).get("device") if b else None
    this_dev = doc["config"]["device"]
    env = doc["env"][lang]
    if b and b["env"][lang] not in (env, "n/a"):
        env += f" ({T.word('baseline', lang)}: {b['env'][lang]})"
    headers = [T.word("env", lang), _dev_label("ref_acc", ref_dev, lang), _dev_label("this_acc", this_dev, lang),
               T.word("rel_err", lang), _dev_label("ref_tp", ref_dev, lang), _dev_label("this_tp", this_dev, lang),
               T.word("ratio", lang)]
    row = [env, T.acc(b["top1"]) if b else "n/a", T.acc(r["top1"]), T.verdict_cell(doc, lang),
           T.throughput(b["img_s"]) if b else "n/a", T.throughput(r["img_s"]),
           T.pct(c["throughput_ratio"], 0) if c else "n/a"]
    return Section(T.word("title", lang), headers, [row])


def sections(doc: dict[str, Any], lang: str) -> list[Section]:
    out = [main_table(doc, lang)]
    b = doc["baseline"]
    if b:
        tol = T.pct(doc["comparison"]["acc_tolerance"])
        out.append(Section("", kind="text", text=f"{T.word('baseline', lang)}: {b['name']} ({b['model']}) "
                                                 f"— {b['source']}; {T.word('tolerance', lang)} {tol}"))
    else:
        out.append(Section("", kind="text", text=T.word("no_baseline", lang)))
    if doc["warnings"]:
        out.append(Section(T.word("warnings", lang), kind="list", rows=[[w["message"]] for w in doc["warnings"]]))
    out.append(Section(T.word("nodes", lang),
                       [T.word("node", lang), T.word("host", lang), T.word("rank", lang), T.word("mean", lang),
                        T.word("median", lang), T.word("p10", lang), T.word("data_wait", lang), T.word("exit", lang)],
                       [[str(n["node_rank"]), n["host"], ",".join(map(str, n["ranks"])) or "-",
                         T.img_s(n["img_s"]["mean"]), T.img_s(n["img_s"]["median"]), T.img_s(n["img_s"]["p10"]),
                         T.pct(n["data_wait_frac"], 1), "n/a" if n["exit_code"] is None else str(n["exit_code"])]
                        for n in doc["nodes"]]))
    out.append(Section(T.word("ranks", lang),
                       [T.word("rank", lang), T.word("node", lang), T.word("host", lang), T.word("mean", lang),
                        T.word("median", lang), T.word("p10", lang), T.word("data_wait", lang),
                        T.word("peak_mem", lang)],
                       [[str(r["rank"]), str(r["node_rank"]), r["host"], T.img_s(r["img_s_device"]["mean"]),
                         T.img_s(r["img_s_device"]["median"]), T.img_s(r["img_s_device"]["p10"]),
                         T.pct(r["data_wait_frac"], 1), T.gib(r["peak_mem_bytes"])] for r in doc["ranks"]]))
    if doc["scaling"]:
        s = doc["scaling"]
        text = (f"{T.pct(s['efficiency'], 1)} = {T.img_s(s['img_s'])} / ({s['k']:g} x {T.img_s(s['from_img_s'])}) "
                f"— {s['device_count']} vs {s['from_device_count']} devices, run {s['from_run']}"
                if s["k"] else "n/a")
        out.append(Section(T.word("scaling", lang), kind="text", text=text))
    run, cfg, res = doc["run"], doc["config"], doc["result"]
    kv = [
        ("run_id", run["run_id"]), ("job", run["job"]), ("status", run["status"]), ("model", cfg["model"]),
        ("device", f"{cfg['device_kind']} x {cfg['device_count']} ({cfg['nnodes']} x "
                   f"{cfg['device_count'] // max(cfg['nnodes'] or 1, 1)})"),
        ("precision", cfg["precision"]), ("global_batch", cfg["global_batch"]),
        ("top5", T.acc(res["top5"])), ("epochs", cfg["epochs"]),
        ("image", f"{run['image']} ({(run['image_id'] or 'n/a')[:19]})" if run["image"]
         else "none (runtime: process)"),
        ("started", run["started"]), ("ended", run["ended"]), ("duration", T.seconds(run["duration_s"])),
        ("torch", cfg["torch_version"]),
    ]
    out.append(Section(T.word("details", lang), [T.word("field", lang), T.word("value", lang)],
                       [[T.word(k, lang), "n/a" if v is None else str(v)] for k, v in kv], kind="kv"))
    out.append(Section(T.word("conclusion", lang), kind="text", text=doc["conclusion"]))
    return out


# ----------------------------------------------------------------------------- markdown

def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: dict[str, Any], lang: str) -> str:
    lines = [f"# {T.word('title', lang)}: {doc['run']['run_id']} ({doc['run']['job'] or '-'})", ""]
    for i, sec in enumerate(sections(doc, lang)):
        if sec.title == T.word("conclusion", lang):
            lines += [f"**{sec.title}**: {sec.text}", ""]
            continue
        if i and sec.title:
            lines += [f"## {sec.title}", ""]
        if sec.kind in ("table", "kv"):
            lines.append("|" + "|".join(_md_cell(h) for h in sec.headers) + "|")
            lines.append("|" + "|".join("--" for _ in sec.headers) + "|")
            lines += ["|" + "|".join(_md_cell(c) for c in row) + "|" for row in sec.rows]
        elif sec.kind == "list":
            lines += [f"- {row[0]}" for row in sec.rows]
        else:
            lines.append(sec.text)
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- terminal (rich)

def print_rich(doc: dict[str, Any], lang: str, console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    verdict_style = {"pass": "bold green", "fail": "bold red"}.get(doc["verdict"], "")
    for i, sec in enumerate(sections(doc, lang)):
        if sec.kind in ("table", "kv"):
            t = Table(title=sec.title if i else f"{sec.title}: {doc['run']['run_id']}",
                      show_header=sec.kind == "table", title_justify="left")
            for h in sec.headers:
                # fold, never "…": a terminal too narrow wraps a number instead of hiding part of it
                t.add_column(h, justify="left" if sec.kind == "kv" else "right", overflow="fold")
            for row in sec.rows:
                if i == 0:  # the seed's "throughput: 5788" is for pasting; the terminal needs the width
                    row = [doc["env"][lang]] + [c.removeprefix("throughput: ") for c in row[1:]]
                cells = [Text(c, style=verdict_style) if (i == 0 and j == 3) else Text(c) for j, c in enumerate(row)]
                t.add_row(*cells)
            console.print(t)
        elif sec.kind == "list":
            console.print(Text(sec.title, style="bold yellow"))
            for row in sec.rows:
                console.print(Text(f"  ! {row[0]}", style="yellow"))
        elif sec.title == T.word("conclusion", lang):
            console.print(Text(sec.text, style=verdict_style or "bold"))
        else:
            console.print(Text(f"{sec.title}: {sec.text}" if sec.title else sec.text))
        console.print()


# ----------------------------------------------------------------------------- html

_CSS = """
body{font-family:"Noto Sans CJK SC","Noto Sans",system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1180px;color:#1d232a;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
.sub{color:#5c6670;font-size:13px}table{border-collapse:collapse;font-size:13.5px;margin:6px 0}
th,td{border:1px solid #d5d9de;padding:5px 10px;text-align:right;white-space:nowrap}
th{background:#f1f3f5;font-weight:600}td:first-child,th:first-child{text-align:left}
table.kv td{text-align:left}table.main td{font-size:15px}
table.main th,table.main td:first-child{white-space:normal;max-width:230px}
.pass{color:#1a7f37;font-weight:700}.fail{color:#c62828;font-weight:700}
.box{padding:10px 14px;border-radius:6px;margin:14px 0;font-size:15px;background:#f6f8fa;border-left:5px solid #8a939b}
.box.pass{background:#eef8f0;border-color:#1a7f37}.box.fail{background:#fdeeee;border-color:#c62828}
.warn{background:#fff8e1;border-left:5px solid #e0a800;padding:6px 12px;margin:4px 0;font-size:13.5px}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:14px}.plots figure{margin:0}
.plots img{width:100%;border:1px solid #e3e6ea;border-radius:4px}.plots .wide{grid-column:1/3}
figcaption{font-size:12px;color:#5c6670}
"""


def _esc(s: Any) -> str:
    return _html.escape("" if s is None else str(s))


def _html_table(sec: Section, cls: str = "", verdict: str = "") -> str:
    head = "" if sec.kind == "kv" else "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in sec.headers) + "</tr>"
    body = []
    for row in sec.rows:
        cells = []
        for j, c in enumerate(row):
            klass = f' class="{verdict}"' if (cls == "main" and j == 3 and verdict in ("pass", "fail")) else ""
            cells.append(f"<td{klass}>{_esc(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    kind = "kv" if sec.kind == "kv" else cls
    return f'<table class="{kind}">{head}{"".join(body)}</table>'


def to_html(doc: dict[str, Any], lang: str, plots: dict[str, Optional[str]]) -> str:
    """A self-contained page: ``plots`` maps a caption to a base64 PNG (or None when there was no data)."""
    secs = sections(doc, lang)
    verdict = doc["verdict"]
    run = doc["run"]
    parts = [f"<!doctype html><html lang=\"{'zh-CN' if lang == 'zh' else 'en'}\"><head><meta charset=\"utf-8\">",
             f"<title>{_esc(T.word('title', lang))} {_esc(run['run_id'])}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_esc(T.word('title', lang))}: {_esc(run['run_id'])}</h1>",
             f"<div class=\"sub\">{_esc(run['job'])} · {_esc(doc['config']['model'])} · {_esc(run['status'])} · "
             f"{_esc(run['started'])} → {_esc(run['ended'])}</div>",
             f"<div class=\"box {verdict if verdict in ('pass', 'fail') else ''}\">{_esc(doc['conclusion'])}</div>"]
    nodes_title = T.word("nodes", lang)
    for i, sec in enumerate(secs):
        if sec.title == T.word("conclusion", lang):
            continue
        if sec.title == nodes_title and plots:
            parts.append(_plots_html(plots, lang))
        if i == 0:
            parts.append(_html_table(sec, "main", verdict))
        elif sec.kind in ("table", "kv"):
            parts.append(f"<h2>{_esc(sec.title)}</h2>{_html_table(sec)}")
        elif sec.kind == "list":
            parts.append(f"<h2>{_esc(sec.title)}</h2>" + "".join(f'<div class="warn">{_esc(r[0])}</div>' for r in sec.rows))
        else:
            title = f"<h2>{_esc(sec.title)}</h2>" if sec.title else ""
            parts.append(f"{title}<p class=\"sub\">{_esc(sec.text)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _plots_html(plots: dict[str, Optional[str]], lang: str) -> str:
    figs = []
    for n, (caption, b64) in enumerate(plots.items()):
        wide = ' class="wide"' if n == 0 else ""
        if b64:
            figs.append(f'<figure{wide}><img alt="{_esc(caption)}" src="data:image/png;base64,{b64}"></figure>')
        else:
            figs.append(f"<figure{wide}><figcaption>{_esc(caption)}: {_esc(T.word('no_data', lang))}"
                        "</figcaption></figure>")
    return f"<h2>{_esc(T.word('plots', lang))}</h2><div class=\"plots\">{''.join(figs)}</div>"
