"""Image-classification tasks to train configurations on.

A task is a labelled image set split 60/20/20 into train / validation / test with a fixed seed
(the split is part of the task: it is stored with the task in a database). Two sources:

* ``"digits"`` — scikit-learn's bundled handwritten digits (1,797 grey 8x8 images, 10 classes):
  a real data set that needs no download, used for offline builds, tests and autoHyper's study.
* a directory in torchvision's ``ImageFolder`` layout (``root/<class>/<image>``), read as RGB and
  resized to ``image_size`` x ``image_size``.

Needs the ``vision`` extra (torchvision, scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from .options import check_option

SPLIT = (0.6, 0.2, 0.2)
"""Fractions of the images in the train, validation and test subsets."""
DIGITS = "digits"


class TaskError(ValueError):
    """A task that cannot be loaded: unknown name, missing folder, no classes or no images."""


@dataclass(frozen=True)
class ImageTask:
    """A split image-classification task.

    Each subset yields ``(image, label)`` with image ``(channels, height, width)`` float32 in
    [0, 1] and label an int64 class index in ``[0, classes)``.
    """

    name: str
    train: Dataset
    validation: Dataset
    test: Dataset
    classes: int
    channels: int
    meta: dict[str, Any] = field(default_factory=dict)


def split_indices(n: int, seed: int, fractions: tuple[float, ...] = SPLIT
                  ) -> tuple[np.ndarray, ...]:
    """A seeded random partition of ``range(n)`` into ``len(fractions)`` index arrays whose sizes
    follow ``fractions`` (rounded; the last part takes the remainder)."""
    if n < len(fractions):
        raise TaskError(f"{n} images cannot be split into {len(fractions)} non-empty parts")
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions[:-1]) * n).astype(int)
    return tuple(np.sort(part) for part in np.split(order, cuts))


def _digits() -> tuple[Dataset, int, int, dict[str, Any]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    return TensorDataset(images, labels), 10, 1, {"source": "sklearn.datasets.load_digits",
                                                   "image_size": 8}


def _folder(root: Path, image_size: int) -> tuple[Dataset, int, int, dict[str, Any]]:
    from torchvision import datasets, transforms

    if not root.is_dir():
        raise TaskError(f"task folder {root} does not exist (expected 'digits' or an "
                        "ImageFolder directory root/<class>/<image>)")
    transform = transforms.Compose([transforms.Resize((image_size, image_size)),
                                    transforms.ToTensor()])
    try:
        data = datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, RuntimeError) as err:
        raise TaskError(f"task folder {root}: {err}") from err
    if len(data.classes) < 2:
        raise TaskError(f"task folder {root} has {len(data.classes)} class folder(s); "
                        "classification needs at least 2")
    return data, len(data.classes), 3, {"source": str(root.resolve()), "image_size": image_size,
                                        "class_names": list(data.classes)}


def load_task(spec: str | Path, split_seed: int = 0, image_size: int = 32) -> ImageTask:
    """Load and split a task: ``"digits"`` or an ImageFolder directory.

    Args:
        spec: ``"digits"`` or the path of the folder.
        split_seed: seed of the 60/20/20 split (default 0).
        image_size: side length images of a folder are resized to (default 32; digits stay 8x8).
    """
    check_option("split_seed", split_seed, int, 0)
    check_option("image_size", image_size, int, 1)
    if str(spec) == DIGITS:
        data, classes, channels, meta = _digits()
        name = DIGITS
    else:
        root = Path(spec)
        data, classes, channels, meta = _folder(root, image_size)
        name = root.resolve().name
    parts = split_indices(len(data), split_seed)
    meta = {**meta, "images": len(data), "classes": classes, "channels": channels,
            "split_seed": split_seed, "split": list(SPLIT)}
    train, validation, test = (Subset(data, idx.tolist()) for idx in parts)
    return ImageTask(name, train, validation, test, classes, channels, meta)
