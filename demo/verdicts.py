"""The miniature's verdict rule: paired margins across seeds, two standard errors, sanity floors.

A claim "A beats B" on a headline metric is decided from the *paired* margins d_s = improvement of A over B
with the same training seed s (positive = the claim holds; the metric's direction is applied):

    mean margin  m = mean_s d_s,   standard error  SE = std_s(d_s, ddof=1) / sqrt(n)
    reproduced    when  m >  2 SE
    contradicted  when  m < -2 SE
    inconclusive  otherwise

With a single seed there is no seed-to-seed spread; the evaluation noise (bootstrap over test images of the
paired margin) stands in for SE and the verdict is *indicative* only (its `basis` says so). A claim between
two models that do not both beat their table's sanity floor (a trivial predictor scored by the same
evaluation code) is "untestable here", never reproduced or contradicted.

Pure functions, no I/O; tests: tests/demo/test_demo_verdicts.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

REPRODUCED, CONTRADICTED, INCONCLUSIVE, UNTESTABLE = "reproduced", "contradicted", "inconclusive", "untestable here"
OUTCOMES = (REPRODUCED, CONTRADICTED, INCONCLUSIVE, UNTESTABLE)
# Metrics where a smaller value is better (depth errors, angular error); every other metric is higher-better.
LOWER_IS_BETTER = frozenset({"abs_rel", "sq_rel", "rmse", "rmse_log", "rmse_log10", "mae_deg"})
STANDARD_ERRORS = 2.0  # the margin must exceed this many standard errors


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


def improvement(better: float, worse: float, metric: str) -> float:
    """How much `better` improves on `worse` on `metric` (positive = better is better)."""
    sign = -1.0 if lower_is_better(metric) else 1.0
    return sign * (float(better) - float(worse))


def paired_margins(better: Sequence[float], worse: Sequence[float], metric: str) -> list[float]:
    """Per-seed improvements; `better[s]` and `worse[s]` come from the same training seed s."""
    if len(better) != len(worse):
        raise ValueError(f"paired margins need one value per seed for both methods, got {len(better)} and "
                         f"{len(worse)}")
    if not better:
        raise ValueError("paired margins need at least one seed")
    return [improvement(b, w, metric) for b, w in zip(better, worse)]


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean (sample std / sqrt(n)); None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)


def decide(margins: Sequence[float], evaluation_se: float | None = None, k: float = STANDARD_ERRORS) -> dict:
    """The verdict of paired margins (see the module docstring).

    `evaluation_se`: bootstrap standard error of the margin over test images; it is the noise of the rule
    only when a single seed ran (basis "evaluation noise, 1 seed: indicative"), and is reported otherwise.
    """
    if not margins:
        raise ValueError("decide() needs at least one margin")
    n = len(margins)
    mean = sum(margins) / n
    se = standard_error(margins)
    if se is not None:
        noise, basis = se, f"paired over {n} seeds"
    else:
        noise, basis = evaluation_se, "evaluation noise only (1 seed): indicative"
    if noise is None or not math.isfinite(noise):
        verdict = INCONCLUSIVE
        basis = "no noise estimate (1 seed, no per-image values): indicative"
    elif mean > k * noise:
        verdict = REPRODUCED
    elif mean < -k * noise:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    return {"verdict": verdict, "margin": mean, "se": noise, "seed_se": se, "evaluation_se": evaluation_se,
            "n": n, "margins": list(margins), "basis": basis}


def beats_floor(model: Sequence[float], floor: Sequence[float], metric: str,
                evaluation_se: float | None = None) -> dict:
    """Whether a trained model beats its floor by the same rule (floor values paired by seed; a floor that has
    no seeds repeats its one value). `beats` is True only for a *reproduced* margin over the floor."""
    if len(floor) == 1 and len(model) > 1:
        floor = [floor[0]] * len(model)
    result = decide(paired_margins(model, floor, metric), evaluation_se)
    return result | {"beats": result["verdict"] == REPRODUCED}


def claim_verdict(better: Sequence[float], worse: Sequence[float], metric: str,
                  better_beats_floor: bool = True, worse_beats_floor: bool = True,
                  evaluation_se: float | None = None) -> dict:
    """The claim 'better beats worse': paired verdict, or "untestable here" when either model does not beat
    its floor (the margin is still reported)."""
    result = decide(paired_margins(better, worse, metric), evaluation_se)
    if not (better_beats_floor and worse_beats_floor):
        below = [name for name, ok in (("claimed-better", better_beats_floor), ("claimed-worse", worse_beats_floor))
                 if not ok]
        basis = ("neither model beats its sanity floor" if len(below) == 2
                 else f"the {below[0]} model does not beat its sanity floor")
        result = result | {"verdict": UNTESTABLE, "rule_verdict": result["verdict"], "basis": basis}
    return result


# ------------------------------------------------------------------------------------ evaluation noise

def mean_statistic(values: np.ndarray) -> float:
    return float(np.mean(values))


def miou_best_statistic(curves: np.ndarray) -> float:
    """CLIPSeg's mIoU "best": max over thresholds of the mean per-sample IoU curve, in percent."""
    return 100.0 * float(np.max(np.mean(curves, axis=0)))


