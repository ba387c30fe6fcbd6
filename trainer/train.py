"""SE-ResNet (any timm classifier) training under torchrun: `python -m trainer.train ...`.

Reads RANK / LOCAL_RANK / WORLD_SIZE from torchrun, writes human lines on rank 0 and a
JSON-lines metrics file per rank (see trainer/metrics.py and docs/trainer.md).
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
import traceback

from .errors import UserError

PRECISIONS = ("fp32", "fp16", "bf16")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer.train",
                                description="timm + DDP image-classification trainer")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="seresnet50", help="any timm model name")
    g.add_argument("--num-classes", type=int, default=None,
                   help="default: number of class folders in train/ (1000 with --synthetic)")
    g.add_argument("--pretrained", action="store_true",
                   help="start from weights in --checkpoint (a local file; never downloaded)")
    g.add_argument("--checkpoint", default=None, help="local weights file for --pretrained")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None, help="ImageNet layout: train/<class>/*, val/<class>/*")
    g.add_argument("--synthetic", action="store_true", help="random tensors made on the device")
    g.add_argument("--img-size", type=int, default=224)
    g.add_argument("--workers", type=int, default=None,
                   help="loader processes per rank (default: cores / local processes, max 8)")
    g.add_argument("--prefetch", type=int, default=2, help="batches prefetched per worker")
    g.add_argument("--no-pin-memory", action="store_true")
    g.add_argument("--scale", type=float, nargs=2, default=(0.08, 1.0),
                   help="RandomResizedCrop area range")
    g.add_argument("--hflip", type=float, default=0.5)
    g.add_argument("--color-jitter", type=float, default=0.4)
    g.add_argument("--crop-pct", type=float, default=0.875, help="eval centre-crop fraction")
    g.add_argument("--interpolation", default="bicubic")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=100)
    g.add_argument("--batch-size", type=int, default=128, help="per process")
    g.add_argument("--eval-batch-size", type=int, default=None)
    g.add_argument("--steps-per-epoch", type=int, default=0,
                   help="cap on steps per epoch (0: the whole train set; --synthetic: 100)")
    g.add_argument("--stop-after-epoch", type=int, default=None,
                   help="exit cleanly after this many epochs in total (resume later)")
    g.add_argument("--no-eval", action="store_true", help="skip evaluation (throughput runs)")
    g.add_argument("--opt", choices=("sgd", "adamw"), default="sgd")
    g.add_argument("--lr", type=float, default=None,
                   help="absolute peak lr (default: --lr-base x global batch / 256)")
    g.add_argument("--lr-base", type=float, default=None,
                   help="lr per 256 images (default 0.1 for sgd, 0.001 for adamw)")
    g.add_argument("--min-lr-frac", type=float, default=0.0, help="cosine floor, fraction of lr")
    g.add_argument("--warmup-epochs", type=float, default=5.0)
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--weight-decay", type=float, default=None,
                   help="default 1e-4 for sgd, 0.05 for adamw; never on norm/bias")
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp16 uses a grad scaler; bf16 needs device support")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--compile", action="store_true", help="torch.compile (torch >= 2.0)")
    g.add_argument("--sync-bn", action="store_true")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=("auto", "mlu", "cuda", "cpu"), default="auto")
    g.add_argument("--output-dir", default=None,
                   help="default: $ORCHESTRATE_OUTPUT_DIR, else ./output")
    g.add_argument("--resume", default=None, help="PATH, or 'auto' (output-dir/checkpoint-last.pth)")
    g.add_argument("--no-checkpoint", action="store_true", help="do not write checkpoints")
    g.add_argument("--metrics-file", default=None,
                   help="default <output-dir>/metrics-rank<RANK>.jsonl; may contain {rank}")
    g.add_argument("--log-interval", type=int, default=50)
    g.add_argument("--warmup-steps", type=int, default=20,
                   help="steps excluded from throughput")
    g.add_argument("--dist-timeout-min", type=float, default=30.0)
    return p


def check_args(args) -> None:
    """Argument combinations that no run can use; nothing here touches torch."""
    if args.synthetic == bool(args.data_dir):
        raise UserError("give exactly one of --data-dir DIR or --synthetic")
    if args.pretrained and not args.checkpoint:
        raise UserError("--pretrained needs --checkpoint FILE (weights are never downloaded)")
    if args.batch_size < 1 or args.epochs < 1 or args.log_interval < 1 or args.img_size < 8:
        raise UserError("--batch-size, --epochs, --log-interval must be >= 1, --img-size >= 8")
    if args.output_dir is None:
        args.output_dir = os.environ.get("ORCHESTRATE_OUTPUT_DIR") or "./output"
    if args.lr_base is None:
        args.lr_base = 0.1 if args.opt == "sgd" else 1e-3
    if args.weight_decay is None:
        args.weight_decay = 1e-4 if args.opt == "sgd" else 0.05
    if args.synthetic and args.steps_per_epoch <= 0:
        args.steps_per_epoch = 100


def check_model_name(name: str) -> None:
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"unknown model {name!r}{hint}; list names with: "
                    f"python -c \"import timm; print(timm.list_models('*resnet*'))\"")


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        if os.environ.get("TRAINER_DEBUG") == "1":
            traceback.print_exc()
        print(f"trainer: error: {exc}", file=sys.stderr, flush=True)
        return 2


def run(args) -> int:
    started = time.time()
    check_args(args)
    from . import devices
    from .dist import topology_from_env

    topo = topology_from_env()
    dev = devices.select_device(args.device, topo.local_rank, topo.local_world_size,
                                devices.SystemProbe())
    check_model_name(args.model)
    splits = None
    if args.data_dir:
        from .data import scan_split

        train = scan_split(args.data_dir, "train")
        splits = (train, scan_split(args.data_dir, "val", classes=train.classes))
    devices.set_async_error_handling()
    devices.activate(dev)
    from . import dist

    dist.init(topo, dev, args.dist_timeout_min)
    dist.announce(topo, "rendezvous")
    try:
        return _train(args, topo, dev, splits, started)
    finally:
        dist.shutdown()


def _build_model(args, num_classes, dev, device):
    import timm
    import torch

    from .checkpoint import load_weights

    torch.manual_seed(args.seed)
    model = timm.create_model(args.model, pretrained=False, num_classes=num_classes)
    if args.pretrained:
        state = load_weights(args.checkpoint)
        own = model.state_dict()
        skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        for k in skipped:  # a classifier for another number of classes
            del state[k]
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - set(skipped):
            raise UserError(f"--checkpoint {args.checkpoint}: does not fit {args.model} "
                            f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
        if skipped:
            print(f"--checkpoint: not loaded (shape differs): {', '.join(skipped)}", flush=True)
    if args.sync_bn and dev.type != "cpu":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _default_workers(topo) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(8, (cores or 1) // max(1, topo.local_world_size) - 1))


def _train(args, topo, dev, splits, started) -> int:
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from . import checkpoint as ckpt_mod
    from . import compat, data, dist, engine
    from .devices import torch_device
    from .metrics import MetricsWriter, RunStats, metrics_path

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch_device(dev)
    precision = compat.resolve_precision(args.precision, dev)
    num_classes = args.num_classes or (len(splits[0].classes) if splits else 1000)
    model = _build_model(args, num_classes, dev, device)

    if splits:
        workers = _default_workers(topo) if args.workers is None else args.workers
        args.workers = workers
        train_loader, val_loader = data.build_image_loaders(
            splits[0], splits[1], model, args, topo.rank, topo.world_size,
            # pinning is CUDA's; torch_mlu's pinned-memory support differs between versions
            pin_memory=dev.type == "cuda" and not args.no_pin_memory)
        steps = data.steps_in_epoch(len(train_loader), args.steps_per_epoch)
    else:
        train_loader = data.SyntheticLoader(args.batch_size, args.img_size, num_classes,
                                            args.steps_per_epoch, device, args.channels_last)
        val_loader = None
        steps = args.steps_per_epoch

    global_batch = args.batch_size * topo.world_size
    lr = args.lr if args.lr is not None else args.lr_base * global_batch / 256
    from .optim import make_optimizer, make_scheduler

    optimizer = make_optimizer(model, args.opt, lr, args.weight_decay, args.momentum,
                               args.nesterov)
    total_steps = steps * args.epochs
    scheduler = make_scheduler(optimizer, total_steps, int(args.warmup_epochs * steps),
                               args.min_lr_frac)
    scaler = compat.grad_scaler(dev, precision)

    ckpt = ckpt_mod.load_resume(args.resume, args.output_dir, topo, dev)
    start_epoch, state = 0, engine.State()
    last_eval = (None, None)
    if ckpt is not None:
        if ckpt.get("model_name") != args.model:
            raise UserError(f"--resume: checkpoint is for {ckpt.get('model_name')!r}, "
                            f"not {args.model!r}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = ckpt["epoch"] + 1
        state.global_step = ckpt["step"]
        last_eval = (ckpt.get("top1"), ckpt.get("top5"))

    core = compat.maybe_compile(model, args.compile)
    if topo.distributed:
        ddp_kw = {"device_ids": [dev.index]} if dev.index is not None else {}
        train_module = DistributedDataParallel(core, **ddp_kw)
    else:
        train_module = core
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)

    writer = MetricsWriter(metrics_path(args.metrics_file, args.output_dir, topo.rank),
                           append=ckpt is not None)
    stats = RunStats()
    ctx = engine.Ctx(args, topo, dev, device, precision, train_module, core, optimizer,
                     scheduler, scaler, criterion, writer, stats, steps, total_steps)
    nnodes = int(dist.all_reduce_sum(
        torch.tensor([1 if topo.local_rank == 0 else 0], device=device)).item())
    if topo.is_main:
        for msg in compat.NOTES:
            print(f"note: {msg}", flush=True)
        print(f"training {args.model} on {topo.world_size} x {dev.kind} ({nnodes} node(s)), "
              f"{precision}, global batch {global_batch}, lr {lr:.4g}, {steps} steps/epoch, "
              f"data {'synthetic' if args.synthetic else args.data_dir}"
              f"{'' if args.synthetic else f' ({args.workers} workers/rank)'}", flush=True)
    if ckpt is not None:
        ckpt_mod.restore_rng(ckpt["rng"], dev)  # last: building the run above used RNG
    del ckpt

    end_epoch = args.epochs
    if args.stop_after_epoch is not None:
        end_epoch = min(end_epoch, args.stop_after_epoch)
    epoch = start_epoch - 1
    for epoch in range(start_epoch, end_epoch):
        train_loss = engine.train_one_epoch(ctx, state, train_loader, epoch)
        val_loss = top1 = top5 = None
        if val_loader is not None and not args.no_eval:
            val_loss, top1, top5, counted = engine.evaluate(ctx, state, val_loader)
            last_eval = (top1, top5)
        bad = int(dist.all_reduce_sum(torch.tensor([state.bad_images], device=device)).item())
        epoch_rec = {"type": "epoch", "epoch": epoch, "rank": topo.rank,
                     "train_loss": train_loss, "val_loss": val_loss, "top1": top1, "top5": top5,
                     "img_s_global": stats.img_s_mean(), "time": time.time()}
        if bad:
            epoch_rec["unreadable_images"] = bad
        writer.write(epoch_rec)
        if topo.is_main:
            line = f"epoch {epoch} done: train_loss {train_loss:.4f}"
            if top1 is not None:
                line += (f" val_loss {val_loss:.4f} top-1 {top1:.2%} top-5 {top5:.2%}"
                         f" ({counted} images)")
            if bad:
                line += f"; skipped {bad} unreadable image(s) so far"
            print(line, flush=True)
            if not args.no_checkpoint:
                ckpt_mod.save_atomic({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "epoch": epoch, "step": state.global_step, "model_name": args.model,
                    "top1": top1, "top5": top5, "rng": ckpt_mod.capture_rng(dev),
                    "args": vars(args)},
                    os.path.join(args.output_dir, ckpt_mod.CHECKPOINT_NAME))

    writer.write(stats.rank_summary(topo.rank))
    if topo.is_main:
        summary = {"type": "summary", "model": args.model, "device_kind": dev.kind,
                   "device_count": topo.world_size, "world_size": topo.world_size,
                   "nnodes": nnodes, "precision": precision, "global_batch": global_batch,
                   "epochs": epoch + 1, "steps": state.global_step,
                   "top1": last_eval[0], "top5": last_eval[1],
                   "img_s_mean": stats.img_s_mean(), "img_s_median": stats.img_s_median(),
                   "total_time_s": time.time() - started, "torch_version": torch.__version__,
                   "data": "synthetic" if args.synthetic else args.data_dir}
        writer.write(summary)
        mean = summary["img_s_mean"]
        print(f"done: {summary['steps']} steps, {summary['epochs']} epochs, "
              f"img/s mean {mean:.1f}" if mean is not None else
              f"done: {summary['steps']} steps (too few to measure throughput)", flush=True)
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
