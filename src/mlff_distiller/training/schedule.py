"""Learning-rate schedule (warmup, then cosine / plateau / constant) and the weight EMA.

Both keep their whole state in plain ``state_dict()`` dicts (numbers and tensors), so a
checkpoint holding them loads with ``torch.load(weights_only=True)`` and a resumed run
continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import math

import torch


class LRSchedule:
    """Sets the optimizer's learning rate each step.

    ``factor(step)`` multiplies the base ``lr``: ``(step + 1) / warmup_steps`` during the
    warmup, then

    * ``cosine``: ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2`` with ``t`` the
      fraction of the post-warmup steps done (needs ``total_steps``);
    * ``plateau``: starts at 1, multiplied by ``plateau_factor`` whenever
      :meth:`epoch_end` has seen more than ``plateau_patience`` epochs in a row without
      a better validation loss (as torch's ``ReduceLROnPlateau``); never below ``min_ratio``;
    * ``constant``: 1.
    """

    def __init__(self, optimizer, base_lr: float, kind: str, warmup_steps: int, total_steps: int,
                 min_ratio: float = 0.01, plateau_factor: float = 0.5, plateau_patience: int = 5):
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.kind = kind
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(int(total_steps), 1)
        self.min_ratio = float(min_ratio)
        self.plateau_factor = float(plateau_factor)
        self.plateau_patience = int(plateau_patience)
        # state
        self.plateau_scale = 1.0
        self.plateau_best = math.inf
        self.plateau_bad_epochs = 0

    def factor(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "cosine":
            span = max(self.total_steps - self.warmup_steps, 1)
            t = min(max(step - self.warmup_steps, 0) / span, 1.0)
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        if self.kind == "plateau":
            return max(self.plateau_scale, self.min_ratio)
        return 1.0

    def apply(self, step: int) -> float:
        """Set the learning rate for optimizer step number ``step`` (0-based); return it."""
        lr = self.base_lr * self.factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def epoch_end(self, val_loss: float) -> None:
        """Feed the epoch's validation loss (only the ``plateau`` schedule uses it)."""
        if self.kind != "plateau":
            return
        if val_loss < self.plateau_best:
            self.plateau_best = float(val_loss)
            self.plateau_bad_epochs = 0
        else:
            self.plateau_bad_epochs += 1
            if self.plateau_bad_epochs > self.plateau_patience:
                self.plateau_scale *= self.plateau_factor
                self.plateau_bad_epochs = 0

    def state_dict(self) -> dict:
        return {
            "plateau_scale": self.plateau_scale,
            "plateau_best": self.plateau_best,
            "plateau_bad_epochs": self.plateau_bad_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad_epochs = int(state["plateau_bad_epochs"])


class EMA:
    """Exponential moving average of a model's floating-point parameters.

    ``shadow = d * shadow + (1 - d) * param`` after every optimizer step, with the decay
    ramped as ``d = min(decay, (1 + n) / (10 + n))`` over the first updates so that the
    average is not dominated by the random initial weights. Buffers (constants such as the
    radial frequencies) are copied, not averaged: averaging a constant in float32 only adds
    rounding drift (~1e-6 relative after a few thousand steps, which accumulated over
    warm-started retrainings until the Numba kernel refused the frequencies).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.averaged = {k for k, _ in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.num_updates += 1
        d = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if k in self.averaged and s.dtype.is_floating_point:
                s.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
