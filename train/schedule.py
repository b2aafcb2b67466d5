"""Learning-rate schedule: MIRNet-v2 / BasicSR ``CosineAnnealingRestartCyclicLR`` (+ warm-up).

Cycle ``i`` covers steps ``(C_{i-1}, C_i]`` where ``C_i = periods[0] + ... + periods[i]`` and
``C_{-1} = 0`` (cycle 0 also includes step 0). Within cycle ``i``::

    lr = eta_min_i + restart_weight_i * 0.5 * (base_lr - eta_min_i)
                   * (1 + cos(pi * (step - cycle_start_i) / period_i))

with ``cycle_start_i = C_{i-1}``. As in BasicSR the boundary step ``C_i`` belongs to cycle ``i``
(it ends at ``eta_min_i``) and the next cycle restarts at ``C_i + 1``. Steps past the last cycle
(where BasicSR fails) keep the final value, ``eta_mins[-1]``.

Optional linear warm-up: for ``step < warmup_steps`` the value above is multiplied by
``step / warmup_steps`` (0 at step 0, the full schedule from step ``warmup_steps`` on).

``step`` is the scheduler's ``last_epoch``: 0 after construction, +1 per ``scheduler.step()``
(call it once per optimizer step, after ``optimizer.step()``).
"""
from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler

from mirnet.sdk.errors import ConfigError

__all__ = ["lr_at", "validate_schedule", "CosineRestartCyclic"]


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return (isinstance(x, numbers.Real) and not isinstance(x, bool)
            and math.isfinite(float(x)))


def _yaml_hint(values) -> str:
    if any(isinstance(v, str) for v in values):
        return (" (PyYAML reads numbers like 3e-4 as strings; write them with a dot and a signed "
                "exponent, e.g. 3.0e-4)")
    return ""


def validate_schedule(periods: Sequence[int], restart_weights: Sequence[float],
                      eta_mins: Sequence[float], warmup_steps: int = 0
                      ) -> tuple[list[int], list[float], list[float], int]:
    """Check the schedule parameters; return them as plain Python lists / int."""
    lists = {"periods": periods, "restart_weights": restart_weights, "eta_mins": eta_mins}
    for name, value in lists.items():
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
            raise ConfigError(f"{name}={value!r} is invalid; it must be a non-empty list, "
                              "e.g. periods: [46000, 104000].")
    if not (len(periods) == len(restart_weights) == len(eta_mins)):
        raise ConfigError(
            f"periods, restart_weights and eta_mins must have the same length (one entry per "
            f"cycle), got {len(periods)}, {len(restart_weights)} and {len(eta_mins)} "
            f"(periods={list(periods)}, restart_weights={list(restart_weights)}, "
            f"eta_mins={list(eta_mins)}); add or remove entries so that they match.")
    bad = [p for p in periods if not (_is_int(p) and p > 0)]
    if bad:
        raise ConfigError(f"periods={list(periods)} has invalid entries {bad}; every period must "
                          "be an integer number of steps > 0.")
    bad = [w for w in restart_weights if not (_is_number(w) and w >= 0)]
    if bad:
        raise ConfigError(f"restart_weights={list(restart_weights)} has invalid entries {bad}; "
                          "every weight must be a finite number >= 0 (usually 1)"
                          + _yaml_hint(bad) + ".")
    bad = [e for e in eta_mins if not (_is_number(e) and e >= 0)]
    if bad:
        raise ConfigError(f"eta_mins={list(eta_mins)} has invalid entries {bad}; every eta_min "
                          "must be a finite learning rate >= 0" + _yaml_hint(bad) + ".")
    if not (_is_int(warmup_steps) and warmup_steps >= 0):
        raise ConfigError(f"warmup_steps={warmup_steps!r} is invalid; it must be an integer >= 0 "
                          "(0 disables warm-up).")
    return ([int(p) for p in periods], [float(w) for w in restart_weights],
            [float(e) for e in eta_mins], int(warmup_steps))


def _lr_at(step: int, base_lr: float, periods: list[int], restart_weights: list[float],
           eta_mins: list[float], warmup_steps: int, cumulative: list[int]) -> float:
    s = min(step, cumulative[-1])
    i = bisect.bisect_left(cumulative, s)          # first i with s <= cumulative[i]
    start = cumulative[i - 1] if i else 0
    eta = eta_mins[i]
    lr = eta + restart_weights[i] * 0.5 * (base_lr - eta) * (
        1.0 + math.cos(math.pi * (s - start) / periods[i]))
    if step < warmup_steps:
        lr *= step / warmup_steps
    return lr


def _cumulative(periods: list[int]) -> list[int]:
    out, total = [], 0
    for p in periods:
        total += p
        out.append(total)
    return out


def lr_at(step: int, base_lr: float, periods: Sequence[int], restart_weights: Sequence[float],
          eta_mins: Sequence[float], warmup_steps: int = 0) -> float:
    """The learning rate at optimizer step ``step`` (see the module docstring)."""
    periods, restart_weights, eta_mins, warmup_steps = validate_schedule(
        periods, restart_weights, eta_mins, warmup_steps)
    if not (_is_int(step) and step >= 0):
        raise ConfigError(f"step={step!r} is invalid; it must be an integer >= 0.")
    if isinstance(base_lr, torch.Tensor):
        base_lr = float(base_lr)
    if not (_is_number(base_lr) and base_lr >= 0):
        raise ConfigError(f"base_lr={base_lr!r} is invalid; it must be a finite learning rate "
                          ">= 0, e.g. 2e-4.")
    return _lr_at(step, float(base_lr), periods, restart_weights, eta_mins, warmup_steps,
                  _cumulative(periods))


class CosineRestartCyclic(LRScheduler):
    """``torch.optim`` scheduler computing :func:`lr_at` in closed form for every param group.

    The base LR of each group is its ``initial_lr`` (its ``lr`` when the scheduler is created).
    ``state_dict()`` holds the schedule parameters and the step, so ``load_state_dict`` resumes
    exactly (the next ``step()`` gives the LR the uninterrupted run would have had).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, periods: Sequence[int],
                 restart_weights: Sequence[float], eta_mins: Sequence[float],
                 warmup_steps: int = 0, last_epoch: int = -1):
        (self.periods, self.restart_weights, self.eta_mins,
         self.warmup_steps) = validate_schedule(periods, restart_weights, eta_mins, warmup_steps)
        self.cumulative_period = _cumulative(self.periods)
        super().__init__(optimizer, last_epoch)

    @property
    def total_steps(self) -> int:
        """The step at which the last cycle ends (``sum(periods)``)."""
        return self.cumulative_period[-1]

    def _lrs(self) -> list[float]:
        return [_lr_at(self.last_epoch, float(base), self.periods, self.restart_weights,
                       self.eta_mins, self.warmup_steps, self.cumulative_period)
                for base in self.base_lrs]

    def get_lr(self) -> list[float]:
        return self._lrs()

    def _get_closed_form_lr(self) -> list[float]:
        return self._lrs()

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # Re-derive from the loaded periods so a state dict from another config stays coherent.
        self.cumulative_period = _cumulative(list(self.periods))
