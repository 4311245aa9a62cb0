"""Exponential moving average (EMA) of a generator's weights, as BasicSR's net_g_ema.

Hand-written rather than torch.optim.swa_utils.AveragedModel for two reasons: the decay is
warmed up as in TensorFlow's ExponentialMovingAverage(num_updates), min(decay, (1 + n) / (10 + n)),
so that a run of a few hundred steps is not dominated by its starting weights (with a fixed
0.999, 82% of the average after 200 steps would still be the initial network); and no device
value is read on the host, so an update never waits for the GPU.
"""

from __future__ import annotations

import copy

import torch


class Ema:
    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.updates = decay, 0
        self._pairs: tuple[int, list, list] | None = None  # (id of the source, averages, sources)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards `model`'s weights (call after each optimizer step)."""
        self.updates += 1
        if self._pairs is None or self._pairs[0] != id(model):
            pairs = [(a, b) for a, b in zip(self.model.state_dict().values(),
                                            model.state_dict().values()) if a.is_floating_point()]
            self._pairs = (id(model), [a for a, _ in pairs], [b for _, b in pairs])
        torch._foreach_lerp_(self._pairs[1], self._pairs[2], 1 - self.current_decay())

    def state_dict(self) -> dict:
        return {"weights": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["weights"])  # copies in place: the pairs stay valid
        self.updates = state["updates"]
