"""The stage runner: cached stages are skipped, --force / --only re-run, failures are reported, not hidden."""

from __future__ import annotations

import json

import numpy as np
import pytest

from demo.report import TABLE_SPECS, PerImage, aggregate, claim_line, floor_lines, judge, probe_claim
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

def test_aggregate_keeps_values_by_seed():
    low = aggregate([{"abs_rel": 0.1}, {"abs_rel": 0.2}], ["abs_rel", "rmse"], seeds=["0", "1"])
    assert low["abs_rel"]["mean"] == pytest.approx(0.15) and "rmse" not in low
    assert low["abs_rel"]["values"] == [0.1, 0.2] and low["abs_rel"]["seeds"] == ["0", "1"]
    assert aggregate([{"mIoU": 50.0}], ["mIoU"])["mIoU"]["std"] is None


def _table(rows: dict, seeds=("0", "1", "2")) -> dict:
    return {name: {"method": name, **aggregate([{"mIoU": v} for v in values], ["mIoU"],
                                               seeds if len(values) > 1 else ["-"])}
            for name, values in rows.items()}


def test_judge_pairs_by_seed_and_respects_floors():
    TABLE_SPECS["t"] = {"benchmark": "b", "floors": ["Floor: all foreground"], "per_image_metric": "iou_curves"}
    table = _table({"ZNet": [50.0, 52.0, 51.0], "RGBNet": [45.0, 46.0, 44.0], "Floor: all foreground": [40.0]})
    claim = judge(table, "ZNet", "RGBNet", "mIoU", ["mIoU"], "t", PerImage())
    # margins 5, 6, 7: mean 6, SE 1 / sqrt(3) -> reproduced; both rows beat the constant floor
    assert claim["verdict"] == "reproduced" and claim["margin"] == pytest.approx(6.0)
    assert claim["seed_se"] == pytest.approx(1 / 3 ** 0.5)
    assert all(check["beats"] for check in claim["floor_checks"].values())
    # RGBNet below the all-foreground floor: the claim cannot be tested here
    table = _table({"ZNet": [50.0, 52.0, 51.0], "RGBNet": [39.0, 38.0, 39.5], "Floor: all foreground": [40.0]})
    claim = judge(table, "ZNet", "RGBNet", "mIoU", ["mIoU"], "t", PerImage())
    assert claim["verdict"] == "untestable here" and claim["floor_checks"]["RGBNet"]["beats"] is False
    line = claim_line(claim | {"claim": "ZNet beats RGBNet"}, {"ZNet beats RGBNet": "inconclusive"})
    assert "**untestable here**" in line and line.endswith("inconclusive |")
    # a second study (the one until the plateau) adds its own cell; a claim it lacks gets a dash
    line = claim_line(claim | {"claim": "ZNet beats RGBNet"}, {"ZNet beats RGBNet": "inconclusive"},
                      {"other claim": "reproduced"})
    assert line.endswith("| inconclusive | – |")
    bare = claim | {"claim": "c"}
    assert claim_line(bare).count("|") == claim_line(bare, None, None).count("|") == 4
    assert any("RGBNet | **no**" in text for text in floor_lines([claim | {"claim": "c"}]))
    assert judge(table, "ZNet", "LD-ZNet", "mIoU", ["mIoU"], "t", PerImage())["verdict"] == "not run"


def test_judge_single_seed_uses_the_bootstrap_over_images():
    TABLE_SPECS["t1"] = {"benchmark": "b", "floors": [], "per_image_metric": "abs_rel"}
    rng = np.random.default_rng(1)
    shared = rng.uniform(0.1, 0.5, 200)
    noise = PerImage({"A|0|b|abs_rel": shared, "B|0|b|abs_rel": shared + 0.05 + rng.normal(0, 0.01, 200)})
    table = {"A": {"abs_rel": {"mean": 0.3, "values": [0.3], "seeds": ["0"]}},
             "B": {"abs_rel": {"mean": 0.35, "values": [0.35], "seeds": ["0"]}}}
    claim = judge(table, "A", "B", "abs_rel", ["abs_rel"], "t1", noise)
    # the paired per-image SE is about 0.01 / sqrt(200) = 0.0007, far below the 0.05 margin
    assert claim["verdict"] == "reproduced" and claim["evaluation_se"] < 0.002 and "indicative" in claim["basis"]


