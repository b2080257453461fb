"""experiments/demo/study.yaml composes: every override names a real key of its chapter config (a misspelt key
would leave that stage at the demo's length), and no training stage of the study is shorter than the demo's;
study_chapter3_long.yaml (continue_from) changes only the Chapter-3 training stages."""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from common.config import load_config
from demo.data_overrides import continue_chapter3_part
from demo.plan import DEMO_EXPERIMENTS, build_stages


@functools.cache  # composing every chapter config takes seconds; the tests only read the result
def _stages(name: str, *overrides: str) -> dict:
    return {stage.name: stage.config for stage in build_stages(load_config(DEMO_EXPERIMENTS / name, list(overrides)))}


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


def test_the_chapter3_continuation_changes_only_the_chapter3_training_stages():
    """study_chapter3_long.yaml reuses every other stage of the study (same configs, so same cache keys) and
    lengthens the Chapter-3 training; the study's own stage configs carry no `continue_from`."""
    study, long = _stages("study.yaml"), _stages("study_chapter3_long.yaml")
    assert set(study) == set(long)
    changed = {name for name in study if study[name] != long[name]}
    assert changed == {"ldznet_train", "floor_image_only", "ldznet", "floors_segmentation"}, changed
    assert "continue_from" not in study["ldznet_train"] and "continue_from" not in study["floor_image_only"]
    assert long["ldznet_train"]["continue_from"] == long["floor_image_only"]["continue_from"]
    assert long["ldznet"]["composed"]["schedule"]["train_samples"] == \
        2.5 * study["ldznet"]["composed"]["schedule"]["train_samples"]


def test_continue_from_must_not_be_the_output_folder():
    cfg = load_config(DEMO_EXPERIMENTS / "study_chapter3_long.yaml", ["continue_from=runs/x", "out=runs/x"])
    with pytest.raises(ValueError, match="must differ from out"):
        build_stages(cfg)


def test_a_continued_part_resumes_from_the_newest_checkpoint_of_the_same_part(tmp_path):
    runs = tmp_path / "study" / "ldznet_train" / "seed1_znet" / "runs" / "chapter3" / "znet"
    for name, mtime in (("20260101-000000", 100), ("20260102-000000", 200)):
        checkpoint = runs / name / "checkpoints" / "last.ckpt"
        checkpoint.parent.mkdir(parents=True)
        checkpoint.write_bytes(b"")
        os.utime(checkpoint, (mtime, mtime))
    cfg = OmegaConf.create({"model": {"variant": "znet"}, "resume": None})
    context = SimpleNamespace(config={"continue_from": str(tmp_path / "study")})
    continue_chapter3_part(context, "ldznet_train", "seed1_znet", cfg)
    assert cfg.resume == str(runs / "20260102-000000" / "checkpoints" / "last.ckpt")
    with pytest.raises(FileNotFoundError, match="seed2_znet"):
        continue_chapter3_part(context, "ldznet_train", "seed2_znet", cfg)
    untouched = OmegaConf.create({"model": {"variant": "znet"}, "resume": None})
    continue_chapter3_part(SimpleNamespace(config={}), "ldznet_train", "seed1_znet", untouched)
    assert untouched.resume is None


@pytest.mark.parametrize("name", ["demo.yaml", "study.yaml"])
def test_chapter3_validation_reads_the_tables_prompt_form_on_every_val_phrase(name):
    """The plateau check and the curves read the PhraseCut table's metric: the validation passes the phrase as the
    test protocol does (with random templates the curve kept rising after the raw-phrase test rows had stopped,
    docs/demo-study-notes.md), on the whole validation split, not on its first few phrases."""
    from ldznet.pipeline import evaluation_nodes

    composed = _stages(name)["ldznet"]["composed"]
    test_node = evaluation_nodes(OmegaConf.create(composed))["phrasecut"]
    assert composed["data"]["val"]["prompt_mode"] == test_node["prompt_mode"] == "raw"
    assert composed["data"]["val"]["split"] == "val" and test_node["split"] == "test"
    assert composed["data"]["val_limit"] is None


