"""The report's plots as PNG bytes. matplotlib (Agg) is imported inside the functions only, so the
controller's CLI starts without it."""
from __future__ import annotations

import base64
import io
from typing import Any, Optional

from .report_metrics import RunMetrics, node_step_throughput, numbers

_LABELS = {
    "tp_title": ("全局吞吐与各节点占比", "Global throughput and each node's share"),
    "step": ("step", "step"),
    "img_s": ("img/s", "img/s"),
    "node": ("节点", "node"),
    "global": ("全局 (rank 0 记录)", "global (rank 0's record)"),
    "ep_title": ("损失与 Top-1 (按 epoch)", "Loss and top-1 over epochs"),
    "epoch": ("epoch", "epoch"),
    "loss": ("损失", "loss"),
    "train_loss": ("训练损失", "train loss"),
    "val_loss": ("验证损失", "val loss"),
    "step_loss": ("训练损失 (step)", "train loss (steps)"),
    "top1": ("Top-1 (%)", "top-1 (%)"),
    "top5": ("Top-5 (%)", "top-5 (%)"),
    "dw_title": ("各节点数据等待占比 (预热后)", "Data-wait fraction per node (after warm-up)"),
    "dw": ("等待数据的时间占比 (%)", "time waiting for data (%)"),
    "rank_dots": ("各进程", "ranks"),
    "no_data": ("无数据", "no data"),
}


def _setup(lang: str) -> tuple[Any, str]:
    """pyplot on Agg; Chinese labels only when a CJK font is installed (else English, never tofu)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import font_manager
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False, "font.size": 10})
    if lang == "zh":
        names = {f.name for f in font_manager.fontManager.ttflist}
        cjk = [n for n in ("Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "Source Han Sans SC",
                           "SimHei", "Microsoft YaHei") if n in names]
        if cjk:
            plt.rcParams["font.sans-serif"] = cjk + list(plt.rcParams["font.sans-serif"])
            plt.rcParams["axes.unicode_minus"] = False
        else:
            lang = "en"
    return plt, lang


def _l(key: str, lang: str) -> str:
    zh, en = _LABELS[key]
    return zh if lang == "zh" else en


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _host_of(m: RunMetrics, node: int) -> str:
    for r in m.ranks.values():
        if r.node_rank == node:
            return r.host
    return "?"


def throughput_png(m: RunMetrics, lang: str = "en") -> Optional[bytes]:
    """Stacked areas: each node's img/s (its ranks' img_s_device summed) over steps; rank 0's global line on top."""
    per_node = {n: s for n, s in node_step_throughput(m).items() if s}
    if not per_node:
        return None
    plt, lang = _setup(lang)
    steps = sorted(set.intersection(*(set(s) for s in per_node.values())))
    fig, ax = plt.subplots(figsize=(11, 3.8))
    nodes = sorted(per_node)
    if steps:
        ax.stackplot(steps, [[per_node[n][k] for k in steps] for n in nodes], alpha=0.8,
                     labels=[f"{_l('node', lang)} {n} ({_host_of(m, n)})" for n in nodes])
    rank0 = m.ranks.get(0) or m.ranks[min(m.ranks)]
    g = [(s["step"], s["img_s_global"]) for s in rank0.steps
         if isinstance(s.get("img_s_global"), (int, float)) and isinstance(s.get("step"), int)]
    if g:
        ax.plot([x for x, _ in g], [y for _, y in g], color="black", lw=1.2, ls="--", label=_l("global", lang))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(_l("step", lang))
    ax.set_ylabel(_l("img_s", lang))
    ax.set_title(_l("tp_title", lang), loc="left")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    return _png(fig)


