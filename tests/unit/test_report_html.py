"""The HTML report: self-contained, plots embedded, opens in a browser (screenshot when chromium is installed)."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "report"))
from report_fakerun import make_group, make_run  # noqa: E402

from orchestrator.plots import data_wait_png, epochs_png, throughput_png  # noqa: E402
from orchestrator.report import load_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_html_is_self_contained_with_three_plots(runs, lang):
    fake = make_run(runs, top1=[0.5, 0.7, 0.8])
    res = CliRunner().invoke(make_group(), ["report", fake.rd.run_id, "--format", "html", "--lang", lang,
                                            "--baseline", str(REPO / "baselines" / "timm_seresnet50_ra2.yaml")])
    assert res.exit_code == 0, res.output
    path = fake.rd.path / "report.html"
    assert res.output.splitlines()[0] == f"wrote {path}"
    page = path.read_text(encoding="utf-8")
    pngs = _pngs(page)
    assert len(pngs) == 3 and all(p.startswith(PNG_MAGIC) and len(p) > 5000 for p in pngs)
    assert not re.search(r'(src|href)="(?!data:)', page), "the page must not load anything from outside"
    assert ("达标" if lang == "zh" else "pass") in page and "acc=0.8026" in page


def test_html_output_path(runs, tmp_path):
    fake = make_run(runs)
    out = tmp_path / "sub" / "r.html"
    res = CliRunner().invoke(make_group(), ["report", fake.rd.run_id, "--format", "html", "-o", str(out)])
    assert res.exit_code == 0 and out.is_file() and not (fake.rd.path / "report.html").exists()


def test_plots_without_data_are_skipped(runs):
    fake = make_run(runs, hosts=("a",), nproc=1, steps_per_epoch=2, epochs=1, warmup=5)  # never past warm-up
    m = load_metrics(fake.rd)
    assert throughput_png(m) is None
    assert epochs_png(m).startswith(PNG_MAGIC)
    assert data_wait_png(m).startswith(PNG_MAGIC)  # falls back to warm-up steps' data wait


def test_matplotlib_stays_lazy():
    code = ("import sys, orchestrator.cli_report, orchestrator.report, orchestrator.ledger; "
            "import orchestrator.report_render; "
            "bad = [m for m in ('matplotlib', 'torch', 'timm', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium(runs, tmp_path):
    fake = make_run(runs, hosts=("alpha", "beta"), nproc=2, top1=[0.3, 0.6, 0.80])
    res = CliRunner().invoke(make_group(), ["report", fake.rd.run_id, "--format", "html", "--lang", "zh",
                                            "--baseline", "timm_seresnet50_ra2"])
    assert res.exit_code == 0, res.output
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,1600",
         (fake.rd.path / "report.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=90)
    assert shot.is_file(), proc.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC)
    # a blank page compresses to a few KB; tables and three plots do not
    assert len(data) > 60_000, len(data)
    keep = REPO / "output"
    if keep.is_dir():  # handy when looking at it by hand
        shutil.copy(shot, keep / "report_screenshot.png")