def test_chapter3_weights_best_changes_only_the_evaluating_stages_and_picks_best_ckpt(tmp_path):
    """`chapter3_weights=best` scores each Chapter-3 run's best.ckpt (early stopping on the validation split);
    it enters the keys of the two stages that evaluate, and nothing else; a missing best.ckpt names the file."""
    from demo.data_overrides import evaluated_checkpoint

    study = _stages("study.yaml")
    best = {stage.name: stage.config for stage in build_stages(
        load_config(DEMO_EXPERIMENTS / "study.yaml", ["chapter3_weights=best"]))}
    changed = {name for name in study if study[name] != best[name]}
    assert changed == {"ldznet", "floors_segmentation"}, changed
    assert "chapter3_weights" not in study["ldznet"]
    with pytest.raises(ValueError, match="chapter3_weights must be one of"):
        build_stages(load_config(DEMO_EXPERIMENTS / "study.yaml", ["chapter3_weights=newest"]))

    run = {"run_dir": str(tmp_path), "segmenter": str(tmp_path / "segmenter.pt")}
    assert evaluated_checkpoint(run, None) == evaluated_checkpoint(run, "final") == run["segmenter"]
    with pytest.raises(FileNotFoundError, match="best.ckpt"):
        evaluated_checkpoint(run, "best")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"")
    assert evaluated_checkpoint(run, "best") == str(tmp_path / "checkpoints" / "best.ckpt")


def test_the_learning_rate_probe_changes_only_the_chapter3_learning_rate():
    """study_chapter3_lr_probe.yaml (docs/demo-study-notes.md, "Plateaus") is the study at one probe seed with
    another Chapter-3 learning rate: the same stages as the study at that seed, only those that train or score a
    Chapter-3 model differ, and in the composed Chapter-3 config only `optim.base_learning_rate` does."""
    study = _stages("study.yaml", "seed=50", "seeds=1")
    for overrides, base in (((), 1.25e-4), (("lr_probe_base_learning_rate=2.5e-4",), 2.5e-4)):
        probe = _stages("study_chapter3_lr_probe.yaml", *overrides)
        assert set(probe) == set(study)
        changed = {name for name in study if study[name] != probe[name]}
        assert changed == {"ldznet_train", "floor_image_only", "ldznet", "floors_segmentation"}, changed
        composed, reference = (OmegaConf.create(s["ldznet"]["composed"]) for s in (probe, study))
        assert composed.optim.base_learning_rate == pytest.approx(base)
        assert reference.optim.base_learning_rate == pytest.approx(5e-5)
        composed.optim.base_learning_rate = reference.optim.base_learning_rate
        assert composed == reference


def test_the_batch_probe_changes_only_the_chapter3_batch_and_its_step_counts():
    """study_chapter3_batch_probe.yaml (docs/demo-study-notes.md, "Plateaus") is the study at one probe seed with
    the Chapter-3 batch at 32: only the stages that train or score a Chapter-3 model differ; in the composed
    Chapter-3 config only the batch, the sample budget and the step intervals do, the validation every 800 samples
    as in the study (every 100 steps at batch 8), and the learning rate follows the config's linear rule."""
    study = _stages("study.yaml", "seed=50", "seeds=1")
    probe = _stages("study_chapter3_batch_probe.yaml")
    assert set(probe) == set(study)
    changed = {name for name in study if study[name] != probe[name]}
    assert changed == {"ldznet_train", "floor_image_only", "ldznet", "floors_segmentation"}, changed
    composed, reference = (OmegaConf.create(s["ldznet"]["composed"]) for s in (probe, study))
    assert composed.data.batch_size == 32 and reference.data.batch_size == 8
    assert composed.schedule.train_samples == 20000
    assert composed.trainer.val_check_interval * 32 == reference.trainer.val_check_interval * 8
    # the same base rate: lr = base x batch = 1.6e-3 (ldznet.lit_module.training_plan), not tuned
    assert composed.optim.base_learning_rate == reference.optim.base_learning_rate == pytest.approx(5e-5)
    assert composed.optim.batch_size == 32
    for key in ("data.batch_size", "optim.batch_size", "schedule.train_samples", "trainer.val_check_interval",
                "trainer.checkpoint_every_n_steps"):
        OmegaConf.update(composed, key, OmegaConf.select(reference, key))
    assert composed == reference


CHAPTER_STAGES = {"faces", "depth", "ldznet_train", "floor_image_only", "probe", "ldznet", "floors_depth",
                  "floors_faces", "floors_segmentation"}


