"""The repository contract: setup is stamped (no reinstall), `make help` lists every target, README order."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def _make(*arguments):
    return subprocess.run(["make", "--no-print-directory", *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_second_setup_does_not_reinstall():
    if not list((ROOT / ".venv").glob(".installed-*")):
        pytest.skip("this checkout was not set up through `make` (no install stamp)")
    dry_run = _make("-n", "setup")
    assert dry_run.returncode == 0
    assert "pip install" not in dry_run.stdout, dry_run.stdout


def test_help_lists_every_phony_target():
    makefile = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)$", makefile, re.MULTILINE | re.DOTALL).group(1)
    targets = set(phony.replace("\\", " ").split())
    listed = {line.split()[0] for line in _make("help").stdout.splitlines() if line.strip()}
    assert targets <= listed, targets - listed


def test_readme_opens_with_the_two_commands_and_ci_calls_make_test():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
