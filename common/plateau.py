"""When a learning curve has flattened: the plateau criterion, and a callback that stops training there.

Criterion (`plateau`): on the curve smoothed by a 3-point moving mean, the best value reached in the last `tail`
of the steps improves on the best value before it by at most `tolerance` x the curve's range, or by at most
`noise_allowance` x the smoothed curve's noise (`noise_level` / sqrt 3): a gain within the validation noise is
no evidence that the row still improves. Without that allowance ~28 % of perfectly flat, noisy curves were
called "not plateaued" (10-40 points of Gaussian noise, simulated; 2026-12-03); with it ~5 % are, while a linear
decline of 10 noise units over the run is still flagged in ~99 % of draws (tests/demo/test_demo_verdicts.py).
The miniature's study report applies it to every row's curve (demo/study.py).

`PlateauStopping` applies the same criterion while a run trains ("trained until the validation metric has
plateaued"): after each validation it checks the curve so far and stops the run once the criterion has held at
`confirmations` validation points in a row, never before `after` x the configured length (the curve's first
points can be flat before a model starts to learn: the Chapter-3 models sit at the all-foreground mask for their
first validations). A run that reaches its configured length without that stops there, as before, and the
report's plateau column says "no". Model selection is unchanged (best validation checkpoint); a checked curve
can pass by chance (~5 % of checks on a rising curve of a few noise units), which `confirmations` guards.
"""

from __future__ import annotations

import math

import numpy as np
from pytorch_lightning.callbacks import Callback


def moving_mean(values: np.ndarray, window: int = 3) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if len(values) < window:
        return values
    kernel = np.ones(window) / window
    inner = np.convolve(values, kernel, mode="valid")
    return np.concatenate([values[: window // 2], inner, values[len(values) - (window - 1 - window // 2):]])


def noise_level(values) -> float:
    """Standard deviation of a curve's point-to-point noise, robust to its trend: the median absolute deviation
    of the first differences (about their median, which removes a linear trend), / 0.6745 / sqrt 2."""
    differences = np.diff(np.asarray(values, dtype=np.float64))
    if len(differences) < 2:
        return 0.0
    deviation = np.median(np.abs(differences - np.median(differences)))
    return float(deviation / 0.6745 / np.sqrt(2.0))


def plateau(steps, values, lower_better: bool, tail: float = 1 / 3, tolerance: float = 0.1,
            min_points: int = 4, noise_allowance: float = 2.0) -> dict:
    """Whether a learning curve has flattened (see the module docstring). Returns {"plateaued": True, False or
    None (too few points), "gain", "span", "noise", "points"}."""
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if len(values) < min_points:
        return {"plateaued": None, "points": int(len(values)), "reason": f"fewer than {min_points} points"}
    smooth = moving_mean(values)
    sign = -1.0 if lower_better else 1.0
    cut = steps[0] + (1.0 - tail) * (steps[-1] - steps[0])
    head, last = smooth[steps <= cut], smooth[steps > cut]
    if len(head) == 0 or len(last) == 0:
        return {"plateaued": None, "points": int(len(values)), "reason": "no point on one side of the cut"}
    best_head, best_all = (sign * head).max(), (sign * smooth).max()
    gain = float(best_all - best_head)
    span = float(smooth.max() - smooth.min())
    noise = noise_level(values) / np.sqrt(3.0)  # of the 3-point moving mean
    plateaued = gain <= tolerance * span or gain <= noise_allowance * noise
    return {"plateaued": bool(plateaued), "gain": gain, "span": span, "noise": noise, "points": int(len(values))}


class PlateauStopping(Callback):
    """Stop training once the monitored validation metric has plateaued (`plateau`, see the module docstring).

    `after`: the fraction of the configured length (`trainer.max_steps`) before which the run never stops;
    `confirmations`: validation points in a row at which the criterion must hold. The curve (global step, value)
    travels in Lightning checkpoints, so a resumed run decides on the whole curve. `stopped_at` is the global
    step of the stop (None when the run went its full length).
    """

    def __init__(self, monitor: str, lower_better: bool, after: float = 0.25, confirmations: int = 2,
                 tail: float = 1 / 3, tolerance: float = 0.1, noise_allowance: float = 2.0) -> None:
        if not 0.0 <= float(after) <= 1.0:
            raise ValueError(f"stop_at_plateau.after must be a fraction of the run's length in [0, 1], got {after}")
        if int(confirmations) < 1:
            raise ValueError(f"stop_at_plateau.confirmations must be >= 1, got {confirmations}")
        self.monitor, self.lower_better = str(monitor), bool(lower_better)
        self.after, self.confirmations = float(after), int(confirmations)
        self.tail, self.tolerance, self.noise_allowance = float(tail), float(tolerance), float(noise_allowance)
        self.steps: list[int] = []
        self.values: list[float] = []
        self.held = 0  # consecutive validation points at which the criterion held
        self.stopped_at: int | None = None

    def observe(self, step: int, value: float, max_steps: int) -> bool:
        """Record one validation point; True when training should stop now."""
        if self.steps and step == self.steps[-1]:  # the same point seen twice (end-of-run validation)
            return False
        self.steps.append(int(step))
        self.values.append(float(value))
        if max_steps > 0 and step < self.after * max_steps:
            self.held = 0
            return False
        check = plateau(self.steps, self.values, self.lower_better, self.tail, self.tolerance,
                        noise_allowance=self.noise_allowance)
        self.held = self.held + 1 if check["plateaued"] else 0
        return self.held >= self.confirmations

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.stopped_at is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        value = float(value)
        if not math.isfinite(value):
            return
        stop = self.observe(int(trainer.global_step), value, int(trainer.max_steps or -1))
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self.stopped_at = int(trainer.global_step)
            trainer.should_stop = True
            if trainer.is_global_zero:
                print(f"[plateau] {self.monitor} has plateaued (criterion held at {self.held} validation points "
                      f"in a row): stopping at step {self.stopped_at} of {trainer.max_steps}", flush=True)

    def state_dict(self) -> dict:
        return {"steps": list(self.steps), "values": list(self.values), "held": self.held,
                "stopped_at": self.stopped_at}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps = [int(s) for s in state_dict.get("steps", [])]
        self.values = [float(v) for v in state_dict.get("values", [])]
        self.held = int(state_dict.get("held", 0))
        self.stopped_at = state_dict.get("stopped_at")


def plateau_stopping(options, monitor: str, lower_better: bool) -> PlateauStopping | None:
    """The callback from a config group `schedule.stop_at_plateau` ({enabled, after, confirmations, tail,
    tolerance, noise_allowance}); None when it is absent or disabled."""
    if not options or not bool(options.get("enabled", False)):
        return None
    given = {key: options[key] for key in ("after", "confirmations", "tail", "tolerance", "noise_allowance")
             if key in options}  # the others keep PlateauStopping's defaults
    return PlateauStopping(monitor, lower_better, **given)
