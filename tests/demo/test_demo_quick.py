"""`python -m demo --quick` end to end (slow: about 2-3 minutes on 2 CPU cores)."""

from __future__ import annotations

import json

import pytest

from demo.__main__ import main


@pytest.mark.slow
def test_demo_quick_end_to_end_then_cached(tmp_path):
    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out)]) == 0
    status = json.loads((out / "stages.json").read_text())
    failed = {name: entry for name, entry in status.items() if entry["status"] != "done"}
    assert not failed, failed
    report = (out / "REPORT.md").read_text()
    for table in ("Table 2.1", "Table 2.2", "Table 2.3", "Table 2.4", "Table 2.5", "Table 2.6", "Table 3.1",
                  "Table 3.2", "Table 3.3", "Table 3.4", "Fig 3.4"):
        assert table in report, table
    assert "Floor: per-pixel mean training depth" in report and "Floor: all foreground" in report
    assert "Floor: image only (prompt ignored)" in report and "Floor: frontal normal" in report
    assert "**The verdicts below are indicative**" in report and "## Sanity floors" in report
    assert "s (every stage ran)." in report  # the first line says whether anything was reused
    # the committed studies' verdicts are cited beside the run's own, one column each
    header = "| claim | verdict | margin | study verdict | second study |"
    assert header in report and "docs/demo-study-seed100.md" in report
    claims = json.loads((out / "claims.json").read_text())
    assert len(claims) >= 12
    rule = {"reproduced", "contradicted", "inconclusive", "untestable here"}
    assert all(c["verdict"] in rule for c in claims if c["stage"] != "probe"), [c["verdict"] for c in claims]
    assert all("evaluation_se" in c and "floor_checks" in c for c in claims if c["stage"] != "probe")
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert verdicts["seeds"] == 1 and set(verdicts["claims"]) == {c["claim"] for c in claims}
    assert (out / "tiny_ldm" / "stable_diffusion" / "unet" / "config.json").is_file()
    # a second run reuses every finished stage
    assert main(["--quick", "--out", str(out)]) == 0
    again = json.loads((out / "stages.json").read_text())
    assert {entry["status"] for entry in again.values()} == {"cached"}
    assert f"s ({len(again)} of {len(again)} stages reused from an earlier run)." in (out / "REPORT.md").read_text()
    # the domain-gap evidence: the floor ignores its input, so its gap on the re-rendered test is exactly 0
    from demo.domain_gap import measure
    from demo.worlds.faces import REAL_EFFECTS

    gap = measure(out, "depth")
    floor = gap["summary"]["Floor: per-pixel mean training depth"]
    assert all(floor[key]["gap"] == 0.0 for key in ("abs_rel", "rmse", "a1")), floor
    assert set(gap["summary"]) >= {"SharinGAN (proposed)", "No SharinGAN, no reconstruction"}
    assert (out / "domain_gap" / "depth.md").read_text().count("|") > 20
    gap = measure(out, "faces", attribute=True)
    floor = gap["summary"]["Floor: frontal normal, mean training lighting"]
    assert all(floor[key]["gap"] == 0.0 for key in ("mae_deg", "lt30")), floor
    # the floor ignores its input and every effect style keeps the masks: each effect costs it exactly 0
    assert {style: entry["cost"] for style, entry in gap["attribution"]["Floor: frontal normal, mean training "
            "lighting"].items()} == {f"without {effect}": 0.0 for effect in REAL_EFFECTS}
    assert "Attribution" in (out / "domain_gap" / "faces.md").read_text()
    assert set(gap["summary"]) >= {"SharinGAN (proposed)", "SfSNet (no SharinGAN)"}
    # both prompt forms on the same phrases: the templates change the prompts; the prompt-blind floor scores
    # exactly alike with either, every trained model is scored
    from demo.prompt_forms import prompt_form_loaders, score_prompt_forms

    loaders = prompt_form_loaders(out)
    templated, raw = ([loader.dataset[item]["prompt"] for item in loader.sampler] for loader in loaders.values())
    assert len(templated) == len(raw) and sum(a != b for a, b in zip(templated, raw)) > len(raw) // 2
    assert templated == [loaders["templated"].dataset[item]["prompt"] for item in loaders["templated"].sampler]
    rows = score_prompt_forms(out)
    trained = {part for part in status["ldznet_train"]["result"]["parts"]}
    assert {row["part"] for row in rows if row["stage"] == "ldznet_train"} == trained
    floors = [row for row in rows if row["stage"] == "floor_image_only"]
    assert floors and all(row["templated"] == row["raw"] for row in floors), floors


@pytest.mark.slow
def test_demo_study_quick_has_curves_seeds_and_machine_readable_verdicts(tmp_path):
    out = tmp_path / "study"
    assert main(["--study", "--quick", "--out", str(out)]) == 0
    status = json.loads((out / "stages.json").read_text())
    assert {entry["status"] for entry in status.values()} == {"done"}, status
    assert sorted(status["depth"]["result"]["seeds"]) == ["0", "1"]  # two seeds, each cached on its own
    assert (out / "depth" / "seed1" / "PART_DONE.json").is_file()
    report = (out / "REPORT.md").read_text()
    assert "## Learning curves" in report and (out / "figures" / "learning_curves.png").is_file()
    curves = json.loads((out / "learning_curves.json").read_text())
    assert {"depth", "faces", "ldznet"} <= set(curves)
    verdicts = json.loads((out / "verdicts.json").read_text())
    assert verdicts["seeds"] == 2 and "--study" in verdicts["command"] and verdicts["code_version"]
    paired = [c for c in json.loads((out / "claims.json").read_text()) if c.get("n") == 2 and "seed_se" in c]
    assert paired and all(c["seed_se"] is not None for c in paired)
