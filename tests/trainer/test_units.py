"""Small pure pieces: sharding, collate, schedule, metrics paths, throughput intervals."""
import torch
from torch.utils.data.distributed import DistributedSampler

from trainer.data import EpochSeededSampler, ShardSampler, collate_eval, collate_train
from trainer.metrics import Interval, metrics_path
from trainer.optim import WarmupCosine, param_groups


def test_eval_shards_cover_every_index_exactly_once():
    n, world = 355, 4  # DistributedSampler would pad 355 to 356
    seen = sorted(i for r in range(world) for i in ShardSampler(n, r, world))
    assert seen == list(range(n))
    padded = [i for r in range(world) for i in DistributedSampler(range(n), world, r,
                                                                   shuffle=False)]
    assert len(padded) > n  # the double counting the ShardSampler avoids


def test_train_keys_depend_only_on_seed_epoch_index():
    def keys(epoch):
        s = EpochSeededSampler(DistributedSampler(range(10), 2, 1, seed=7), seed=7)
        s.set_epoch(epoch)
        return list(s)

    assert keys(3) == keys(3) and keys(3) != keys(4)


def test_collate_train_refills_unreadable_samples():
    ok = (torch.zeros(3, 4, 4), 1)
    x, y, bad = collate_train([ok, None, (torch.ones(3, 4, 4), 2), None])
    assert x.shape[0] == 4 and bad == 2 and set(y.tolist()) == {1, 2}


def test_collate_eval_drops_unreadable_samples():
    x, y, bad = collate_eval([None, (torch.zeros(3, 4, 4), 5)])
    assert x.shape[0] == 1 and bad == 1
    assert collate_eval([None]) == (None, None, 1)


def test_warmup_cosine_shape():
    f = WarmupCosine(total_steps=100, warmup_steps=10, min_factor=0.0)
    assert f(0) < f(5) < f(10) == 1.0
    assert f(55) < f(10) and abs(f(100)) < 1e-9


def test_no_weight_decay_on_norm_and_bias():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                            torch.nn.Linear(4, 2))
    no_decay, decay = param_groups(m, 0.1)
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 0.1
    assert all(p.ndim <= 1 for p in no_decay["params"]) and len(no_decay["params"]) == 4
    assert all(p.ndim > 1 for p in decay["params"]) and len(decay["params"]) == 2


def test_metrics_paths():
    assert metrics_path(None, "/o", 3) == "/o/metrics-rank3.jsonl"
    assert metrics_path("/m/x-{rank}.jsonl", "/o", 2) == "/m/x-2.jsonl"
    assert metrics_path("/m/x.jsonl", "/o", 0) == "/m/x.jsonl"
    assert metrics_path("/m/x.jsonl", "/o", 1) == "/m/x-rank1.jsonl"


def test_interval_rates():
    iv = Interval(now=10.0)
    assert iv.rates(11.0) == (None, None)
    iv.add(64, 0.5)
    iv.add(64, 0.5)
    assert iv.rates(12.0) == (64.0, 0.5)
