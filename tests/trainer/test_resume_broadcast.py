"""Multi-node resume: ranks that cannot see rank 0's checkpoint receive it from rank 0."""
import sys

import pytest

from conftest import REPO, free_port, trainer_env
import subprocess


@pytest.mark.parametrize("rank1_has", ["nothing", "stale"])
def test_rank_without_the_file_receives_it(tmp_path, rank1_has):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           str(REPO / "tests" / "trainer" / "resume_broadcast_worker.py"), str(tmp_path),
           rank1_has]
    proc = subprocess.run(cmd, cwd=REPO, env=trainer_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rank 0 ok" in proc.stdout and "rank 1 ok" in proc.stdout
    assert "sent to 1 rank(s) that could not see it" in proc.stdout
