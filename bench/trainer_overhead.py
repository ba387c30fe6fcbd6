#!/usr/bin/env python
"""Our trainer vs a minimal plain PyTorch DDP loop, side by side, on this machine.

Same model, per-process batch, process count, threads and synthetic on-device data; both
measure the same way (device sync, then global img/s per --log-interval window after
--warmup steps, median over windows). Runs alternate ABBA over --repeats and the verdict
is the median of per-repeat ratios. Two figures: wall-clock img/s (the real target, valid
on a quiet machine) and images per CPU-second of the whole process tree, from a long run
minus a warm-up-only run (robust when other jobs share the cores). Passes at >= 0.95.

    python bench/trainer_overhead.py --repeats 4 --steps 60 [--verdict cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def plain_worker(a) -> None:
    """The reference: what anyone would write in 30 lines. Launched by torchrun."""
    import timm
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(a.seed)
    model = timm.create_model(a.model, num_classes=1000)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(a.seed + rank)
    x = torch.randn(a.batch_size, 3, a.img_size, a.img_size, generator=g)
    y = torch.randint(0, 1000, (a.batch_size,), generator=g)
    rates = []
    t0 = None
    for step in range(1, a.steps + 1):
        loss = loss_fn(ddp(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == a.warmup:
            t0 = time.perf_counter()
        elif t0 is not None and (step - a.warmup) % a.log_interval == 0:
            now = time.perf_counter()
            r = torch.tensor([a.batch_size * a.log_interval / (now - t0)])
            dist.all_reduce(r)
            rates.append(float(r))
            t0 = time.perf_counter()
    if rank == 0:
        print("PLAIN " + json.dumps({"img_s_median": statistics.median(rates),
                                     "windows": len(rates)}), flush=True)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # includes waited-for grandchildren
    return ru.ru_utime + ru.ru_stime


def torchrun(nproc: int, target, env):
    """(stdout, CPU seconds of torchrun and its workers)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *target]
    before = children_cpu_s()
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    cpu = children_cpu_s() - before
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")
    return p.stdout, cpu


def run_plain(a, env, steps):
    out, cpu = torchrun(a.nproc, [__file__, "--plain-worker", "--model", a.model,
                                  "--img-size", str(a.img_size),
                                  "--batch-size", str(a.batch_size), "--steps", str(steps),
                                  "--warmup", str(a.warmup),
                                  "--log-interval", str(a.log_interval)], env)
    line = next(l for l in out.splitlines() if l.startswith("PLAIN "))
    return json.loads(line[6:])["img_s_median"], cpu


def run_ours(a, env, steps):
    with tempfile.TemporaryDirectory() as d:
        # warm-up and window as the plain loop: steps warmup+1.. in windows of log_interval
        _, cpu = torchrun(a.nproc, ["-m", "trainer.train", "--synthetic", "--device", "cpu",
                                    "--model", a.model, "--img-size", str(a.img_size),
                                    "--batch-size", str(a.batch_size), "--epochs", "1",
                                    "--steps-per-epoch", str(steps),
                                    "--warmup-steps", str(a.warmup),
                                    "--log-interval", str(a.log_interval), "--no-checkpoint",
                                    "--output-dir", d], env)
        recs = [json.loads(l) for l in open(os.path.join(d, "metrics-rank0.jsonl"))]
        return next(r for r in recs if r["type"] == "summary")["img_s_median"], cpu


def measure(fn, a, env):
    """(wall img/s of the long run, img per CPU-second from long minus short run).

    The CPU figure subtracts a run of only the warm-up steps, so start-up (imports, model
    build, process group) cancels; it is what a busy shared machine cannot distort."""
    wall, cpu_long = fn(a, env, a.steps)
    _, cpu_short = fn(a, env, a.warmup + a.log_interval)
    images = (a.steps - a.warmup - a.log_interval) * a.batch_size * a.nproc
    return wall, images / max(1e-9, cpu_long - cpu_short)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plain-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="seresnet18")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="OMP threads per process")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verdict", choices=("wall", "cpu"), default="wall",
                   help="wall on a quiet machine; cpu where other jobs share the cores")
    a = p.parse_args()
    if a.plain_worker:
        return plain_worker(a)
    if (a.steps - a.warmup) % a.log_interval:
        sys.exit("--steps minus --warmup must be a multiple of --log-interval")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(f"{a.model} {a.img_size}px, batch {a.batch_size}/process x {a.nproc} processes, "
          f"{a.threads} thread(s) each, {a.steps} steps ({a.warmup} warm-up), CPU synthetic",
          flush=True)
    res = {"plain": [], "ours": []}
    for i in range(a.repeats):
        order = [("plain", run_plain), ("ours", run_ours)]
        if i % 2:
            order.reverse()  # ABBA: neither side always runs first
        for name, fn in order:
            wall, per_cpu = measure(fn, a, env)
            res[name].append((wall, per_cpu))
            print(f"repeat {i + 1} {name:5s} {wall:8.1f} img/s wall   {per_cpu:7.2f} img per "
                  f"CPU-second   (load {os.getloadavg()[0]:.2f})", flush=True)
    # ratios within each repeat: load from other processes moves both sides of a repeat
    wall_r = [o[0] / p[0] for o, p in zip(res["ours"], res["plain"])]
    cpu_r = [o[1] / p[1] for o, p in zip(res["ours"], res["plain"])]
    for label, k in (("wall", 0), ("cpu", 1)):
        print(f"median {label}: plain {statistics.median(x[k] for x in res['plain']):.2f}, "
              f"ours {statistics.median(x[k] for x in res['ours']):.2f}", flush=True)
    print(f"ours/plain wall-clock throughput: {statistics.median(wall_r):.3f} "
          f"(repeats {' '.join(f'{r:.3f}' for r in wall_r)})", flush=True)
    print(f"ours/plain images per CPU-second: {statistics.median(cpu_r):.3f} "
          f"(repeats {' '.join(f'{r:.3f}' for r in cpu_r)})", flush=True)
    ratio = statistics.median(cpu_r if a.verdict == "cpu" else wall_r)
    print(f"verdict on {a.verdict}: {ratio:.3f} {'PASS' if ratio >= 0.95 else 'FAIL'} "
          f"(need >= 0.95)", flush=True)
    sys.exit(0 if ratio >= 0.95 else 1)


if __name__ == "__main__":
    main()
