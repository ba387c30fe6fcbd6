import pytest


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """An empty runs/ for the CLI (ORCHESTRATE_RUNS_DIR), with no default baseline or language set."""
    root = tmp_path / "runs"
    monkeypatch.setenv("ORCHESTRATE_RUNS_DIR", str(root))
    monkeypatch.delenv("ORCHESTRATE_BASELINE", raising=False)
    monkeypatch.delenv("ORCHESTRATE_LANG", raising=False)
    return root