def epochs_png(m: RunMetrics, lang: str = "en") -> Optional[bytes]:
    """Loss (left axis) and top-1/top-5 in % (right axis) over epochs; step losses when there are no epochs."""
    epochs = [e for e in m.epochs if isinstance(e.get("epoch"), (int, float))]
    rank0 = m.ranks.get(0) or m.ranks[min(m.ranks)]
    step_loss = [(s["step"], s["loss"]) for s in rank0.steps
                 if isinstance(s.get("loss"), (int, float)) and isinstance(s.get("step"), int)]
    if not epochs and not step_loss:
        return None
    plt, lang = _setup(lang)
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    if epochs:
        xs = [e["epoch"] for e in epochs]
        for key, style in (("train_loss", "o-"), ("val_loss", "s--")):
            pts = [(x, e.get(key)) for x, e in zip(xs, epochs) if isinstance(e.get(key), (int, float))]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=_l(key, lang), ms=4)
        ax.set_xlabel(_l("epoch", lang))
        if len(set(xs)) < 12:
            ax.set_xticks(sorted(set(xs)))
        ax2 = ax.twinx()
        ax2.spines["right"].set_visible(True)
        ax2.grid(False)
        for key, color in (("top1", "tab:green"), ("top5", "tab:olive")):
            pts = [(x, e.get(key)) for x, e in zip(xs, epochs) if isinstance(e.get(key), (int, float))]
            if pts:
                ax2.plot([p[0] for p in pts], [100 * p[1] for p in pts], "^-", color=color, label=_l(key, lang), ms=5)
        ax2.set_ylim(0, 105)
        ax2.set_ylabel("%")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="center right", fontsize=8, framealpha=0.9)
    else:
        ax.plot([p[0] for p in step_loss], [p[1] for p in step_loss], lw=1, label=_l("step_loss", lang))
        ax.set_xlabel(_l("step", lang))
        ax.legend(fontsize=8)
    ax.set_ylabel(_l("loss", lang))
    ax.set_title(_l("ep_title", lang), loc="left")
    return _png(fig)


def data_wait_png(m: RunMetrics, lang: str = "en") -> Optional[bytes]:
    """One bar per node (mean over its ranks' post-warm-up steps), one dot per rank."""
    from .report_metrics import data_wait

    nodes = sorted({r.node_rank for r in m.ranks.values()})
    per_rank = {r.rank: (r.node_rank, numbers(data_wait(r.steps))) for r in m.ranks.values()}
    if not any(v for _, v in per_rank.values()):
        return None
    plt, lang = _setup(lang)
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    means = []
    for n in nodes:
        vals = [x for node, xs in per_rank.values() if node == n for x in xs]
        means.append(100 * sum(vals) / len(vals) if vals else 0.0)
    xs = list(range(len(nodes)))
    bars = ax.bar(xs, means, color="tab:orange", alpha=0.75, width=0.6)
    for b, v in zip(bars, means):
        ax.annotate(f"{v:.1f}%", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=9,
                    xytext=(0, 2), textcoords="offset points")
    rank_means = []
    for n_i, n in enumerate(nodes):
        mine = [(rank, vals) for rank, (node, vals) in sorted(per_rank.items()) if node == n and vals]
        for j, (rank, vals) in enumerate(mine):
            x = n_i - 0.22 + (0.44 * j / max(len(mine) - 1, 1) if len(mine) > 1 else 0.22)
            y = 100 * sum(vals) / len(vals)
            rank_means.append(y)
            ax.plot(x, y, "o", color="tab:brown", ms=4, label=_l("rank_dots", lang) if not rank_means[:-1] else None)
    ax.set_xticks(xs, [f"{n}\n{_host_of(m, n)}" for n in nodes])
    ax.set_xlim(-0.5 - 0.5 * (len(nodes) < 3), len(nodes) - 0.5 + 0.5 * (len(nodes) < 3))
    ax.set_xlabel(_l("node", lang))
    ax.set_ylabel(_l("dw", lang))
    ax.set_ylim(0, max(max(means + rank_means) * 1.2, 5))
    ax.set_title(_l("dw_title", lang), loc="left")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def all_plots_b64(m: RunMetrics, lang: str = "en") -> dict[str, Optional[str]]:
    """Caption -> base64 PNG (None when the run has no data for it), in page order."""
    out: dict[str, Optional[str]] = {}
    for key, fn in (("tp_title", throughput_png), ("ep_title", epochs_png), ("dw_title", data_wait_png)):
        png = fn(m, lang)
        out[_l(key, lang)] = base64.b64encode(png).decode("ascii") if png else None
    return out