def test_device_cpu_adds_nothing_and_cuda_moves_only_the_chapters_to_the_gpu():
    """`device: cpu` (the default) leaves every stage config, hence every cache key, as it was; `device=cuda`
    changes only the stages that train or evaluate with a chapter's code, by Lightning's accelerator (one device)
    and the chapter's evaluation device; the worlds and the tiny LDM are untouched."""
    default, cpu, cuda = _stages("demo.yaml"), _stages("demo.yaml", "device=cpu"), _stages("demo.yaml", "device=cuda")
    assert default == cpu
    assert {name for name in default if default[name] != cuda[name]} == CHAPTER_STAGES
    for name in ("depth", "faces", "ldznet"):
        composed, before = (OmegaConf.create(s[name]["composed"]) for s in (cuda, default))
        assert "error" not in composed, composed.get("error")
        assert composed.trainer.accelerator == "gpu" and composed.trainer.devices == 1
        assert before.trainer.accelerator == "cpu"
        if name != "ldznet":  # Chapter 2 evaluates on the GPU whenever one is visible (eval.device auto/absent)
            assert OmegaConf.select(composed, "eval.device", default="auto") == "auto"
    assert cuda["ldznet"]["composed"]["pipeline"]["evaluation"]["device"] == "cuda"
    assert default["ldznet"]["composed"]["pipeline"]["evaluation"]["device"] == "cpu"
    assert cuda["probe"]["composed"]["device"] == "cuda" and default["probe"]["composed"]["device"] == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        build_stages(load_config(DEMO_EXPERIMENTS / "demo.yaml", ["device=gpu"]))


def test_the_demo_refuses_cuda_without_a_gpu_before_running_anything(tmp_path, monkeypatch):
    from demo.__main__ import main

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit, match="device=cuda: no CUDA device"):
        main(["--quick", f"out={tmp_path / 'run'}", "device=cuda"])
    assert not (tmp_path / "run").exists()


def test_the_plateau_study_is_the_study_on_cuda_with_longer_rows_only():
    """study_plateau.yaml = study.yaml on the GPU (its default device) with the unplateaued rows lengthened: in the
    composed configs only the device keys and those lengths (and their validation intervals) differ."""
    study, plateau = _stages("study.yaml", "device=cuda"), _stages("study_plateau.yaml")
    assert plateau["tiny_ldm"] == study["tiny_ldm"] and plateau["world_shapes"] == study["world_shapes"]
    changes = {"depth": {"schedule.pretrain_task_iterations": (800, 1600)},
               "faces": {"schedule.train_iterations": (480, 1920), "schedule.validate_every": (12, 48),
                         "schedule.checkpoint_every": (60, 240)},
               "ldznet": {"schedule.train_samples": (8000, 40000), "trainer.val_check_interval": (100, 250),
                          "trainer.checkpoint_every_n_steps": (200, 1000)}}
    for name, keys in changes.items():
        composed, reference = (OmegaConf.create(s[name]["composed"]) for s in (plateau, study))
        for key, (before, after) in keys.items():
            assert (OmegaConf.select(reference, key), OmegaConf.select(composed, key)) == (before, after), key
            OmegaConf.update(composed, key, before)
        assert composed == reference, name
    assert plateau["probe"] == study["probe"]
    # scored at each Chapter-3 run's best validation point: the curves are past their peak at 5000 steps
    assert plateau["ldznet"]["chapter3_weights"] == plateau["floors_segmentation"]["chapter3_weights"] == "best"
    assert "chapter3_weights" not in study["ldznet"] and "chapter3_weights" not in plateau["ldznet_train"]


