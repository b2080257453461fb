"""The stage runner: cached stages are skipped, --force / --only re-run, failures are reported, not hidden."""

from __future__ import annotations

import json

import pytest

from demo.report import aggregate, compare, compare_all, probe_claim
from demo.stages import CACHED, DONE, FAILED, NOT_RUN, Stage, StageNotRunnable, StageRunner, stage_key


def counting_stage(name, calls, config=None, needs=(), fail=False, **kwargs):
    def run(ctx):
        calls.append(name)
        if fail:
            raise RuntimeError(f"{name} broke")
        (ctx.out_dir / "artifact.txt").write_text(name)
        return {"value": len(calls), "upstream": sorted(ctx.results)}

    return Stage(name, run, config if config is not None else {"x": 1}, needs=needs, **kwargs)


def test_second_run_skips_finished_stages(tmp_path):
    calls = []
    stages = [counting_stage("a", calls), counting_stage("b", calls, needs=("a",))]
    first = StageRunner(tmp_path, progress=False).run(stages)
    assert [first[n]["status"] for n in "ab"] == [DONE, DONE] and calls == ["a", "b"]
    assert first["b"]["result"]["upstream"] == ["a"]
    second = StageRunner(tmp_path, progress=False).run(stages)
    assert [second[n]["status"] for n in "ab"] == [CACHED, CACHED] and calls == ["a", "b"]
    assert second["b"]["result"] == first["b"]["result"]
    recorded = json.loads((tmp_path / "stages.json").read_text())
    assert recorded["a"]["status"] == CACHED and (tmp_path / "a" / "DONE.json").is_file()


def test_force_reruns_and_config_change_reruns_downstream_only(tmp_path):
    calls = []
    stages = [counting_stage("a", calls), counting_stage("b", calls, needs=("a",)), counting_stage("c", calls)]
    StageRunner(tmp_path, progress=False).run(stages)
    StageRunner(tmp_path, force=True, progress=False).run(stages)
    assert calls == ["a", "b", "c"] * 2
    calls.clear()
    changed = [counting_stage("a", calls, config={"x": 2}), counting_stage("b", calls, needs=("a",)),
               counting_stage("c", calls)]
    status = StageRunner(tmp_path, progress=False).run(changed)
    assert calls == ["a", "b"] and status["c"]["status"] == CACHED


def test_only_reruns_the_named_stage(tmp_path):
    calls = []
    stages = [counting_stage("a", calls), counting_stage("b", calls, needs=("a",))]
    StageRunner(tmp_path, progress=False).run(stages)
    calls.clear()
    status = StageRunner(tmp_path, force=True, only=["b"], progress=False).run(stages)
    assert calls == ["b"] and status["a"]["status"] == CACHED and status["b"]["status"] == DONE


def test_only_reuses_a_stale_upstream_and_says_so(tmp_path):
    calls = []
    StageRunner(tmp_path, progress=False).run([counting_stage("a", calls), counting_stage("b", calls, needs=("a",))])
    calls.clear()
    changed = [counting_stage("a", calls, config={"x": 2}), counting_stage("b", calls, needs=("a",))]
    status = StageRunner(tmp_path, only=["b"], progress=False).run(changed)
    assert calls == ["b"] and status["a"]["status"] == CACHED and "stale" in status["a"]["reason"]


def test_failure_is_recorded_and_blocks_dependents(tmp_path):
    calls = []
    stages = [counting_stage("a", calls, fail=True), counting_stage("b", calls, needs=("a",)),
              counting_stage("c", calls)]
    status = StageRunner(tmp_path, progress=False).run(stages)
    assert status["a"]["status"] == FAILED and "a broke" in status["a"]["reason"]
    assert status["b"]["status"] == NOT_RUN and "needs a (failed)" in status["b"]["reason"]
    assert status["c"]["status"] == DONE and calls == ["a", "c"]
    failure = json.loads((tmp_path / "a" / "FAILED.json").read_text())
    assert "RuntimeError" in failure["traceback"] and not (tmp_path / "a" / "DONE.json").exists()
    # a failed stage is never cached: the next run tries it again
    StageRunner(tmp_path, progress=False).run(stages)
    assert calls == ["a", "c", "a"]


