"""What the terminal shows: per-host progress (plain lines when not a terminal) and masked secrets."""
import io

from orchestrator.console import Console, HostProgress, Masker


def test_plain_progress_lines_every_tenth(capsys):
    console = Console()
    with HostProgress(console, "image", ["tb1", "tb2"], live=False) as p:
        for done in range(0, 101, 5):
            p.update("tb1", done * 1_000_000, 100_000_000)
        p.note("tb2", "loading /x.tar.gz on the host")
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("[tb1] image:")]
    assert [ln.split("(")[-1] for ln in lines] == [f"{k * 10}%)" for k in range(11)]
    assert "[tb2] loading /x.tar.gz on the host" in err


def test_live_progress_renders_bytes_for_each_host():
    buf = io.StringIO()
    console = Console()
    console.err = __import__("rich.console", fromlist=["Console"]).Console(file=buf, force_terminal=True, width=120)
    with HostProgress(console, "image", ["tb1", "tb2"], live=True) as p:
        p.update("tb1", 50_000_000, 100_000_000)
        p.update("tb2", 100_000_000, 100_000_000)
    out = buf.getvalue()
    assert "[tb1] image" in out and "[tb2] image" in out and "100.0 MB" in out


def test_masker_masks_text_bytes_and_objects():
    m = Masker(["hunter2", "", "x-very-long-token"])
    assert m.mask("a hunter2 b x-very-long-token") == "a *** b ***"
    assert m.mask_bytes(b"hunter2!") == b"***!"
    assert m.mask_obj({"env": ["T=hunter2"]}) == {"env": ["T=***"]}
