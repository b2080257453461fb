"""experiments/demo/study.yaml composes: every override names a real key of its chapter config (a misspelt key
would leave that stage at the demo's length), and no training stage of the study is shorter than the demo's."""

from __future__ import annotations

from common.config import load_config
from demo.plan import DEMO_EXPERIMENTS, build_stages


def _stages(name: str) -> dict:
    return {stage.name: stage.config for stage in build_stages(load_config(DEMO_EXPERIMENTS / name, []))}


def test_study_overrides_compose_and_never_shorten_a_training_stage():
    study, demo = _stages("study.yaml"), _stages("demo.yaml")
    for name in ("depth", "faces", "ldznet", "floors_segmentation"):
        composed = study[name]["composed"]
        assert "error" not in composed, (name, composed.get("error"))
    for part in ("vae", "text", "unet"):
        assert int(study["tiny_ldm"][part]["steps"]) >= int(demo["tiny_ldm"][part]["steps"]), part
    for name in ("depth", "faces"):
        for key in ("pretrain_generator_iterations", "pretrain_task_iterations", "train_iterations"):
            assert study[name]["composed"]["schedule"][key] >= demo[name]["composed"]["schedule"][key], (name, key)
    assert study["ldznet"]["composed"]["schedule"]["train_samples"] >= \
        demo["ldznet"]["composed"]["schedule"]["train_samples"]
