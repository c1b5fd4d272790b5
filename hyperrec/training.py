"""One epoch of training or evaluation of a classifier, with the records HyperRec keeps.

Per training batch: the cross-entropy and the top-1/5/10 accuracy; per evaluation: the same
averaged over the data set, and the wall time. Values stay on the device during the loop and are
fetched once per epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TOPK = (1, 5, 10)
"""The top-k accuracies recorded (k larger than the number of classes counts every class)."""


@dataclass(frozen=True)
class EpochRecord:
    """A training epoch. ``loss``: ``(B,)`` mean cross-entropy per batch; ``accuracy``:
    ``(B, len(TOPK))`` top-k accuracy per batch; ``seconds``: wall time of the epoch."""

    loss: np.ndarray
    accuracy: np.ndarray
    seconds: float


@dataclass(frozen=True)
class Evaluation:
    """An evaluation pass: mean cross-entropy, ``(len(TOPK),)`` top-k accuracies, seconds."""

    loss: float
    accuracy: np.ndarray
    seconds: float


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/``None`` -> CUDA when available, else CPU; anything else is checked: a CUDA
    device must exist on this machine (``ValueError`` naming it otherwise)."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {str(device)!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (resolved.index or 0) >= available:
            raise ValueError(f"device {str(device)!r} requested, but this machine has "
                             f"{available} CUDA device(s); use --device auto or cpu")
    return resolved


def _topk_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(len(TOPK),)`` number of samples whose label is among the top k logits."""
    top = logits.topk(min(max(TOPK), logits.shape[-1]), dim=-1).indices
    within = (top == labels[:, None]).cumsum(-1).clamp(max=1).sum(0)  # [j]: label in top j+1
    return torch.stack([within[min(k, top.shape[-1]) - 1] for k in TOPK])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, *,
                device: torch.device, after_batch: Callable[[], None] | None = None,
                amp: bool = False) -> EpochRecord:
    """Train ``model`` for one pass over ``loader`` (batches of ``(images, labels)``).

    Args:
        after_batch: called after every optimizer step (a per-batch scheduler's ``step``).
        amp: autocast to float16 on CUDA / bfloat16 on CPU, with gradient scaling on CUDA.
    """
    model.train()
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    losses, correct, sizes = [], [], []
    _sync(device)
    start = time.perf_counter()
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if after_batch is not None:
            after_batch()
        losses.append(loss.detach())
        correct.append(_topk_correct(logits.detach(), labels))
        sizes.append(labels.shape[0])
    _sync(device)
    seconds = time.perf_counter() - start
    if not losses:
        raise ValueError("the training loader yielded no batch")
    n = np.asarray(sizes, dtype=float)[:, None]
    return EpochRecord(torch.stack(losses).float().cpu().numpy().astype(float),
                       torch.stack(correct).cpu().numpy() / n, seconds)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, *, device: torch.device) -> Evaluation:
    """Mean cross-entropy and top-k accuracy of ``model`` over ``loader``."""
    model.eval()
    loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros(len(TOPK), device=device, dtype=torch.int64)
    count = 0
    _sync(device)
    start = time.perf_counter()
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        logits = model(images).float()
        loss += F.cross_entropy(logits, labels, reduction="sum").double()
        correct += _topk_correct(logits, labels)
        count += labels.shape[0]
    _sync(device)
    seconds = time.perf_counter() - start
    if count == 0:
        raise ValueError("the evaluation loader yielded no sample")
    return Evaluation(float(loss) / count, correct.cpu().numpy() / count, seconds)