def test_the_study_until_plateau_is_the_plateau_study_on_the_cpu_with_stopping_only():
    """study_until_plateau.yaml = study_plateau.yaml on the CPU, its lengths as caps, with the validated runs
    stopping at their plateau no earlier than study.yaml's lengths: only those keys (and the Chapter-3
    validation interval) differ in the composed configs, and the minimum x the cap is the 90-minute study's
    length."""
    plateau, until = _stages("study_plateau.yaml", "device=cpu"), _stages("study_until_plateau.yaml")
    study = _stages("study.yaml")
    assert {name for name in plateau if plateau[name] != until[name]} == {  # floors_faces: the faces config
        "faces", "floors_faces", "ldznet_train", "floor_image_only", "ldznet", "floors_segmentation"}
    for name in ("faces", "ldznet"):
        composed, reference = (OmegaConf.create(s[name]["composed"]) for s in (until, plateau))
        stop = composed.schedule.stop_at_plateau
        assert stop.enabled and not reference.schedule.stop_at_plateau.enabled
        assert (stop.tail, stop.tolerance, stop.noise_allowance) == (0.33, 0.1, 2.0)  # the report's criterion
        OmegaConf.update(composed, "schedule.stop_at_plateau", reference.schedule.stop_at_plateau, merge=False)
        if name == "ldznet":
            assert (reference.trainer.val_check_interval, composed.trainer.val_check_interval) == (250, 125)
            composed.trainer.val_check_interval = 250
        assert composed == reference, name
    faces, ldznet = until["faces"]["composed"]["schedule"], until["ldznet"]["composed"]["schedule"]
    assert faces["stop_at_plateau"]["after"] * faces["train_iterations"] == \
        study["faces"]["composed"]["schedule"]["train_iterations"]
    assert ldznet["stop_at_plateau"]["after"] * ldznet["train_samples"] == \
        study["ldznet"]["composed"]["schedule"]["train_samples"]
    assert until["ldznet"]["chapter3_weights"] == "best"


def test_the_90_minute_until_plateau_study_adds_only_the_cpu_switches_and_the_chapter3_cap():
    """study_until_plateau_90min.yaml = study_until_plateau.yaml + channels_last and fused Adam for the three
    chapter configs + the Chapter-3 cap at 8000 steps with the minimum still study.yaml's 1000 steps; nothing
    else (worlds, tiny LDM, probe, seeds, stop rule) differs."""
    until, fast = _stages("study_until_plateau.yaml"), _stages("study_until_plateau_90min.yaml")
    study = _stages("study.yaml")
    assert {name for name in until if until[name] != fast[name]} == {
        "faces", "depth", "floors_faces", "floors_depth", "ldznet_train", "floor_image_only", "ldznet",
        "floors_segmentation"}
    for name in ("faces", "depth", "ldznet"):
        composed, reference = (OmegaConf.create(s[name]["composed"]) for s in (fast, until))
        assert composed.performance.channels_last and composed.performance.fused_optimizer is True
        assert not reference.performance.channels_last and reference.performance.fused_optimizer == "auto"
        composed.performance = reference.performance
        if name == "ldznet":
            assert composed.schedule.train_samples == 64000 and reference.schedule.train_samples == 40000
            assert composed.schedule.stop_at_plateau.after * composed.schedule.train_samples == \
                study["ldznet"]["composed"]["schedule"]["train_samples"]
            composed.schedule.train_samples = reference.schedule.train_samples
            composed.schedule.stop_at_plateau.after = reference.schedule.stop_at_plateau.after
        assert composed == reference, name
    assert fast["floor_image_only"]["config"] == fast["ldznet_train"]["config"]


def test_the_plateau_study_publishes_to_its_own_page():
    from demo.__main__ import publish_options

    options = publish_options(load_config(DEMO_EXPERIMENTS / "study_plateau.yaml"))
    assert options["name"] == "demo-study-plateau" and "docs/demo-study.md" in options["reading"]
    fixed = publish_options(load_config(DEMO_EXPERIMENTS / "study.yaml"))  # the main study until 2026-12-05
    assert fixed["name"] == "demo-study-fixed" and "docs/demo-study.md" in fixed["reading"]


def test_python_m_demo_study_is_the_90_minute_until_plateau_study_and_publishes_the_main_page(capsys):
    """`--study` (make demo-study) runs study_until_plateau_90min.yaml: every validated run stops at its plateau,
    and `--publish` writes the main page docs/demo-study.md (the notes appended); the second study of the
    stability check (make demo-study-seed100) is the same config at other seeds under another page name, whose
    reading points to the main page."""
    from demo.__main__ import STUDY_CONFIG, main, publish_options
    from demo.report import SECOND_STUDY_NAME, STUDY_NAME

    assert STUDY_CONFIG == "study_until_plateau_90min.yaml"
    cfg = load_config(DEMO_EXPERIMENTS / STUDY_CONFIG)
    assert publish_options(cfg)["name"] == STUDY_NAME == "demo-study" and int(cfg.seeds) == 3
    study = _stages(STUDY_CONFIG)
    for name in ("faces", "ldznet"):  # the image-only floor trains with ldznet_train's config (test above)
        assert study[name]["composed"]["schedule"]["stop_at_plateau"]["enabled"], name
    second = publish_options(load_config(DEMO_EXPERIMENTS / STUDY_CONFIG, [f"publish_name={SECOND_STUDY_NAME}"]))
    assert second["name"] == "demo-study-seed100" and "docs/demo-study.md" in second["reading"]
    assert main(["--study", "--list"]) == 0  # the CLI composes that config (stage list only, nothing runs)
    assert "floor_image_only" in capsys.readouterr().out


