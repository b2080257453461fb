"""Every `python -m <command>` of the project prints its help and exits 0 on `--help`, with a
`usage: python -m <command>` line, and exits 2 with that usage line on an unknown option.

The commands are discovered from the source tree (modules with a `__main__` guard, packages with a
`__main__.py`), so a new command is covered without editing this file. The default run checks them all in one
Python process (the heavy imports are paid once); `make test-slow` also runs each as a real subprocess.
"""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "sharingan", "ldznet", "benchmarks", "demo")
MAIN_GUARD = re.compile(r"""^if __name__ == ["']__main__["']\s*:""", re.MULTILINE)


def discover_commands() -> list[str]:
    """Dotted names runnable as `python -m NAME`, found in the project's packages."""
    commands = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).with_suffix("")
            if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
                continue
            if path.name == "__main__.py":
                commands.add(".".join(relative.parts[:-1]))
            elif path.name != "__init__.py" and MAIN_GUARD.search(path.read_text(encoding="utf-8")):
                commands.add(".".join(relative.parts))
    return sorted(commands)


COMMANDS = discover_commands()

# Runs each command's --help (and an unknown option) in this one process, reports exit codes and output as JSON.
ONE_PROCESS = textwrap.dedent("""
    import contextlib, io, json, runpy, sys, warnings
    warnings.simplefilter("ignore")
    results = {}
    for command in sys.argv[1:]:
        for flag in ("--help", "--no-such-option"):
            out, err = io.StringIO(), io.StringIO()
            sys.argv = [command, flag]
            code = None
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    runpy.run_module(command, run_name="__main__", alter_sys=False)
                except SystemExit as exit:
                    code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
                except BaseException as error:
                    code = repr(error)
            results[f"{command} {flag}"] = [code, out.getvalue(), err.getvalue()]
    sys.stdout.write(json.dumps(results))
""")


def _check_help(command: str, code, stdout: str) -> None:
    assert code == 0, f"`python -m {command} --help` exited {code}:\n{stdout}"
    assert stdout.startswith(f"usage: python -m {command} "), f"{command}: usage line is {stdout.splitlines()[:1]}"
    assert "-h, --help" in stdout, command


def _check_unknown_option(command: str, code, stderr: str) -> None:
    assert code == 2, f"`python -m {command} --no-such-option` exited {code}:\n{stderr[-2000:]}"
    assert f"usage: python -m {command} " in stderr, stderr[-2000:]


def test_discovery_finds_the_documented_commands():
    documented = {"sharingan.train", "sharingan.eval", "sharingan.predict", "sharingan.pipeline", "sharingan.summary",
                  "sharingan.pseudo_labels", "ldznet.train", "ldznet.eval", "ldznet.predict", "ldznet.pipeline",
                  "ldznet.summary", "ldznet.analysis.coarse_masks", "ldznet.analysis.probe", "ldznet.data.aigi",
                  "demo", "benchmarks"}
    assert documented <= set(COMMANDS), documented - set(COMMANDS)


def test_every_command_prints_help_and_exits_0_in_one_process():
    result = subprocess.run([sys.executable, "-c", ONE_PROCESS, *COMMANDS], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout)
    failures = []
    for command in COMMANDS:
        try:
            code, stdout, _ = results[f"{command} --help"]
            _check_help(command, code, stdout)
            code, _, stderr = results[f"{command} --no-such-option"]
            _check_unknown_option(command, code, stderr)
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, "\n\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_help_as_a_real_subprocess(command):
    result = subprocess.run([sys.executable, "-m", command, "--help"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    _check_help(command, result.returncode, result.stdout)
