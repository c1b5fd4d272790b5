"""Process-pool and Ray plumbing shared by the builder and the experiment sweep."""

from __future__ import annotations

from types import ModuleType


def start_ray(address: str | None, workers: int, threads: int) -> ModuleType:
    """Join the Ray cluster at ``address``, or start a local one with ``workers * threads``
    CPUs; returns the ``ray`` module. Needs the ``ray`` extra."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs Ray: pip install -e '.[ray]'") from None
    ray.init(address=address, num_cpus=None if address else workers * threads,
             include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    return ray

