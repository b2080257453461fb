"""The benchmarks run (at their --quick size) and write their results; no timing or ratio is asserted."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import BENCHMARKS, load_benchmark
from benchmarks.__main__ import main
from benchmarks.report import format_cell, markdown_table
from benchmarks.timing import Context, peak_memory, time_calls


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_runs_quick_and_writes_json_and_markdown(name, tmp_path):
    assert main(["--quick", "--only", name, "--out", str(tmp_path)]) == 0
    [json_path] = tmp_path.glob("quick-cpu-*.json")
    [md_path] = tmp_path.glob("quick-cpu-*.md")
    results = json.loads(json_path.read_text())
    assert results["environment"]["benchmark_mode"] == "quick"
    assert results["environment"]["packages"]["torch"]
    [section] = results["sections"]
    assert section["name"] == name and section["status"] == "ok"
    assert section["tables"] and all(table["rows"] for table in section["tables"])
    markdown = md_path.read_text()
    assert section["title"] in markdown and "device" in markdown


def test_full_sets_match_the_issue():
    """The CUDA set is the issue's full set; the CPU set says what it reduced."""
    from benchmarks import loaders, memory, segmentation, sharingan, training_step

    cuda = Context(torch.device("cpu"), "cuda")  # plans only; nothing runs
    cpu = Context(torch.device("cpu"), "cpu")
    full = segmentation.plan(cuda)
    assert (full["architecture"], full["image_size"], full["batches"]) == ("sd", 384, [1, 8])
    assert full["dtypes"] == ["fp32", "bf16"] and full["compile"] == [False, True]
    assert sharingan.plan(cuda)["depth"] == {"size": [192, 640], "batch": 2}
    assert sharingan.plan(cuda)["faces"] == {"size": [128, 128], "batch": 16}
    assert memory.plan(cuda)["batches"] == [1, 2, 4] and memory.plan(cuda)["architecture"] == "sd"
    assert training_step.plan(cuda)["architecture"] == "sd"
    for module in (segmentation, sharingan, memory, loaders, training_step):
        assert module.plan(cuda)["reductions"] == []
        assert module.plan(cpu)["reductions"]


def test_time_calls_and_peak_memory_on_cpu():
    device = torch.device("cpu")
    calls = {"a": lambda: torch.ones(64, 64) @ torch.ones(64, 64), "b": lambda: torch.zeros(8).sum()}
    summary = time_calls(calls, device, warmup=1, repeats=3)
    assert set(summary) == {"a", "b"} and all(entry["repeats"] == 3 for entry in summary.values())
    with peak_memory(device) as readings:
        block = torch.ones(4 * 1024 * 1024)
        del block
    assert readings[0].kind == "cpu_process_rss" and readings[0].peak_mib >= readings[0].baseline_mib


def test_missing_project_module_is_reported_not_faked(monkeypatch):
    import benchmarks.loaders as loaders

    def broken(context):
        raise ModuleNotFoundError("No module named 'ldznet.data.phrasecut'", name="ldznet.data.phrasecut")

    monkeypatch.setattr(loaders, "run", broken)
    section = load_benchmark("loaders")(Context(torch.device("cpu"), "quick"))
    assert section["status"] == "not measured: ldznet.data.phrasecut missing"


def test_markdown_cells():
    assert format_cell(None) == "-" and format_cell(1234.5) == "1234" and format_cell(0.1234) == "0.123"
    assert "| a | b |" in markdown_table(["a", "b"], [{"a": 1, "b": "x|y"}])


def test_training_step_batch_table_rates_each_batch_against_the_smallest(tmp_path):
    """The batch-size table of `training_step` (the evidence behind experiments/demo/study_chapter3_batch_probe.yaml):
    every model at every batch size, ms per sample = step ms / batch, the smallest batch's ratio exactly 1."""
    assert main(["--quick", "--only", "training_step", "--out", str(tmp_path)]) == 0
    [json_path] = tmp_path.glob("quick-cpu-*.json")
    [section] = json.loads(json_path.read_text())["sections"]
    [table] = [t for t in section["tables"] if t["title"].startswith("Batch size")]
    assert {(row["model"], row["batch"]) for row in table["rows"]} == {
        (model, batch) for model in {row["model"] for row in table["rows"]} for batch in (2, 4)}
    assert len({row["model"] for row in table["rows"]}) == 3
    for row in table["rows"]:
        assert row["ms per sample"] == pytest.approx(row["step ms"] / row["batch"])
        if row["batch"] == 2:
            assert row["per-sample time ratio"] == 1.0
