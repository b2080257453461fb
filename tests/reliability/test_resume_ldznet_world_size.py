"""LD-ZNet resume (issue 13): a checkpoint written by another number of processes, at another global batch or
with another gradient accumulation is refused, the message naming both world sizes and batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.config import load_config
from common.testing import write_tiny_stable_diffusion
from ldznet.lit_module import TrainingPlan
from ldznet.train import check_resume_world, train
from tests.helpers.toy_phrasecut import write_toy_phrasecut
from tests.reliability.test_resume_ldznet import TINY, overrides


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return {"sd": write_tiny_stable_diffusion(root / "tiny_sd", seed=2),
            "phrasecut": write_toy_phrasecut(root / "VGPhraseCut_v0", samples_per_split=4, size=64)}


def plan(devices: int, batch_size: int, accumulation: int = 1) -> TrainingPlan:
    global_batch = batch_size * devices * accumulation
    return TrainingPlan(batch_size=batch_size, devices=devices, accumulation=accumulation, global_batch=global_batch,
                        learning_rate=1e-4, steps=4, samples=4 * global_batch, epochs=None, reference_global_batch=2,
                        ema_decay=0.99, length_from="trainer.max_steps")


def test_resume_needs_the_same_world_size_global_batch_and_accumulation(caplog):
    saved = {"seed": 0, "next_sample_number": 2, "world_size": 2, "global_batch": 4, "accumulation": 1}
    check_resume_world(saved, plan(devices=2, batch_size=2), Path("last.ckpt"))  # the same run: accepted
    with pytest.raises(ValueError, match=r"written by 2 process\(es\) at global batch 4 \(2 per device x 2 devices "
                                         r"x 1 accumulation\), this run has 1 process\(es\) at global batch 4 \(4 "
                                         r"per device.*trainer.num_nodes = 2, data.batch_size=2 and "
                                         r"trainer.accumulate_grad_batches=1$"):
        check_resume_world(saved, plan(devices=1, batch_size=4), Path("last.ckpt"))  # another world size
    with pytest.raises(ValueError, match=r"this run has 2 process\(es\) at global batch 2 "):
        check_resume_world(saved, plan(devices=2, batch_size=1), Path("last.ckpt"))  # another batch
    with pytest.raises(ValueError, match=r"this run has 2 process\(es\) at global batch 4 \(1 per device x 2 "
                                         r"devices x 2 accumulation\)"):
        check_resume_world(saved, plan(devices=2, batch_size=1, accumulation=2), Path("last.ckpt"))
    legacy = {"seed": 0, "next_sample_number": 2}  # written before the world size was stored: a warning
    with caplog.at_level("WARNING", logger="ldznet.train"):
        check_resume_world(legacy, plan(devices=1, batch_size=2), Path("old.ckpt"))
    assert "old.ckpt does not record its global batch" in caplog.text


def test_train_refuses_a_checkpoint_of_another_global_batch(world, tmp_path):
    checkpoint = tmp_path / "last.ckpt"
    torch.save({"ldznet_segmenter": {"variant": "ldznet", "task": "phrasecut"}, "state_dict": {},
                "ldznet_train_state": {"seed": 0, "next_sample_number": 4, "world_size": 2, "global_batch": 4,
                                       "accumulation": 1}}, checkpoint)
    # the same data.batch_size (2) on one process instead of two: half the global batch
    with pytest.raises(ValueError, match=rf"cannot resume from {checkpoint}: it was written by 2 process\(es\) at "
                                         r"global batch 4 .* this run has 1 process\(es\) at global batch 2"):
        train(load_config(TINY, overrides(world) + [f"resume={checkpoint}", "trainer.max_steps=4"]), root=tmp_path)
