"""Fixtures for the trainer tests: real handwritten digits (sklearn) as ImageNet-style JPEGs,
and a helper that runs the trainer under torchrun on the CPU."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.digits import DIGIT_PX, write_digits

REPO = Path(__file__).resolve().parents[2]
@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    return write_digits(tmp_path_factory.mktemp("digits"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trainer_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ORCHESTRATE_OUTPUT_DIR", None)
    env.update(extra)
    return env


def torchrun(args, nproc: int = 2, env=None, check=True) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node N -m trainer.train ARGS` as the orchestrator would run it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "trainer.train", *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, env=env or trainer_env(), capture_output=True,
                          text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def trainer(args, env=None) -> subprocess.CompletedProcess:
    """`python -m trainer.train ARGS` as a single process (no torchrun)."""
    return subprocess.run([sys.executable, "-m", "trainer.train", *map(str, args)], cwd=REPO,
                          env=env or trainer_env(), capture_output=True, text=True)


def read_metrics(path: Path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# Small and quick on 2 CPU cores; digits are not flip-invariant, and tiny crops lose them.
DIGITS_RECIPE = ["--model", "seresnet18", "--img-size", DIGIT_PX, "--batch-size", 32,
                 "--workers", 1, "--scale", 0.5, 1.0, "--hflip", 0, "--color-jitter", 0,
                 "--crop-pct", 1.0, "--lr", 0.1, "--warmup-epochs", 1, "--weight-decay", 5e-4,
                 "--log-interval", 5, "--warmup-steps", 5, "--device", "cpu"]