def test_missing_chapter_code_is_not_run_with_its_name(tmp_path):
    calls = []

    def not_ready(ctx):
        raise StageNotRunnable("ldznet.pipeline is missing")

    stages = [counting_stage("a", calls, requires=("no_such_module_xyz",)), Stage("b", not_ready, {})]
    status = StageRunner(tmp_path, progress=False).run(stages)
    assert status["a"]["status"] == NOT_RUN and "no_such_module_xyz" in status["a"]["reason"]
    assert status["b"]["status"] == NOT_RUN and "ldznet.pipeline" in status["b"]["reason"] and not calls


def test_stage_key_depends_on_config_upstream_and_code():
    assert stage_key({"a": 1}) == stage_key({"a": 1}) != stage_key({"a": 2})
    assert stage_key({"a": 1}, ["k1"]) != stage_key({"a": 1}, ["k2"])
    from demo.stages import code_fingerprint

    assert code_fingerprint(["demo.stages"]) == code_fingerprint(["demo.stages"]) != code_fingerprint(["demo.plan"])
    assert code_fingerprint([]) == ""


def test_rerun_removes_stale_outputs(tmp_path):
    calls = []
    StageRunner(tmp_path, progress=False).run([counting_stage("a", calls)])
    (tmp_path / "a" / "stale.txt").write_text("old")
    StageRunner(tmp_path, force=True, progress=False).run([counting_stage("a", calls)])
    assert not (tmp_path / "a" / "stale.txt").exists() and (tmp_path / "a" / "artifact.txt").is_file()


# ----------------------------------------------------------------------------------------------- report

def test_aggregate_and_compare_directions():
    low = aggregate([{"abs_rel": 0.1}, {"abs_rel": 0.2}], ["abs_rel", "rmse"])
    high = aggregate([{"abs_rel": 0.3}, {"abs_rel": 0.3}], ["abs_rel"])
    assert low["abs_rel"]["mean"] == pytest.approx(0.15) and "rmse" not in low
    claim = compare(low, high, "abs_rel")  # lower abs_rel is better
    assert claim["verdict"] == "reproduced" and claim["margin"] == pytest.approx(0.15)
    assert compare(high, low, "abs_rel")["verdict"] == "not reproduced"
    miou_good, miou_bad = aggregate([{"mIoU": 50.0}], ["mIoU"]), aggregate([{"mIoU": 40.0}], ["mIoU"])
    assert compare(miou_good, miou_bad, "mIoU")["margin"] == pytest.approx(10.0)
    assert compare(miou_good, miou_good, "mIoU")["verdict"] == "not reproduced"  # a tie is not a win
    assert compare(None, miou_bad, "mIoU")["verdict"] == "not run"


def test_probe_claim_region():
    grid = {f"block{b}": {f"t={t}": (90.0 if (b == 7 and t == 400) else 10.0) for t in (100, 400, 900)}
            for b in range(1, 17)}
    assert probe_claim({"ap": grid})["verdict"] == "reproduced"
    grid["block2"]["t=100"] = 95.0
    claim = probe_claim({"ap": grid})
    assert claim["verdict"] == "not reproduced" and claim["best_cell"] == (2, 100)


def test_compare_all_reports_mixed_claims():
    ours = aggregate([{"abs_rel": 0.1, "a1": 0.7}], ["abs_rel", "a1"])
    theirs = aggregate([{"abs_rel": 0.2, "a1": 0.8}], ["abs_rel", "a1"])
    claim = compare_all(ours, theirs, "abs_rel", ["abs_rel", "a1"])
    assert claim["verdict"] == "mixed (1 of 2 metrics)" and claim["margin"] == pytest.approx(0.1)
    assert claim["per_metric"]["a1"] == pytest.approx(-0.1)
    better = aggregate([{"abs_rel": 0.1, "a1": 0.9}], ["abs_rel", "a1"])
    assert compare_all(better, theirs, "abs_rel", ["abs_rel", "a1"])["verdict"] == "reproduced"
    assert compare_all(theirs, better, "abs_rel", ["abs_rel", "a1"])["verdict"] == "not reproduced"
