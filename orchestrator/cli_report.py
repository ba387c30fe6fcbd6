"""``orchestrate report``, ``orchestrate runs`` and ``orchestrate compare`` (registered by cli.py).

User mistakes raise OrchestrateError subclasses; the main group prints them on one line with their
exit code. ``report`` exits 1 when the verdict fails so a CI pipeline can gate on it.
matplotlib is imported only when an HTML report is written.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import click

from .errors import UsageError

_LANG = click.Choice(["zh", "en"])


def _default_lang() -> str:
    lang = os.environ.get("ORCHESTRATE_LANG", "zh")
    return lang if lang in ("zh", "en") else "zh"


def _tty() -> bool:
    return sys.stdout.isatty()


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _print_table(headers: list[str], rows: list[list[str]], title: str = "") -> None:
    """rich on a terminal; a Markdown table when piped, so the output can be pasted or parsed."""
    if _tty():
        from rich.table import Table

        t = Table(title=title or None, title_justify="left")
        for j, h in enumerate(headers):
            t.add_column(h, no_wrap=j == 0, overflow="fold")  # the first column is a run id / field name
        for r in rows:
            t.add_row(*r)
        _console().print(t)
        return
    if title:
        click.echo(f"## {title}\n")
    click.echo("|" + "|".join(headers) + "|")
    click.echo("|" + "|".join("--" for _ in headers) + "|")
    for r in rows:
        click.echo("|" + "|".join(c.replace("|", "\\|") for c in r) + "|")


@click.command("report")
@click.argument("run_id", required=False)
@click.option("--baseline", "baseline_ref", metavar="FILE|runs/<id>|RUN_ID",
              help="Reference to judge against: a baselines/*.yaml file (or its name), an earlier run folder or "
                   "run id. Default: $ORCHESTRATE_BASELINE or the job's `baseline` key; none -> no verdict.")
@click.option("--format", "fmt", type=click.Choice(["md", "json", "html"]), default="md", show_default=True,
              help="md: rich tables on a terminal, Markdown when piped; json: schema in docs/report.md; "
                   "html: self-contained page with plots.")
@click.option("--lang", type=_LANG, default=_default_lang, show_default="$ORCHESTRATE_LANG or zh",
              help="Language of the sheet (zh: the seed's table).")
@click.option("--acc-tolerance", type=click.FloatRange(min=0), default=0.01, show_default=True,
              help="Largest accepted relative accuracy error |acc - ref| / ref (0.01 = 1%).")
@click.option("--scaling-from", "scaling_from", metavar="RUN_1",
              help="A smaller run of the same job: scaling efficiency = img/s / (k x img/s of RUN_1), "
                   "k = device count ratio.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where --format html writes (default runs/<id>/report.html).")
def report(run_id: Optional[str], baseline_ref: Optional[str], fmt: str, lang: str,
           acc_tolerance: float, scaling_from: Optional[str], output: Optional[Path]) -> None:
    """The result sheet of RUN_ID (default: the latest run): accuracy and throughput against a baseline,
    with a verdict. Exits 1 when the verdict fails."""
    from .baselines import resolve_baseline
    from .report import build_report, default_baseline_ref, load_metrics
    from .runs import resolve_run

    if output is not None and fmt != "html":
        raise UsageError("-o/--output is for --format html (md and json go to stdout)")
    rd = resolve_run(run_id)
    meta = rd.load()
    ref = baseline_ref or default_baseline_ref(meta)
    baseline = resolve_baseline(ref) if ref else None
    one = resolve_run(scaling_from) if scaling_from else None
    metrics = load_metrics(rd)
    doc = build_report(rd, baseline, acc_tolerance, lang, scaling_from=one, metrics=metrics)

    if fmt == "json":
        click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
    elif fmt == "html":
        from .plots import all_plots_b64
        from .report_render import to_html

        path = output or (rd.path / "report.html")
        page = to_html(doc, lang, all_plots_b64(metrics, lang))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(page, encoding="utf-8")
        except OSError as err:
            raise UsageError(f"cannot write {path}: {err.strerror}") from None
        click.echo(f"wrote {path}")
        click.echo(doc["conclusion"])
    elif _tty():
        from .report_render import print_rich

        print_rich(doc, lang, _console())
    else:
        from .report_render import to_markdown

        click.echo(to_markdown(doc, lang))
    if doc["verdict"] == "fail":
        # sys.exit, not ctx.exit: cli.main runs click with standalone_mode=False, where ctx.exit(1)
        # would only be a return value and the process would exit 0.
        sys.exit(1)


@click.command("runs")
@click.option("--baseline", "baseline_ref", metavar="FILE|runs/<id>|RUN_ID",
              help="Judge every run against this (default: each run's default baseline, if any).")
@click.option("--acc-tolerance", type=click.FloatRange(min=0), default=0.01, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--lang", type=_LANG, default=_default_lang, show_default="$ORCHESTRATE_LANG or zh")
def runs(baseline_ref: Optional[str], acc_tolerance: float, fmt: str, lang: str) -> None:
    """Past runs, oldest first: id, job, hosts, status, top-1, img/s, verdict."""
    from .baselines import resolve_baseline
    from .ledger import common_baseline, ledger_rows, ledger_table

    if baseline_ref:
        resolve_baseline(baseline_ref)  # a bad --baseline is the user's error, not a blank column
    rows = ledger_rows(baseline_ref=baseline_ref, tolerance=acc_tolerance)
    if fmt == "json":
        click.echo(json.dumps({"schema_version": 1, "runs": rows}, ensure_ascii=False, indent=2))
        return
    from .runs import runs_root

    if not rows:
        click.echo(f"no runs under {runs_root()}/ (start one with `orchestrate up JOB.yaml`)")
        return
    headers, body = ledger_table(rows, lang)
    vs = common_baseline(rows)
    _print_table(headers, body, title=f"{len(rows)} runs under {runs_root()}/" + (f", verdict vs {vs}" if vs else ""))


@click.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--lang", type=_LANG, default=_default_lang, show_default="$ORCHESTRATE_LANG or zh")
def compare(run_a: str, run_b: str, fmt: str, lang: str) -> None:
    """Two runs side by side, with the change from RUN_A to RUN_B."""
    from .ledger import compare_docs, compare_table
    from .runs import resolve_run

    cmp = compare_docs(resolve_run(run_a), resolve_run(run_b), lang)
    if fmt == "json":
        click.echo(json.dumps(cmp, ensure_ascii=False, indent=2))
        return
    _print_table(*compare_table(cmp))
