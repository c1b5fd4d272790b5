"""The target's own offset per configuration, added to AT2's product kernel.

Under the product kernel alone the target's curves are the sources' deviations mixed by the task
kernel, and where that row leaves the target no variance of its own (most published HyperRec
pairs) its observations cannot tell two configurations apart that the sources rank the other way.
This kernel gives every target configuration an offset of its own, constant over its epochs,
independent across configurations::

    k(x, x') = v * [task(x) = task(x') = target] * [configuration(x) = configuration(x')]
    v = fraction * k_task(target, target)

so a configuration's observed epochs move its whole curve (its plateau included) by what they
show beyond the mixture, shrunk by ``v`` against the target's noise, and configurations not
trained yet keep the mixture's prediction with a standard deviation of ``sqrt(v)``. The fraction
is a fixed setting, relative to the target's prior variance so that it does not depend on the
metric's units; it is not fitted (with a learned scale, measured before the copula warp, the
LCBench ranks were 10-17 worse: ``docs/at2-quality.md``).
"""

from __future__ import annotations

from gpytorch.kernels import Kernel
from torch import Tensor


class ConfigurationOffsetKernel(Kernel):
    """Inputs rows ``x1 (..., n, D + 2)``, ``x2 (..., m, D + 2)`` (``[task, encoding, t]``) and
    the task kernel's ``(T, T)`` matrix, whose last task is the target; output ``(..., n, m)``,
    or ``(..., n)`` with ``diag``. Configurations are the same when their encodings are equal.

    Args:
        fraction: ``v / k_task(target, target)``, >= 0 (default 0: no offset, the paper's model).
    """

    def __init__(self, fraction: float = 0.0) -> None:
        super().__init__()
        if not fraction >= 0:
            raise ValueError(f"offset fraction must be >= 0, got {fraction}")
        self.fraction = float(fraction)

    def variance(self, task_matrix: Tensor) -> Tensor:
        """``v``, a scalar."""
        return self.fraction * task_matrix[-1, -1]

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, *, task_matrix: Tensor,
                **params) -> Tensor:
        target = task_matrix.shape[-1] - 1
        v = self.variance(task_matrix)
        on1 = x1[..., 0] == target
        if diag:
            return v * on1
        on2 = x2[..., 0] == target
        same = (x1[..., :, None, 1:-1] == x2[..., None, :, 1:-1]).all(-1)
        return v * (on1[..., :, None] & on2[..., None, :] & same)
