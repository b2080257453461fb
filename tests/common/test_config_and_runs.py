"""Config composition, overrides and run folders."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from common.config import ConfigKeyError, load_config, parse_cli
from common.runs import start_run, write_metrics


@pytest.fixture()
def configs(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  width: 8\n  depth: 2\noptim:\n  lr: 0.1\n")
    (tmp_path / "more.yaml").write_text("defaults: [base]\noptim:\n  betas: [0.5, 0.9]\n")
    (tmp_path / "experiment.yaml").write_text("defaults: [more.yaml]\nmodel:\n  width: 16\nseed: 3\n")
    return tmp_path


def test_defaults_compose_left_to_right_then_file(configs):
    cfg = load_config(configs / "experiment.yaml")
    assert cfg.model.width == 16 and cfg.model.depth == 2
    assert list(cfg.optim.betas) == [0.5, 0.9] and cfg.optim.lr == 0.1


def test_overrides_and_unknown_key_error_lists_valid_keys(configs):
    cfg = load_config(configs / "experiment.yaml", ["optim.lr=0.5", "+extra.flag=true"])
    assert cfg.optim.lr == 0.5 and cfg.extra.flag is True
    with pytest.raises(ConfigKeyError) as error:
        load_config(configs / "experiment.yaml", ["optim.lrr=0.5"])
    message = str(error.value)
    assert "optim.lrr" in message and "optim.lr" in message and "model.width" in message


def test_missing_include_and_cycle_are_named(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: [nothere]\n")
    with pytest.raises(FileNotFoundError, match="nothere"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("defaults: [c]\n")
    (tmp_path / "c.yaml").write_text("defaults: [b]\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(tmp_path / "b.yaml")


def test_repository_trainer_base_composes():
    from common.config import EXPERIMENTS_ROOT

    cfg = load_config(EXPERIMENTS_ROOT / "common" / "trainer_cpu_tiny.yaml")
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.max_steps == 4 and cfg.seed == 1729


def test_parse_cli():
    assert parse_cli(["x.yaml", "a=1"]) == (__import__("pathlib").Path("x.yaml"), ["a=1"])
    assert parse_cli(["a=1", "experiment=y.yaml"])[0].name == "y.yaml"
    with pytest.raises(SystemExit):
        parse_cli(["a=1"])


def test_start_run_layout(configs, tmp_path):
    cfg = load_config(configs / "experiment.yaml")
    run_dir = start_run(cfg, "chapter2", "depth_test", root=tmp_path / "runs", timestamp="t0")
    assert run_dir == tmp_path / "runs" / "chapter2" / "depth_test" / "t0"
    for name in ("config.yaml", "env.json", "checkpoints", "tb"):
        assert (run_dir / name).exists(), name
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["torch"].startswith("2.") and set(env["git"]) == {"sha", "dirty"}
    assert OmegaConf.load(run_dir / "config.yaml").model.width == 16
    first = torch.rand(1).item()
    start_run(cfg, "chapter2", "depth_test", root=tmp_path / "runs", timestamp="t1")
    assert torch.rand(1).item() == first  # seeded from cfg.seed both times
    write_metrics(run_dir, {"a": 1})
    write_metrics(run_dir, {"b": 2.5})
    assert json.loads((run_dir / "metrics.json").read_text()) == {"a": 1, "b": 2.5}