def bootstrap_se(values: np.ndarray, other: np.ndarray | None = None,
                 statistic: Callable[[np.ndarray], float] = mean_statistic, resamples: int = 1000,
                 seed: int = 0) -> float:
    """Standard error, over test images resampled with replacement, of statistic(values) or of the paired
    difference statistic(values) - statistic(other) (both indexed by the same resampled images).

    `values`: (N,) per-image metrics or (N, K) per-image curves (e.g. IoU at each threshold)."""
    values = np.asarray(values, dtype=np.float64)
    if other is not None:
        other = np.asarray(other, dtype=np.float64)
        if other.shape != values.shape:
            raise ValueError(f"paired bootstrap: per-image arrays differ in shape {values.shape} vs {other.shape}")
    n = values.shape[0]
    if n < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for r in range(resamples):
        index = rng.integers(0, n, n)
        draws[r] = statistic(values[index]) - (statistic(other[index]) if other is not None else 0.0)
    return float(np.std(draws, ddof=1))


def verdict_flips(first: dict[str, str], second: dict[str, str]) -> list[str]:
    """Claims reproduced in one study and contradicted in the other (the study's stability check: a second
    study with other seeds must give none). `first`, `second`: {claim: verdict} (verdicts.json "claims")."""
    opposite = {REPRODUCED: CONTRADICTED, CONTRADICTED: REPRODUCED}
    return sorted(claim for claim, verdict in first.items()
                  if verdict in opposite and second.get(claim) == opposite[verdict])


def _margin_text(margins: dict, claim: str) -> str:
    entry = margins.get(claim) or {}
    if entry.get("margin") is None:
        return ""
    se = entry.get("se")
    return f"{entry['margin']:+.3g}" + (f" ± {se:.2g}" if se is not None else "") + f" ({entry.get('metric', '?')})"


def verdict_comparison(first: dict, second: dict) -> str:
    """Markdown table of two studies' verdicts side by side (the stability check of `python -m demo
    --compare-verdicts`): each claim's verdict and mean margin ± seed SE in both, and whether it flips between
    reproduced and contradicted. `first`, `second`: whole verdicts.json documents."""
    flips = set(verdict_flips(first["claims"], second["claims"]))

    def label(document: dict) -> str:
        start = document.get("first_seed")
        count = document.get("seeds")
        seeds = f"seeds {start}-{start + count - 1}" if isinstance(start, int) and isinstance(count, int) else "?"
        return f"{seeds}, code {str(document.get('code_version', '?'))[:7]}"

    lines = [f"| claim | verdict ({label(first)}) | margin ± seed SE | verdict ({label(second)}) | margin ± seed SE "
             "| flips? |", "|---|---|---|---|---|---|"]
    for claim in list(first["claims"]) + [c for c in second["claims"] if c not in first["claims"]]:
        lines.append(f"| {claim} | {first['claims'].get(claim, '(absent)')} | "
                     f"{_margin_text(first.get('margins', {}), claim)} | {second['claims'].get(claim, '(absent)')} | "
                     f"{_margin_text(second.get('margins', {}), claim)} | {'**yes**' if claim in flips else 'no'} |")
    return "\n".join(lines) + "\n"
