"""Stopping at the validation plateau (common.plateau.PlateauStopping, `schedule.stop_at_plateau`): a flat curve
stops at the first check after the minimum length plus the confirmations, a rising curve never stops, and both
chapters' training commands end their runs there."""

import json

import pytest
import pytorch_lightning as pl
import torch

from common.config import load_config
from common.plateau import PlateauStopping, plateau_stopping


def test_a_flat_curve_stops_after_the_minimum_and_the_confirmations():
    # validations every 10 steps of 200; never before 0.5 x 200 = 100: the checks at 100 and 110 hold -> stop at 110
    stopper = PlateauStopping("val/score", lower_better=False, after=0.5, confirmations=2)
    stops = [step for step in range(10, 201, 10) if stopper.observe(step, 3.0, max_steps=200)]
    assert stops[0] == 110
    stopper = PlateauStopping("val/score", lower_better=False, after=0.0, confirmations=1)
    # after=0: the first step with 4 points (the criterion's minimum) decides
    assert [s for s in range(10, 60, 10) if stopper.observe(s, 3.0, max_steps=200)][0] == 40


def test_a_rising_curve_never_stops_and_a_peak_stops_once_it_is_in_the_first_two_thirds():
    stopper = PlateauStopping("val/score", lower_better=False, after=0.0, confirmations=1)
    assert not any(stopper.observe(step, step / 10, max_steps=1000) for step in range(10, 1001, 10))
    # rises by 1 per validation to a peak at step 100, then falls by 1 per validation (no noise: the differences
    # are +-1 with median 1, so the noise allowance is 0). Smoothed (3-point mean) the peak stays at step 100
    # (value 9.33); the cut is at 10 + 2/3 (last - 10).
    curve = [(step, min(step, 200 - step) / 10) for step in range(10, 201, 10)]
    # tolerance 0: plateaued once the head holds the peak: cut >= 100, last >= 145 -> the validation at 150
    stopper = PlateauStopping("val/score", lower_better=False, after=0.0, confirmations=1, tolerance=0.0)
    assert next(step for step, value in curve if stopper.observe(step, value, max_steps=200)) == 150
    # tolerance 0.1: at last = 130 the cut is 90, the head's best is 9 (step 90), the gain 0.33 <= 0.1 x the
    # range 8.33 (1 at step 10, unsmoothed end, to 9.33); at 120 the head's best is 8 (step 80), the gain 1.33 > 0.83
    stopper = PlateauStopping("val/score", lower_better=False, after=0.0, confirmations=1)
    assert next(step for step, value in curve if stopper.observe(step, value, max_steps=200)) == 130
    # lower is better: the mirrored curve stops at the same step
    stopper = PlateauStopping("val/score", lower_better=True, after=0.0, confirmations=1)
    assert next(step for step, value in curve if stopper.observe(step, -value, max_steps=200)) == 130
    # two confirmations: one validation later
    stopper = PlateauStopping("val/score", lower_better=False, after=0.0, confirmations=2)
    assert next(step for step, value in curve if stopper.observe(step, value, max_steps=200)) == 140


def test_bad_options_are_named_and_a_disabled_group_gives_no_callback():
    with pytest.raises(ValueError, match="after"):
        PlateauStopping("val/x", True, after=2.0)
    with pytest.raises(ValueError, match="confirmations"):
        PlateauStopping("val/x", True, confirmations=0)
    assert plateau_stopping(None, "val/x", True) is None
    assert plateau_stopping({"enabled": False}, "val/x", True) is None
    assert isinstance(plateau_stopping({"enabled": True, "after": 0.3}, "val/x", True), PlateauStopping)


class ScriptedScore(pl.LightningModule):
    """One parameter; its validation metric is a given function of the global step."""

    def __init__(self, score):
        super().__init__()
        self.weight, self.score = torch.nn.Parameter(torch.zeros(1)), score

    def training_step(self, batch, batch_index):
        return (self.weight - batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_index):
        self.log("val/score", float(self.score(self.global_step)))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(score, stopper, tmp_path, max_steps=300):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(1000, 1)), batch_size=1)
    trainer = pl.Trainer(max_steps=max_steps, val_check_interval=10, check_val_every_n_epoch=None,
                         limit_val_batches=1, num_sanity_val_steps=0, callbacks=[stopper], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(ScriptedScore(score), train_dataloaders=data, val_dataloaders=data)
    return trainer


def test_lightning_stops_the_run_where_the_criterion_says(tmp_path):
    # the peaked curve above through a real Trainer: validation at steps 10, 20, ...; tolerance 0 -> stop at 150
    stopper = PlateauStopping("val/score", lower_better=False, after=0.0, confirmations=1, tolerance=0.0)
    trainer = fit(lambda step: min(step, 200 - step) / 10, stopper, tmp_path)
    assert stopper.stopped_at == 150 and trainer.global_step == 150
    restored = PlateauStopping("val/score", lower_better=False)
    restored.load_state_dict(stopper.state_dict())  # travels in Lightning checkpoints
    assert restored.steps == list(range(10, 151, 10)) and restored.stopped_at == 150
    rising = PlateauStopping("val/score", lower_better=False, after=0.0, confirmations=1)
    assert fit(lambda step: step, rising, tmp_path).global_step == 300 and rising.stopped_at is None


def test_ldznet_train_stops_at_the_plateau(tmp_path):
    from common.config import REPO_ROOT
    from common.testing import write_tiny_stable_diffusion
    from ldznet.train import train
    from tests.helpers.toy_phrasecut import write_toy_phrasecut

    tiny = REPO_ROOT / "experiments" / "chapter3" / "tiny.yaml"

    sd = write_tiny_stable_diffusion(tmp_path / "tiny_sd", seed=2)
    phrasecut = write_toy_phrasecut(tmp_path / "VGPhraseCut_v0", samples_per_split=4, size=64)
    # a tolerance no gain can exceed: the criterion holds as soon as the curve has its 4 points
    cfg = load_config(tiny, [f"model.stable_diffusion.path={sd}", f"data.train.root={phrasecut}",
                             f"data.val.root={phrasecut}", "data.val_limit=2", "log_images_every=0",
                             "trainer.max_steps=40", "trainer.val_check_interval=2", "experiment=stop",
                             "schedule.stop_at_plateau.enabled=true", "schedule.stop_at_plateau.after=0",
                             "schedule.stop_at_plateau.confirmations=1", "schedule.stop_at_plateau.tolerance=1e9"])
    run_dir = train(cfg, root=tmp_path / "runs")
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 8  # the 4th validation


def test_sharingan_train_stops_at_the_plateau(tmp_path):
    from common.config import REPO_ROOT
    from common.testing import write_depth_fixtures
    from sharingan.train import run_stage

    data = write_depth_fixtures(tmp_path / "depth_data")
    # end to end: 7 optimiser steps per iteration, KITTI validation every iteration; the criterion holds as soon
    # as the curve has its 4 points -> the 4th iteration of 12, global step 28
    cfg = load_config(REPO_ROOT / "experiments" / "chapter2" / "depth_tiny.yaml",
                      [*data, "schedule.train_iterations=12", "schedule.validate_every=1", "logging.image_every=0",
                       "experiment=stop", "schedule.stop_at_plateau.enabled=true", "schedule.stop_at_plateau.after=0",
                       "schedule.stop_at_plateau.confirmations=1", "schedule.stop_at_plateau.tolerance=1e9"])
    run_dir = run_stage(cfg, "train", tmp_path / "runs")["run_dir"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stopped_at_plateau"] == metrics["global_steps"] == 28
