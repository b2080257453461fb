"""Divergence guard of Chapter-3 training: a non-finite loss stops the run naming the step and the loss term
and leaves the last good checkpoint intact; `divergence_policy=skip` drops such batches and counts them.
Also the training data's empty-prompt check (the >77-token truncation and the evaluation's empty-prompt errors
are tested in tests/ldznet/test_ldznet_sd.py and test_ldznet_eval.py)."""

import json
from pathlib import Path

import pytest
import torch

from common.checkpoints import load_torch
from common.config import load_config
from common.resilience import NonFiniteLossError
from common.testing import write_tiny_stable_diffusion
from ldznet.data import NumberedSamples
from ldznet.train import main, train
from tests.helpers.nan_injection import nan_in_ldznet
from tests.helpers.toy_phrasecut import write_toy_phrasecut

TINY = Path(__file__).resolve().parents[2] / "experiments" / "chapter3" / "tiny.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return {"sd": write_tiny_stable_diffusion(root / "tiny_sd", seed=2),
            "phrasecut": write_toy_phrasecut(root / "VGPhraseCut_v0", samples_per_split=4, size=64)}


def overrides(world):
    return ["model.variant=znet", f"model.stable_diffusion.path={world['sd']}",
            f"data.train.root={world['phrasecut']}", f"data.val.root={world['phrasecut']}", "data.val_limit=2",
            "trainer.checkpoint_every_n_steps=1", "log_images_every=0", "trainer.max_steps=4"]


@pytest.fixture
def nan_at_step_2(monkeypatch):
    nan_in_ldznet(monkeypatch, step=2)


def test_nan_loss_stops_naming_step_and_term_and_keeps_last_checkpoint(world, tmp_path, nan_at_step_2, capsys,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)  # main() writes under ./runs
    assert main([str(TINY), *overrides(world)]) == 3
    message = capsys.readouterr().err
    assert "step 2" in message and "bce=nan" in message and "divergence_policy=skip" in message
    (run_dir,) = (tmp_path / "runs" / "chapter3" / "znet").iterdir()
    checkpoint = load_torch(run_dir / "checkpoints" / "last.ckpt")  # the last good one: after step 1
    assert checkpoint["global_step"] == 2 and checkpoint["ema_state_dict"]["updates"] == 2
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())
    assert not (run_dir / "segmenter.pt").exists()  # nothing exported from a diverged run
    with pytest.raises(NonFiniteLossError, match=r"step 2: non-finite loss term\(s\) bce=nan"):
        train(load_config(TINY, overrides(world)), root=tmp_path / "again")


def test_skip_policy_drops_the_batch_and_counts_it(world, tmp_path, nan_at_step_2):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with pytest.warns(RuntimeWarning, match="step 2: non-finite loss"):
        run_dir = train(load_config(TINY, overrides(world) + ["divergence_policy=skip"]), root=tmp_path)
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["skipped_batches"] == 1 and summary["global_step"] == 4
    checkpoint = load_torch(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["ema_state_dict"]["updates"] == 3  # no EMA update for the dropped batch
    assert checkpoint["ldznet_train_state"]["skipped_batches"] == 1
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    skipped = {event.step: event.value for event in events.Scalars("train/skipped_batches")}
    assert skipped[1] == 0 and skipped[3] == 1
    assert 2 not in {event.step for event in events.Scalars("train/loss_step")}


def test_unknown_divergence_policy_is_refused(world, tmp_path):
    with pytest.raises(ValueError, match="divergence policy must be one of"):
        train(load_config(TINY, overrides(world) + ["divergence_policy=ignore"]), root=tmp_path)


def test_empty_training_prompt_names_the_sample():
    class Toy:
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return {"prompt": "  " if index == 1 else "a dog", "image_id": f"img{index}"}

    samples = NumberedSamples(Toy(), seed=0)
    assert samples[(0, 0)]["prompt"] == "a dog"
    with pytest.raises(ValueError, match=r"Toy sample 1 \(image img1\) has an empty prompt"):
        samples[(1, 7)]