def test_the_square_root_probe_changes_only_the_chapter3_batch_rate_and_step_counts():
    """study_chapter3_sqrt_probe.yaml (docs/demo-study-notes.md, "Plateaus"): batch 32 at the square-root rule's
    rate, 4e-4 x sqrt(32 / 8) = 8e-4, for 30000 samples; only the Chapter-3 stages differ from the study at seed
    50, and in their composed config only those keys."""
    study = _stages("study.yaml", "seed=50", "seeds=1")
    probe = _stages("study_chapter3_sqrt_probe.yaml")
    assert {name for name in study if study[name] != probe[name]} == {
        "ldznet_train", "floor_image_only", "ldznet", "floors_segmentation"}
    composed, reference = (OmegaConf.create(s["ldznet"]["composed"]) for s in (probe, study))
    assert composed.data.batch_size * composed.optim.base_learning_rate == pytest.approx(
        reference.data.batch_size * reference.optim.base_learning_rate * (32 / 8) ** 0.5)
    assert composed.schedule.train_samples == 30000
    assert composed.trainer.val_check_interval * 32 == reference.trainer.val_check_interval * 8
    for key in ("data.batch_size", "optim.batch_size", "optim.base_learning_rate", "schedule.train_samples",
                "trainer.val_check_interval", "trainer.checkpoint_every_n_steps"):
        OmegaConf.update(composed, key, OmegaConf.select(reference, key))
    assert composed == reference


def test_chapter3_training_parts_start_with_the_costliest_models_and_are_evaluated_in_the_config_order(
        monkeypatch, tmp_path):
    """ldznet_train's parts are handed to the workers costliest model first, across the seeds (the LDM-feature
    models, then ZNet, then RGBNet; docs/demo-study-notes.md, "The runs": a late long part left one worker alone
    for ~15 min), and the evaluation still passes each seed's checkpoints in the config's variant order, so the
    order of the parts changes no number."""
    import ldznet.pipeline
    from demo import plan

    study = {stage.name: stage for stage in build_stages(load_config(DEMO_EXPERIMENTS / "study.yaml"))}
    variants = plan.ldznet_variants(study["ldznet"].config)
    assert variants == ["rgbnet", "znet", "ldznet", "ldznet_concat"]
    assert study["ldznet_train"].parts == [
        "seed0_ldznet", "seed1_ldznet", "seed2_ldznet", "seed0_ldznet_concat", "seed1_ldznet_concat",
        "seed2_ldznet_concat", "seed0_znet", "seed1_znet", "seed2_znet", "seed0_rgbnet", "seed1_rgbnet", "seed2_rgbnet"]
    assert plan.ldznet_training_parts([7], ["rgbnet", "new_model"]) == ["seed7_new_model", "seed7_rgbnet"]

    parts = {name: {"variant": name.split("_", 1)[1], "run_dir": f"/runs/{name}", "segmenter": f"/runs/{name}.pt"}
             for name in study["ldznet_train"].parts}
    seen = []

    def fake_pipeline(cfg):
        seen.append(list(cfg.pipeline.checkpoints))
        return {"runs": list(cfg.pipeline.checkpoints), "results": {}}

    monkeypatch.setattr(ldznet.pipeline, "run_pipeline", fake_pipeline)
    monkeypatch.setattr(plan, "ldznet_seed_config", lambda ctx, seed, folder: OmegaConf.create({"pipeline": {}}))
    context = SimpleNamespace(config=study["ldznet"].config, results={"ldznet_train": {"parts": parts}})
    result = plan.run_ldznet_seed(context, "seed1", tmp_path)
    assert seen == [variants] and list(result["runs"]) == variants
    assert result["runs"]["znet"]["segmenter"] == "/runs/seed1_znet.pt"
