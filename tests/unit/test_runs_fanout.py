"""runs/ paths stay inside runs/<run_id>/ whatever a host is called; fan-out names every failing host."""
import threading

import pytest

from orchestrator.errors import ConnectError, HostErrors, UsageError
from orchestrator.fanout import fanout
from orchestrator.runs import RunDir, list_runs, resolve_run, run_dir, safe_component


@pytest.mark.parametrize("host", ["../../etc", "/abs/path", "..", "a/b", "x\x00y", ""])
def test_log_paths_stay_inside_the_run(tmp_path, host):
    rd = RunDir(tmp_path, "20261204-120000-abcd")
    p = rd.log_file(0, host).resolve()
    assert str(p).startswith(str(rd.path.resolve()) + "/")
    assert p.parent == (rd.path / "logs").resolve()
    m = rd.metrics_dir(1, host).resolve()
    assert m.parent == (rd.path / "metrics").resolve()
    assert safe_component(host) not in ("", ".", "..")


def test_run_ids_validated_and_latest(tmp_path):
    with pytest.raises(UsageError, match="not a run id"):
        run_dir("../x", tmp_path)
    with pytest.raises(UsageError, match="no runs under"):
        resolve_run(None, tmp_path)
    for rid in ("20261204-120000-aaaa", "20261204-130000-bbbb"):
        RunDir(tmp_path, rid).save({"run_id": rid})
    assert [r.run_id for r in list_runs(tmp_path)] == ["20261204-120000-aaaa", "20261204-130000-bbbb"]
    assert resolve_run(None, tmp_path).run_id == "20261204-130000-bbbb"


def test_fanout_runs_in_parallel_and_names_every_failure():
    barrier = threading.Barrier(3, timeout=30)  # only passes if all three run at once

    def work(h):
        barrier.wait()
        if h != "ok":
            raise ConnectError(f"{h}: refused")
        return h.upper()

    with pytest.raises(HostErrors) as e:
        fanout([("ok", "ok"), ("bad1", "bad1"), ("bad2", "bad2")], work, "connect")
    msg = str(e.value)
    assert "connect failed on 2 host(s) [bad1, bad2]" in msg and "bad1: refused" in msg
    barrier.reset()
    results, failures = fanout([("ok", "ok"), ("bad1", "bad1"), ("x", "ok")], work, "c", raise_errors=False)
    assert results == {"ok": "OK", "x": "OK"} and list(failures) == ["bad1"]
