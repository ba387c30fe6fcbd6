"""One training epoch and one evaluation pass, with the measurements the report needs."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F

from . import compat, devices, dist
from .metrics import Interval


@dataclass
class State:
    """Mutable progress shared by the loops (also what a checkpoint records)."""
    global_step: int = 0
    steps_this_run: int = 0
    bad_images: int = 0  # this rank's unreadable images, train + eval
    step_records: list = field(default_factory=list)


@dataclass
class Ctx:
    """Everything the loops need that does not change during the run."""
    args: object
    topo: object
    dev: devices.DeviceChoice
    device: object
    precision: str
    model: torch.nn.Module  # DDP-wrapped (or not) training module
    eval_model: torch.nn.Module
    optimizer: object
    scheduler: object
    scaler: Optional[object]
    criterion: object
    writer: object
    stats: object
    steps_per_epoch: int
    total_steps: int


def _to_device(ctx: Ctx, x, y):
    x = x.to(ctx.device, non_blocking=True)
    y = y.to(ctx.device, non_blocking=True)
    if ctx.args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def train_one_epoch(ctx: Ctx, state: State, loader, epoch: int) -> float:
    """Returns the global mean training loss of the epoch."""
    args, topo = ctx.args, ctx.topo
    ctx.model.train()
    loader.set_epoch(epoch)
    devices.synchronize(ctx.dev)
    interval = Interval(time.perf_counter())
    loss_sum = torch.zeros((), device=ctx.device)  # summed on device: no per-step host sync
    loss_n = 0
    epoch_loss_sum = torch.zeros((), device=ctx.device)
    it = iter(loader)
    for i in range(ctx.steps_per_epoch):
        t0 = time.perf_counter()
        x, y, bad = next(it)
        wait = time.perf_counter() - t0
        state.bad_images += bad
        x, y = _to_device(ctx, x, y)
        with compat.autocast(ctx.dev, ctx.precision):
            out = ctx.model(x)
            loss = ctx.criterion(out, y)
        ctx.optimizer.zero_grad(set_to_none=True)
        if ctx.scaler is not None:
            ctx.scaler.scale(loss).backward()
            ctx.scaler.step(ctx.optimizer)
            ctx.scaler.update()
        else:
            loss.backward()
            ctx.optimizer.step()
        ctx.scheduler.step()
        state.global_step += 1
        state.steps_this_run += 1
        if state.steps_this_run == 1:
            dist.announce(topo, "first-step")
        interval.add(x.shape[0], wait)
        loss_sum += loss.detach().float()
        epoch_loss_sum += loss.detach().float()
        loss_n += 1
        if state.steps_this_run == args.warmup_steps:
            devices.synchronize(ctx.dev)  # throughput counts only what comes after warm-up
            interval.reset(time.perf_counter())
        last = i == ctx.steps_per_epoch - 1
        if state.global_step % args.log_interval == 0 or last:
            _log_step(ctx, state, epoch, interval, loss_sum, loss_n)
            loss_sum.zero_()
            loss_n = 0
    del it
    total = torch.tensor([epoch_loss_sum.item(), float(ctx.steps_per_epoch)], device=ctx.device)
    total = dist.all_reduce_sum(total)
    return float(total[0] / total[1])


def _log_step(ctx: Ctx, state: State, epoch: int, interval: Interval, loss_sum, loss_n) -> None:
    devices.synchronize(ctx.dev)
    now = time.perf_counter()
    measured = state.steps_this_run > ctx.args.warmup_steps
    img_s, wait_frac = interval.rates(now) if measured else (None, None)
    t = torch.tensor([float(loss_sum.item()), float(loss_n), img_s or 0.0], device=ctx.device,
                     dtype=torch.float64 if ctx.dev.type != "mlu" else torch.float32)
    t = dist.all_reduce_sum(t)
    interval.reset(time.perf_counter())
    rec = {"type": "step", "step": state.global_step, "epoch": epoch, "rank": ctx.topo.rank,
           "world_size": ctx.topo.world_size, "loss": float(t[0] / t[1]),
           "lr": float(ctx.optimizer.param_groups[0]["lr"]),
           "img_s_global": float(t[2]) if img_s is not None else None,
           "img_s_device": img_s, "data_wait_frac": wait_frac,
           "peak_mem_bytes": devices.peak_memory_bytes(ctx.dev), "time": time.time()}
    ctx.writer.write(rec)
    ctx.stats.add_step(rec)
    if ctx.topo.is_main:
        line = (f"epoch {epoch} step {state.global_step}/{ctx.total_steps} "
                f"loss {rec['loss']:.4f} lr {rec['lr']:.4g}")
        if img_s is not None:
            line += (f" img/s {rec['img_s_global']:.1f} ({img_s:.1f}/device)"
                     f" data-wait {wait_frac:.1%}")
        else:
            line += " img/s (warm-up)"
        if rec["peak_mem_bytes"] is not None:
            line += f" peak-mem {rec['peak_mem_bytes'] / 2 ** 20:.0f} MiB"
        print(line, flush=True)
    elif ctx.topo.node_leader:
        # every other node shows that it trains too: its own devices' throughput
        line = f"node {ctx.topo.node_rank}: epoch {epoch} step {state.global_step}/{ctx.total_steps} loss {rec['loss']:.4f}"
        if img_s is not None:
            line += f" img/s ~{img_s * ctx.topo.local_world_size:.1f} on this node ({img_s:.1f}/device)"
        print(line, flush=True)


@torch.no_grad()
def evaluate(ctx: Ctx, state: State, loader):
    """(val_loss, top1, top5, images counted): sums over ranks of an unpadded sharding."""
    ctx.eval_model.eval()
    dtype = torch.float64 if ctx.dev.type != "mlu" else torch.float32  # CNCL: no float64
    sums = torch.zeros(4, dtype=dtype, device=ctx.device)  # loss, top1, top5, images
    bad = 0
    for x, y, n_bad in loader:
        bad += n_bad
        if x is None:
            continue
        x, y = _to_device(ctx, x, y)
        with compat.autocast(ctx.dev, ctx.precision):
            out = ctx.eval_model(x)
        out = out.float()
        hit = out.topk(min(5, out.shape[1]), dim=1).indices.eq(y.unsqueeze(1))
        sums += torch.stack([F.cross_entropy(out, y, reduction="sum"),
                             hit[:, :1].sum(), hit.any(dim=1).sum(),
                             torch.tensor(y.shape[0], device=ctx.device)]).to(dtype)
    state.bad_images += bad
    sums = dist.all_reduce_sum(sums).cpu()
    n = int(sums[3])
    if n == 0:
        return None, None, None, 0
    return float(sums[0] / n), float(sums[1] / n), float(sums[2] / n), n
