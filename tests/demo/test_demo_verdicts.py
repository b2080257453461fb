"""The miniature's verdict rule (demo/verdicts.py) and plateau criterion (demo/study.py) on hand-worked numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from demo.study import moving_mean, noise_level, plateau
from demo.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    REPRODUCED,
    UNTESTABLE,
    beats_floor,
    bootstrap_se,
    claim_verdict,
    decide,
    improvement,
    miou_best_statistic,
    paired_margins,
    standard_error,
    verdict_comparison,
    verdict_flips,
)


def test_direction_of_each_metric():
    assert improvement(0.10, 0.13, "abs_rel") == pytest.approx(0.03)  # lower error is better
    assert improvement(20.0, 25.0, "mae_deg") == pytest.approx(5.0)
    assert improvement(0.8, 0.7, "a1") == pytest.approx(0.1)  # higher accuracy is better
    assert improvement(40.0, 45.0, "mIoU") == pytest.approx(-5.0)
    assert improvement(30.0, 20.0, "top1") == pytest.approx(10.0)


def test_paired_margins_and_standard_error_by_hand():
    # abs_rel per seed: ours (0.10, 0.12, 0.11), theirs (0.13, 0.15, 0.12) -> margins 0.03, 0.03, 0.01
    margins = paired_margins([0.10, 0.12, 0.11], [0.13, 0.15, 0.12], "abs_rel")
    assert margins == pytest.approx([0.03, 0.03, 0.01])
    # mean 0.02333, sample std sqrt(((1/150)^2 * 2 + (2/150)^2) / 2) = 0.011547, SE = 0.011547 / sqrt(3) = 0.0066667
    assert standard_error(margins) == pytest.approx(0.0066667, rel=1e-4)
    assert standard_error([0.5]) is None
    with pytest.raises(ValueError, match="one value per seed"):
        paired_margins([1.0, 2.0], [1.0], "mIoU")


def test_three_outcomes():
    # margins 0.3, 0.1, 0.2: mean 0.2, SE 0.1 / sqrt(3) = 0.0577, 2 SE = 0.115 < 0.2 -> reproduced
    result = decide([0.3, 0.1, 0.2])
    assert result["verdict"] == REPRODUCED and result["margin"] == pytest.approx(0.2)
    assert result["se"] == pytest.approx(0.1 / math.sqrt(3)) and result["n"] == 3
    assert decide([-0.3, -0.1, -0.2])["verdict"] == CONTRADICTED
    # margins 0.3, -0.1, 0.1: mean 0.1, SE 0.2 / sqrt(3) = 0.1155, 2 SE = 0.231 > 0.1 -> inconclusive
    assert decide([0.3, -0.1, 0.1])["verdict"] == INCONCLUSIVE
    # the seed SE is the rule's noise even when the evaluation noise is larger (it is reported beside)
    assert decide([0.3, 0.1, 0.2], evaluation_se=1.0)["verdict"] == REPRODUCED


def test_single_seed_uses_evaluation_noise_and_is_indicative():
    assert decide([0.2], evaluation_se=0.05)["verdict"] == REPRODUCED  # 0.2 > 2 x 0.05
    one = decide([0.2], evaluation_se=0.15)  # 0.2 < 0.3
    assert one["verdict"] == INCONCLUSIVE and "indicative" in one["basis"]
    assert decide([-0.2], evaluation_se=0.05)["verdict"] == CONTRADICTED
    assert decide([0.2])["verdict"] == INCONCLUSIVE  # no noise estimate at all


def test_untestable_when_a_model_does_not_beat_its_floor():
    claim = claim_verdict([50.0, 52.0, 51.0], [40.0, 41.0, 40.5], "mIoU", better_beats_floor=True,
                          worse_beats_floor=False)
    assert claim["verdict"] == UNTESTABLE and claim["rule_verdict"] == REPRODUCED
    assert claim["margin"] == pytest.approx(10.5) and "claimed-worse model does not" in claim["basis"]
    assert claim_verdict([50.0, 52.0, 51.0], [40.0, 41.0, 40.5], "mIoU")["verdict"] == REPRODUCED


def test_beats_floor_pairs_seeds_and_repeats_a_constant_floor():
    # a constant floor (one value) against three seeds: margins 0.05, 0.07, 0.06 (abs_rel, lower better)
    result = beats_floor([0.25, 0.23, 0.24], [0.30], "abs_rel")
    assert result["beats"] and result["margins"] == pytest.approx([0.05, 0.07, 0.06])
    # an image-only floor trained per seed is paired seed by seed; here it wins on average
    assert not beats_floor([30.0, 31.0, 29.0], [31.0, 32.0, 30.5], "mIoU")["beats"]


def test_bootstrap_se_of_a_mean_and_of_a_paired_difference():
    rng = np.random.default_rng(0)
    values = rng.normal(0.0, 1.0, 400)
    # SE of a mean of 400 unit-variance values is 1 / 20 = 0.05
    assert bootstrap_se(values, resamples=2000) == pytest.approx(0.05, rel=0.15)
    # a paired difference with a shared per-image component has the noise of the difference only
    shared = rng.normal(0.0, 10.0, 400)
    a, b = shared + rng.normal(0.0, 1.0, 400), shared + rng.normal(0.0, 1.0, 400)
    assert bootstrap_se(a, b, resamples=2000) == pytest.approx(math.sqrt(2) / 20, rel=0.15)
    assert bootstrap_se(a, b, resamples=200) < bootstrap_se(a, resamples=200) / 5
    with pytest.raises(ValueError, match="differ in shape"):
        bootstrap_se(a, b[:10])


def test_miou_best_statistic_is_the_max_of_the_mean_curve():
    curves = np.array([[0.2, 0.6, 0.1], [0.4, 0.2, 0.1]])  # mean curve 0.3, 0.4, 0.1
    assert miou_best_statistic(curves) == pytest.approx(40.0)


def test_plateau_criterion():
    steps = np.arange(10) * 10.0
    flat = [0.5, 0.3, 0.2, 0.15, 0.14, 0.14, 0.14, 0.14, 0.14, 0.14]  # abs_rel, lower is better
    assert plateau(steps, flat, lower_better=True)["plateaued"] is True
    still_falling = [0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05]
    result = plateau(steps, still_falling, lower_better=True)
    assert result["plateaued"] is False and result["gain"] > 0.1 * result["span"]
    rising = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0]  # mIoU still rising
    assert plateau(steps, rising, lower_better=False)["plateaued"] is False
    assert plateau(steps[:3], rising[:3], lower_better=False)["plateaued"] is None  # too few points
    assert moving_mean(np.array([0.0, 3.0, 6.0, 9.0])) == pytest.approx([0.0, 3.0, 6.0, 9.0])


def test_plateau_criterion_tells_noise_from_a_trend():
    """A flat curve with validation noise has plateaued; a decline of 10 noise units over the run has not.
    Rates over simulated curves (without the noise allowance, ~28 % of the flat curves failed)."""
    rng = np.random.default_rng(0)
    steps = np.arange(1, 21) * 20.0
    flat = [plateau(steps, rng.normal(0.3, 0.02, 20), True)["plateaued"] for _ in range(400)]
    assert np.mean(flat) > 0.9
    without_allowance = [plateau(steps, rng.normal(0.3, 0.02, 20), True, noise_allowance=0.0)["plateaued"]
                         for _ in range(400)]
    assert np.mean(without_allowance) < 0.8
    trend = 0.3 + 0.2 * np.linspace(1, 0, 20)  # lower is better, still falling by 10 noise units
    declining = [plateau(steps, trend + rng.normal(0, 0.02, 20), True)["plateaued"] for _ in range(400)]
    assert np.mean(declining) < 0.05
    rising = [plateau(steps, 40 - 2 * trend * 20 + rng.normal(0, 0.8, 20), False)["plateaued"] for _ in range(400)]
    assert np.mean(rising) < 0.05  # the same for a metric where higher is better (mIoU)
    assert noise_level(np.linspace(0, 1, 20)) == 0.0  # a pure trend has no noise


def test_verdict_flips_only_counts_reproduced_against_contradicted():
    first = {"a": REPRODUCED, "b": CONTRADICTED, "c": REPRODUCED, "d": INCONCLUSIVE, "e": REPRODUCED}
    second = {"a": CONTRADICTED, "b": REPRODUCED, "c": INCONCLUSIVE, "d": CONTRADICTED, "e": UNTESTABLE}
    assert verdict_flips(first, second) == ["a", "b"]
    assert verdict_flips(first, first) == []


def test_verdict_comparison_lists_both_studies_and_marks_flips():
    first = {"claims": {"a": REPRODUCED, "b": INCONCLUSIVE}, "seeds": 3, "first_seed": 0, "code_version": "abcdef123",
             "margins": {"a": {"metric": "abs_rel", "margin": 0.05, "se": 0.01}}}
    second = {"claims": {"a": CONTRADICTED, "b": INCONCLUSIVE, "c": UNTESTABLE}, "seeds": 3, "first_seed": 100,
              "code_version": "abcdef123", "margins": {}}
    rows = verdict_comparison(first, second).splitlines()
    assert "seeds 0-2, code abcdef1" in rows[0] and "seeds 100-102, code abcdef1" in rows[0]
    by_claim = {row.split(" | ")[0].lstrip("| "): row for row in rows[2:]}
    assert set(by_claim) == {"a", "b", "c"}
    assert "+0.05 ± 0.01 (abs_rel)" in by_claim["a"] and by_claim["a"].endswith("| **yes** |")
    assert by_claim["b"].endswith("| no |") and "(absent)" in by_claim["c"]


def test_a_claim_is_flagged_by_the_curves_of_its_own_chapter(monkeypatch):
    """Depth and faces both have a "SharinGAN (proposed)" row: a depth claim takes the depth row's plateau."""
    from demo import report

    monkeypatch.setitem(report.TABLE_SPECS, "table_2_5", {"stage": "depth"})
    monkeypatch.setitem(report.TABLE_SPECS, "table_2_3", {"stage": "faces"})
    curves = {"depth": {"SharinGAN (proposed)": {"plateaued": True}, "All synthetic (baseline)": {"plateaued": False}},
              "faces": {"SharinGAN (proposed)": {"plateaued": False}, "SfSNet (no SharinGAN)": {"plateaued": None}},
              "ldznet": {"LD-ZNet": {"plateaued": False}, "ZNet": {"plateaued": True}}}
    monkeypatch.setitem(report.TABLE_SPECS, "table_3_4", {"stage": "ldznet"})
    claims = [{"table": "table_2_5", "rows": ("SharinGAN (proposed)", "All synthetic (baseline)")},
              {"table": "table_2_3", "rows": ("SharinGAN (proposed)", "SfSNet (no SharinGAN)")},
              {"table": "table_3_4", "rows": ("LD-ZNet with cross-attention", "ZNet")},  # an alias of LD-ZNet
              {"rows": ("SharinGAN (proposed)",)}]  # no table (the probe's claim): nothing to look up
    report.flag_unplateaued(curves, claims)
    assert [c.get("not_plateaued") for c in claims] == [
        ["All synthetic (baseline)"], ["SharinGAN (proposed)"], ["LD-ZNet"], None]
