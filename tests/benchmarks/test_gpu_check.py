"""`python -m benchmarks.gpu_check` (`make gpu-check`): refuses without CUDA; its pieces run at tiny sizes on the CPU
(the GPU run itself has not happened yet: docs/benchmarks.md "GPU check")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from benchmarks import BENCHMARKS, gpu_check
from common.config import REPO_ROOT


def test_refuses_without_cuda(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "gpu-check needs a CUDA GPU" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written, nothing measured
    assert gpu_check.main(["--device", "cpu", "--out", str(tmp_path)]) == 2  # the CPU only with --tiny
    assert "refuses --device cpu without --tiny" in capsys.readouterr().err


def test_command_line_refuses_on_a_machine_without_cuda(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--out", str(tmp_path)], cwd=REPO_ROOT,
                             env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 2 and "needs a CUDA GPU" in process.stderr


def test_full_plan_is_the_issue():
    full = gpu_check.plan(tiny=False)
    assert full["iterations"] == 20 and full["benchmark_mode"] == "cuda"
    assert full["depth"] == {"size": [192, 640], "batch": 2}
    assert full["faces"] == {"size": [128, 128], "batch": 16}
    assert full["ldznet"] == {"architecture": "sd", "size": 384, "batch": 4}


def test_time_budget_records_pieces_not_run(tmp_path):
    assert gpu_check.main(["--device", "cpu", "--tiny", "--only", "ddp", "--only", "resume", "--budget-s", "0",
                           "--out", str(tmp_path)]) == 1
    [path] = tmp_path.glob("gpu-check-tiny-cpu-*.json")
    pieces = json.loads(path.read_text())["pieces"]
    assert [piece["status"].split(":")[0] for piece in pieces] == ["not run", "not run"]


@pytest.mark.slow
def test_every_piece_runs_tiny_on_the_cpu(tmp_path):
    """~2-3 minutes on a shared 2-core CPU: training (both chapters, every variant), exact resume, DDP (skipped
    with its note), the benchmark set at --quick sizes; one JSON + one Markdown file."""
    assert gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    [json_path] = tmp_path.glob("gpu-check-tiny-cpu-*.json")
    [md_path] = tmp_path.glob("gpu-check-tiny-cpu-*.md")
    results = json.loads(json_path.read_text())
    pieces = {piece["name"]: piece for piece in results["pieces"]}
    assert list(pieces) == ["training", "resume", "ddp", "demo", "benchmarks"]
    assert pieces["training"]["status"] == "ok"
    rows = pieces["training"]["tables"][0]["rows"]
    assert {(row["task"], row["variant"]) for row in rows} == {
        *((task, variant) for task in ("depth", "faces") for variant in gpu_check.SHARINGAN_VARIANTS),
        *(("ldznet", variant) for variant in gpu_check.LDZNET_VARIANTS)}
    assert all(row["iterations"] == gpu_check.plan(tiny=True)["iterations"] for row in rows)
    compiled = [row for row in rows if "compile" in row["variant"]]
    assert compiled and all(set(row["compile"].values()) == {"compiled"} for row in compiled)
    assert pieces["resume"]["status"] == "ok"
    assert all(row["exact"] for row in pieces["resume"]["tables"][0]["rows"])
    assert pieces["ddp"]["status"].startswith("skipped: CPU tiny mode")
    assert pieces["demo"]["status"] == "ok"
    assert pieces["benchmarks"]["status"] == "ok"
    assert {section["name"] for section in pieces["benchmarks"]["sections"]} == set(BENCHMARKS)  # every registered one
    assert results["environment"]["git"]["sha"] and results["command"].startswith("python -m benchmarks.gpu_check")
    assert "## resume: ok" in md_path.read_text()


def test_demo_piece_runs_the_demo_and_reads_its_stage_statuses(tmp_path):
    """The demo piece starts `python -m demo --quick device=<device>` (tiny mode: one world stage on the CPU) and
    reads every stage's status from what the demo prints last; a stage that did not run fails the piece."""
    piece = gpu_check.demo_piece(gpu_check.plan(tiny=True), torch.device("cpu"), tiny=True)
    assert piece["status"] == "ok", piece["notes"]
    rows = {row["stage"]: row["status"] for row in piece["tables"][0]["rows"]}
    assert rows["world_shapes"] == "done" and rows["tiny_ldm"] == "not run"
    assert "device=cpu" in piece["tables"][0]["title"]
    printed = "noise\nreport: /x/REPORT.md\n  world_shapes   done\n  faces          not run: not selected (--only)\n"
    assert gpu_check.demo_statuses(printed) == {"world_shapes": "done", "faces": "not run"}
    assert gpu_check.demo_statuses("no report line\n  world_shapes   done\n") == {}
