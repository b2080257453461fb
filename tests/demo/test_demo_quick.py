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
    claims = json.loads((out / "claims.json").read_text())
    assert len(claims) >= 12
    assert all(c["verdict"] in ("reproduced", "not reproduced") or c["verdict"].startswith("mixed") for c in claims)
    assert (out / "tiny_ldm" / "stable_diffusion" / "unet" / "config.json").is_file()
    # a second run reuses every finished stage
    assert main(["--quick", "--out", str(out)]) == 0
    again = json.loads((out / "stages.json").read_text())
    assert {entry["status"] for entry in again.values()} == {"cached"}
