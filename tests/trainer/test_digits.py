"""End to end on real data: sklearn's handwritten digits as JPEG class folders, a small
SE-ResNet, 2 CPU processes under torchrun (gloo) - what the orchestrator launches."""
import statistics

import pytest

from conftest import DIGITS_RECIPE, read_metrics, torchrun

EPOCHS = 6
STOP_AT = 4


@pytest.fixture(scope="module")
def runs(digits_dir, tmp_path_factory):
    """full: EPOCHS epochs in one go. split: stopped after STOP_AT epochs, then resumed."""
    full = tmp_path_factory.mktemp("full")
    split = tmp_path_factory.mktemp("split")
    base = ["--data-dir", digits_dir, *DIGITS_RECIPE, "--epochs", EPOCHS]
    out_full = torchrun([*base, "--output-dir", full])
    out_first = torchrun([*base, "--output-dir", split, "--stop-after-epoch", STOP_AT])
    out_resumed = torchrun([*base, "--output-dir", split, "--resume", "auto"])
    return {"full": (full, out_full), "split": (split, out_first, out_resumed)}


def records(d, rank=0, kind=None):
    recs = read_metrics(d / f"metrics-rank{rank}.jsonl")
    return [r for r in recs if kind is None or r["type"] == kind]


def test_reaches_90_percent_top1_on_val(runs):
    d, proc = runs["full"]
    final = records(d, kind="epoch")[-1]
    assert final["epoch"] == EPOCHS - 1
    assert final["top1"] >= 0.90, proc.stdout
    assert 0.0 <= final["top1"] <= final["top5"] <= 1.0
    assert records(d, kind="summary")[0]["top1"] == final["top1"]


def test_evaluation_counts_every_val_image_once(runs, digits_dir):
    n_val = sum(1 for _ in (digits_dir / "val").rglob("*.jpg"))
    assert n_val % 2 == 1  # odd: a padded DistributedSampler would count one twice
    _, proc = runs["full"]
    assert proc.stdout.count(f"({n_val} images)") == EPOCHS


def test_loss_falls(runs):
    d, _ = runs["full"]
    epochs = records(d, kind="epoch")
    assert epochs[-1]["train_loss"] < 0.6 * epochs[0]["train_loss"]
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]
    steps = records(d, kind="step")
    assert statistics.fmean(s["loss"] for s in steps[-4:]) < statistics.fmean(
        s["loss"] for s in steps[:4])


def test_resume_continues_where_it_stopped(runs):
    split, first, resumed = runs["split"]
    assert f"epoch {STOP_AT - 1} done" in first.stdout and f"epoch {STOP_AT} " not in first.stdout
    assert f"resuming from {split}/checkpoint-last.pth (epoch {STOP_AT - 1} done" in resumed.stdout
    assert "epoch 0 " not in resumed.stdout
    # the file holds both runs: epochs 0..EPOCHS-1 once each, steps strictly increasing
    epochs = records(split, kind="epoch")
    assert [e["epoch"] for e in epochs] == list(range(EPOCHS))
    steps = [s["step"] for s in records(split, kind="step")]
    assert steps == sorted(set(steps))
    assert not list(split.glob("*.tmp*"))  # atomic writes leave nothing behind


def test_resumed_run_matches_uninterrupted_run(runs):
    full, _ = runs["full"]
    split = runs["split"][0]
    a, b = records(full, kind="epoch"), records(split, kind="epoch")
    for ea, eb in zip(a, b):
        assert eb["train_loss"] == pytest.approx(ea["train_loss"], rel=1e-3, abs=1e-3)
        assert eb["val_loss"] == pytest.approx(ea["val_loss"], rel=1e-3, abs=1e-3)
        assert abs(eb["top1"] - ea["top1"]) <= 0.01
    sa, sb = records(full, kind="summary")[-1], records(split, kind="summary")[-1]
    assert (sa["steps"], sa["epochs"]) == (sb["steps"], sb["epochs"])


def test_summary_matches_step_records(runs):
    d, _ = runs["full"]
    steps = records(d, kind="step")
    summary = records(d)[-1]
    assert summary["type"] == "summary"
    measured = [s["img_s_global"] for s in steps if s["img_s_global"] is not None]
    assert measured and summary["img_s_mean"] == pytest.approx(statistics.fmean(measured))
    assert summary["img_s_median"] == pytest.approx(statistics.median(measured))
    assert summary["steps"] == steps[-1]["step"]
    assert summary["epochs"] == EPOCHS == steps[-1]["epoch"] + 1
    assert (summary["world_size"], summary["device_count"], summary["nnodes"]) == (2, 2, 1)
    assert (summary["device_kind"], summary["precision"]) == ("cpu", "fp32")
    assert summary["global_batch"] == 2 * 32 and summary["model"] == "seresnet18"
    assert summary["data"].endswith("digits0") or "digits" in summary["data"]
    assert summary["total_time_s"] > 0 and summary["torch_version"]


def test_step_records_follow_the_contract(runs):
    d, _ = runs["full"]
    keys = {"type", "step", "epoch", "rank", "world_size", "loss", "lr", "img_s_global",
            "img_s_device", "data_wait_frac", "peak_mem_bytes", "time"}
    for rank in (0, 1):
        steps = records(d, rank, "step")
        assert steps and all(set(s) == keys and s["rank"] == rank for s in steps)
        warm = [s for s in steps if s["step"] <= 5]  # --warmup-steps 5
        assert warm and all(s["img_s_global"] is None and s["img_s_device"] is None
                            for s in warm)
        later = [s for s in steps if s["step"] > 5]
        assert all(s["img_s_device"] > 0 and 0 <= s["data_wait_frac"] <= 1 for s in later)
        assert records(d, rank, "rank_summary")
    r0 = {s["step"]: s for s in records(d, 0, "step")}
    for s in records(d, 1, "step"):  # the global figure is the sum over both ranks
        if s["img_s_global"] is not None:
            assert s["img_s_global"] == pytest.approx(r0[s["step"]]["img_s_global"])
            assert s["img_s_global"] == pytest.approx(
                s["img_s_device"] + r0[s["step"]]["img_s_device"], rel=1e-6)
    assert not records(d, 1, "summary")  # the summary is rank 0's alone