def test_probe_claim_region():
    grid = {f"block{b}": {f"t={t}": (90.0 if (b == 7 and t == 400) else 10.0) for t in (100, 400, 900)}
            for b in range(1, 17)}
    assert probe_claim({"ap": grid})["verdict"] == "reproduced"
    grid["block2"]["t=100"] = 95.0
    claim = probe_claim({"ap": grid})
    assert claim["verdict"] == "not reproduced" and claim["best_cell"] == (2, 100)


def test_an_interrupted_stage_resumes_at_its_first_unfinished_seed(tmp_path):
    calls, kill = [], [True]

    def part(ctx, name, folder):
        seed = int(name.removeprefix("seed"))
        calls.append(seed)
        if seed == 1 and kill:
            kill.clear()
            raise RuntimeError("killed during seed 1")
        (folder / "weights.txt").write_text(str(seed))
        return {"seed": seed}

    def per_seed(ctx):
        return {name.removeprefix("seed"): result for name, result in ctx.parts.items()}

    def chapter(config):
        return Stage("chapter", per_seed, config, parts=("seed0", "seed1", "seed2"), run_part=part)

    stages = [chapter({"x": 1})]
    first = StageRunner(tmp_path, progress=False).run(stages)
    assert first["chapter"]["status"] == FAILED and calls == [0, 1]
    second = StageRunner(tmp_path, progress=False).run(stages)
    assert second["chapter"]["status"] == DONE and calls == [0, 1, 1, 2]  # seed 0 reused
    assert second["chapter"]["result"] == {"0": {"seed": 0}, "1": {"seed": 1}, "2": {"seed": 2}}
    assert not (tmp_path / "chapter" / "FAILED.json").exists()
    calls.clear()
    changed = [chapter({"x": 2})]  # another key: no part is reused
    StageRunner(tmp_path, progress=False).run(changed)
    assert calls == [0, 1, 2]


# ------------------------------------------------------------------------------- parts and worker processes

def square_stage(parts=("p1", "p2", "p3"), config=None):
    from tests.helpers.demo_units import combine_squares, part_square

    return Stage("squares", combine_squares, config or {"x": 1}, parts=parts, run_part=part_square)


def calls_of(root):
    path = root / "calls.txt"
    return sorted(path.read_text().split()) if path.exists() else []


@pytest.mark.parametrize("jobs", [1, 2])
def test_parts_run_combine_and_resume_after_a_failed_part(tmp_path, jobs):
    (tmp_path / "fail_p2").write_text("")
    first = StageRunner(tmp_path, progress=False, jobs=jobs).run([square_stage()])["squares"]
    assert first["status"] == FAILED and "part p2 broke" in first["reason"] and "(part p2)" in first["reason"]
    assert "RuntimeError" in json.loads((tmp_path / "squares" / "FAILED.json").read_text())["traceback"]
    ran_first = calls_of(tmp_path)
    assert "p1" in ran_first and "p2" in ran_first  # with jobs 1 p3 never starts after p2 failed
    (tmp_path / "fail_p2").unlink()
    second = StageRunner(tmp_path, progress=False, jobs=jobs).run([square_stage()])["squares"]
    assert second["status"] == DONE
    assert second["result"]["squares"] == {"p1": 1, "p2": 4, "p3": 9}  # combined in the parts' order
    finished_first = [p for p in ("p1", "p3") if p in ran_first and p != "p2"]
    # every part that finished in the first attempt is reused, the failed one and the unstarted ones run
    assert calls_of(tmp_path) == sorted(ran_first + [p for p in ("p1", "p2", "p3") if p not in finished_first])
    third = StageRunner(tmp_path, progress=False, jobs=jobs).run([square_stage()])["squares"]
    assert third["status"] == CACHED and third["result"] == second["result"]
    for part in ("p1", "p2", "p3"):
        assert (tmp_path / "squares" / part / "artifact.txt").read_text() == part


