"""Baseline tuning methods, all through the ask/tell interface of :class:`at2.tuner.Tuner`."""

from __future__ import annotations

import torch

from at2.tuner import Query, Tuner


class RandomTuner(Tuner):
    """Random epoch-wise search: each query trains a uniformly random configuration (among those
    not finished) for its next epoch; the recommendation is the best value observed so far."""

    name = "random"

    def ask(self) -> Query:
        choices = torch.nonzero(self._trainable()).squeeze(-1)
        if not len(choices):
            raise ValueError("every configuration of the target is fully trained")
        c = int(choices[torch.randint(len(choices), (1,), generator=self.generator)])
        config_id = self.grid.config_ids[c]
        return Query(config_id, self.next_epoch(config_id))
