"""Each user mistake is one clear line (exit 2, no traceback); an unreadable image is a
warning and a counter, never a crash."""
import importlib.util
import json
import shutil

import pytest
import torch

from trainer import devices
from trainer.train import main

from conftest import read_metrics, trainer

TINY = ["--model", "seresnet18", "--img-size", 32, "--batch-size", 8, "--epochs", 1,
        "--workers", 0, "--device", "cpu", "--log-interval", 2, "--warmup-steps", 1]


def run_main(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("trainer: error: ")
    return lines[0]


def test_missing_data_dir_subprocess_is_one_line(tmp_path):
    proc = trainer(["--data-dir", tmp_path / "nowhere", *TINY, "--output-dir", tmp_path])
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no 'train/' folder" in one_line_error(proc.stderr)


def test_debug_variable_shows_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRAINER_DEBUG", "1")
    code, _, err = run_main(["--data-dir", tmp_path, *TINY], capsys)
    assert code == 2 and "Traceback" in err


def test_missing_val_split(tmp_path, capsys):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "x.jpg").write_bytes(b"")
    code, _, err = run_main(["--data-dir", tmp_path, *TINY], capsys)
    assert code == 2 and "no 'val/' folder" in one_line_error(err)


def test_empty_class_folder(tmp_path, digits_dir, capsys):
    shutil.copytree(digits_dir, tmp_path / "d")
    shutil.rmtree(tmp_path / "d" / "train" / "digit3")
    (tmp_path / "d" / "train" / "digit3").mkdir()
    code, _, err = run_main(["--data-dir", tmp_path / "d", *TINY], capsys)
    assert code == 2
    assert "digit3: empty class folder" in one_line_error(err)


def test_unknown_model(tmp_path, capsys):
    code, _, err = run_main(["--synthetic", *TINY, "--model", "seresnet19x"], capsys)
    line = one_line_error(err)
    assert code == 2 and "unknown model 'seresnet19x'" in line and "timm.list_models" in line


@pytest.mark.skipif(importlib.util.find_spec("torch_mlu") is not None,
                    reason="torch_mlu is installed here")
def test_mlu_without_torch_mlu(tmp_path, capsys):
    code, _, err = run_main(["--synthetic", *TINY, "--device", "mlu"], capsys)
    assert code == 2 and "torch_mlu is not installed" in one_line_error(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_cuda_without_gpu(tmp_path, capsys):
    code, _, err = run_main(["--synthetic", *TINY, "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda" in one_line_error(err)


def test_more_processes_than_devices(tmp_path, monkeypatch, capsys):
    """As torchrun would start the third process of 3 on a node with 2 GPUs."""
    class TwoGpus:
        def mlu(self):
            return None

        def cuda(self):
            return "cuda", 2

    monkeypatch.setattr(devices, "SystemProbe", TwoGpus)
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    code, _, err = run_main(["--synthetic", *TINY, "--device", "auto"], capsys)
    assert code == 2
    assert "3 processes on this node but only 2 cuda device(s)" in one_line_error(err)


@pytest.mark.parametrize("args, msg", [
    ([], "exactly one of --data-dir DIR or --synthetic"),
    (["--synthetic", "--pretrained"], "--pretrained needs --checkpoint"),
    (["--synthetic", "--pretrained", "--checkpoint", "/nonexistent.pth"], "no such file"),
    (["--synthetic", "--resume", "/nonexistent.pth"], "no such file on rank 0"),
])
def test_argument_mistakes(tmp_path, capsys, args, msg):
    code, _, err = run_main([*args, *TINY, "--output-dir", tmp_path], capsys)
    assert code == 2 and msg in one_line_error(err)


def test_corrupt_jpeg_is_skipped_and_counted(tmp_path, digits_dir, capfd):
    data = tmp_path / "d"
    for split in ("train", "val"):
        for cls in ("digit0", "digit1"):
            shutil.copytree(digits_dir / split / cls, data / split / cls)
    (data / "train" / "digit0" / "zz-corrupt.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (data / "val" / "digit1" / "zz-truncated.jpg").write_bytes(
        next((digits_dir / "val" / "digit1").iterdir()).read_bytes()[:100])
    # a train set of whole batches: drop_last cannot leave the corrupt file out
    train_files = sorted((data / "train" / "digit1").iterdir())
    n_train = sum(1 for _ in (data / "train").rglob("*.jpg"))
    for f in train_files[:n_train % 16]:
        f.unlink()
    n_val = sum(1 for _ in (data / "val").rglob("*.jpg"))
    out_dir = tmp_path / "out"
    code = main([str(a) for a in ["--data-dir", data, *TINY, "--batch-size", 16,
                                  "--output-dir", out_dir]])
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "skipping unreadable image" in err and "zz-corrupt.jpg" in err
    assert "zz-truncated.jpg" in err
    assert f"({n_val - 1} images)" in out  # the truncated val image is not counted
    epoch = [r for r in read_metrics(out_dir / "metrics-rank0.jsonl") if r["type"] == "epoch"]
    assert epoch[-1]["unreadable_images"] == 2


def test_output_dir_defaults_to_orchestrate_env(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ORCHESTRATE_OUTPUT_DIR", str(tmp_path / "mounted"))
    code, out, err = run_main(["--synthetic", *TINY, "--steps-per-epoch", 3], capsys)
    assert code == 0, err
    recs = read_metrics(tmp_path / "mounted" / "metrics-rank0.jsonl")
    assert recs[-1]["type"] == "summary" and recs[-1]["data"] == "synthetic"
    assert (tmp_path / "mounted" / "checkpoint-last.pth").is_file()
    assert json.dumps(recs)  # plain JSON types only
