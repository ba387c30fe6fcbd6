"""Optimizer and learning-rate schedule (timm-style recipe, written out to stay small)."""
from __future__ import annotations

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float):
    """No weight decay on biases and normalisation parameters (every tensor with ndim <= 1)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]


def make_optimizer(model, opt: str, lr: float, weight_decay: float, momentum: float,
                   nesterov: bool):
    groups = param_groups(model, weight_decay)
    if opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(opt)


class WarmupCosine:
    """lr factor at a step: linear warm-up from warmup_factor, then cosine down to min_factor.

    A callable object (not a lambda) so LambdaLR's state_dict stays picklable.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_factor: float,
                 warmup_factor: float = 0.01):
        self.total = max(1, total_steps)
        self.warmup = max(0, min(warmup_steps, self.total - 1))
        self.min_factor = min_factor
        self.warmup_factor = warmup_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.warmup_factor + (1 - self.warmup_factor) * step / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        progress = min(1.0, progress)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer, total_steps: int, warmup_steps: int, min_factor: float):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(total_steps, warmup_steps, min_factor))