def test_jobs_run_parts_in_worker_processes_with_logs(tmp_path):
    import os

    status = StageRunner(tmp_path, progress=False, jobs=2, threads=1).run([square_stage(("p1", "p2"))])
    result = status["squares"]["result"]
    assert status["squares"]["status"] == DONE and result["squares"] == {"p1": 1, "p2": 4}
    assert os.getpid() not in result["pids"] and len(result["pids"]) == 2  # one fresh process per unit
    for part in ("p1", "p2"):
        assert f"part {part} in process" in (tmp_path / "squares" / f"{part}.log").read_text()


def test_jobs_run_independent_stages_at_the_same_time(tmp_path):
    from tests.helpers.demo_units import wait_for_each_other

    stages = [Stage("a", wait_for_each_other, {"other": "b"}), Stage("b", wait_for_each_other, {"other": "a"}),
              counting_stage_module("c", needs=("a", "b"))]
    status = StageRunner(tmp_path, progress=False, jobs=2).run(stages)
    assert [status[n]["status"] for n in "abc"] == [DONE, DONE, DONE]
    assert status["a"]["result"]["pid"] != status["b"]["result"]["pid"]


def counting_stage_module(name, needs=()):
    from tests.helpers.demo_units import combine_squares, part_square

    return Stage(name, combine_squares, {"n": name}, needs=needs, parts=("p5",), run_part=part_square)


def test_a_stage_listed_before_its_need_is_refused(tmp_path):
    calls = []
    with pytest.raises(ValueError, match="listed after it"):
        StageRunner(tmp_path, progress=False).run([counting_stage("b", calls, needs=("a",)),
                                                   counting_stage("a", calls)])
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        StageRunner(tmp_path, jobs=0)


def test_publish_study_appends_the_hand_written_notes_and_keeps_them(tmp_path):
    from demo.report import publish_study

    out, docs = tmp_path / "study", tmp_path / "docs"
    (out / "figures").mkdir(parents=True)
    docs.mkdir()
    (out / "figures" / "curve.png").write_bytes(b"png")
    (out / "REPORT.md").write_text("# Report\n\n![c](figures/curve.png)\n")
    (out / "verdicts.json").write_text(json.dumps({"claims": {"A beats B": "inconclusive"}}))
    publish_study(out, docs)
    page = (docs / "demo-study.md").read_text()
    assert "](demo-study/curve.png)" in page and "docs/demo-study-notes.md is missing" in page
    assert (docs / "demo-study" / "curve.png").read_bytes() == b"png"
    assert json.loads((docs / "demo-study.json").read_text())["claims"] == {"A beats B": "inconclusive"}
    (docs / "demo-study-notes.md").write_text("## Why\n\nthe world has no domain gap\n")
    publish_study(out, docs)  # re-publishing keeps the diagnosis
    page = (docs / "demo-study.md").read_text()
    assert page.startswith("# Report") and page.rstrip().endswith("the world has no domain gap")
    publish_study(out, docs, name="demo-study-seed100")  # the stability study: its own page, no notes
    second = (docs / "demo-study-seed100.md").read_text()
    assert "](demo-study-seed100/curve.png)" in second and "the world has no domain gap" not in second
    assert "docs/demo-study.md" in second and (docs / "demo-study-seed100" / "curve.png").is_file()
    assert (docs / "demo-study.md").read_text() == page  # the main study's page is untouched
    publish_study(out, docs, name="demo-study-chapter3-long", reading="The Chapter-3 runs continued to 2500 steps.")
    continued = (docs / "demo-study-chapter3-long.md").read_text()
    assert continued.rstrip().endswith("The Chapter-3 runs continued to 2500 steps.")
    assert "stability check" not in continued and (docs / "demo-study.md").read_text() == page
