"""The stage runner of the miniature: run stages in order, cache finished ones, say plainly what did not run.

Each stage has a name, a config (plain data) and the stages it needs. Its key is the sha256 of its config,
of its upstream stages' keys and of the source of the code it names (`Stage.code`), so changing one idea,
in a YAML file or in the chapter code, re-runs that stage and everything after it, and nothing else. On
success the stage writes ``<out>/<name>/DONE.json`` (key, config, result, wall and CPU seconds); a second
run with the same key skips it (``--force`` re-runs everything, ``--only NAME`` one stage). Inside a stage,
`StageContext.cached` caches parts (one per training seed) under the same key, so an interrupted stage
resumes at its first unfinished seed (``STARTED.json`` holds the key of the attempt).

A stage whose chapter code is missing is *not run*, with the reason (the missing module); a stage that
raises is *failed*, with the error and the traceback in ``<out>/<name>/FAILED.json``; stages that need
either are *not run: needs <stage>*. Nothing is faked: the report copies these statuses.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import resource
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from common.checkpoints import write_json

DONE, CACHED, FAILED, NOT_RUN = "done", "cached", "failed", "not run"


class StageNotRunnable(RuntimeError):
    """Raised by a stage that cannot run for a stated reason (e.g. a chapter module is missing)."""


@dataclass
class Stage:
    """One step of the miniature. `run(ctx)` returns a JSON-able result dict."""

    name: str
    run: Callable[[StageContext], Mapping[str, Any]]
    config: Any = None
    needs: Sequence[str] = ()
    requires: Sequence[str] = ()  # importable modules the stage cannot run without
    description: str = ""
    code: Sequence[str] = ()  # packages/modules whose source enters the key (edit the code -> the stage re-runs)
    options: Mapping[str, Any] = field(default_factory=dict)  # run settings that do not change the result


@dataclass
class StageContext:
    name: str
    out_dir: Path  # <out>/<name>, created before the run
    root: Path  # <out>
    config: Any
    results: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # results of the stages it needs
    options: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""  # the stage key (parts cached with another key are re-run)

    def path_of(self, stage: str) -> Path:
        return self.root / stage

    def cached(self, part: str, compute: Callable[[Path], Mapping[str, Any]]) -> dict:
        """Run `compute(<out_dir>/<part>)` once per stage key (e.g. one training seed) and reuse its result in
        a later attempt of the same stage: a stage killed after two of three seeds resumes at the third.
        A part folder without its `PART_DONE.json` (interrupted) is removed and run again."""
        folder = self.out_dir / part
        marker = folder / "PART_DONE.json"
        previous = read_marker(marker)
        if previous and previous.get("key") == self.key:
            tqdm.write(f"[demo] {self.name}/{part}: reused (finished in an earlier attempt)")
            return dict(previous.get("result", {}))
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        start = time.perf_counter()
        result = dict(compute(folder) or {})
        write_json(marker, {"key": self.key, "result": result, "seconds": time.perf_counter() - start})
        return result


def plain(config: Any) -> Any:
    if isinstance(config, DictConfig) or OmegaConf.is_config(config):
        return OmegaConf.to_container(config, resolve=True)
    return config


def stage_key(config: Any, upstream_keys: Iterable[str] = ()) -> str:
    text = json.dumps(plain(config), sort_keys=True, default=str) + "|" + "|".join(upstream_keys)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_fingerprint(names: Iterable[str]) -> str:
    """sha256 over the .py sources of the named packages or modules (empty string when none)."""
    digest = hashlib.sha256()
    for name in sorted(names):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            digest.update(f"{name}:missing".encode())
            continue
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for file in files:
            digest.update(str(file.relative_to(origin.parent)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16] if names else ""


def missing_modules(names: Iterable[str]) -> list[str]:
    missing = []
    for name in names:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except (ImportError, ValueError):
            missing.append(name)
    return missing


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (all threads): the cost on an idle machine."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class StageRunner:
    """Runs stages in the given order; records each stage's status in ``<out>/stages.json``."""

    def __init__(self, out_dir: str | Path, force: bool = False, only: Sequence[str] = (), progress: bool = True):
        self.root = Path(out_dir)
        self.force = force
        self.only = set(only)
        self.progress = progress
        self.status: dict[str, dict[str, Any]] = {}

    def _record(self) -> None:
        write_json(self.root / "stages.json", self.status)

    def run(self, stages: Sequence[Stage]) -> dict[str, dict[str, Any]]:
        self.root.mkdir(parents=True, exist_ok=True)
        known = {stage.name for stage in stages}
        keys: dict[str, str] = {}
        results: dict[str, Mapping[str, Any]] = {}
        bar = tqdm(stages, desc="demo", unit="stage", disable=not self.progress)
        for stage in bar:
            bar.set_description(f"demo: {stage.name}")
            unknown = [need for need in stage.needs if need not in known]
            if unknown:
                raise ValueError(f"stage {stage.name!r} needs unknown stage(s) {unknown}")
            key = stage_key(stage.config, [keys.get(need, "?") for need in stage.needs]
                            + [code_fingerprint(stage.code)])
            keys[stage.name] = key
            entry = self._run_one(stage, key, results)
            self.status[stage.name] = entry
            if entry["status"] in (DONE, CACHED):
                results[stage.name] = entry.get("result", {})
            self._record()
            tqdm.write(f"[demo] {stage.name}: {entry['status']}"
                       + (f" ({entry['seconds']:.1f} s)" if entry.get("seconds") is not None else "")
                       + (f" - {entry['reason']}" if entry.get("reason") else ""))
        return self.status

    def _run_one(self, stage: Stage, key: str, results: Mapping[str, Mapping]) -> dict[str, Any]:
        out_dir = self.root / stage.name
        marker = out_dir / "DONE.json"
        base = {"key": key, "description": stage.description, "needs": list(stage.needs)}
        blocked = [need for need in stage.needs if need not in results]
        if blocked:
            states = ", ".join(f"{need} ({self.status.get(need, {}).get('status', 'not run')})" for need in blocked)
            return base | {"status": NOT_RUN, "reason": f"needs {states}"}
        missing = missing_modules(stage.requires)
        if missing:
            return base | {"status": NOT_RUN, "reason": "missing chapter code: " + ", ".join(missing)}
        selected = not self.only or stage.name in self.only
        previous = read_marker(marker)
        if previous and previous.get("key") == key and not (self.force and selected):
            return base | {"status": CACHED, "result": previous.get("result", {}), "seconds": None,
                           "ran_seconds": previous.get("seconds"), "cpu_seconds": previous.get("cpu_seconds")}
        if not selected:
            if previous:  # --only: reuse what is there even if its config or code changed since, and say so
                return base | {"status": CACHED, "result": previous.get("result", {}), "seconds": None,
                               "ran_seconds": previous.get("seconds"), "cpu_seconds": previous.get("cpu_seconds"),
                               "reason": "stale (config or code changed since it ran), reused because of --only"}
            return base | {"status": NOT_RUN, "reason": "not selected (--only) and no cached result"}
        started = read_marker(out_dir / "STARTED.json")
        resuming = bool(started and started.get("key") == key and not self.force)
        if out_dir.exists() and not resuming:  # a partial attempt with the same key keeps its finished parts
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("FAILED.json", "NOT_RUN.json"):
            (out_dir / stale).unlink(missing_ok=True)
        write_json(out_dir / "STARTED.json", {"key": key})
        context = StageContext(stage.name, out_dir, self.root, stage.config,
                               {need: results[need] for need in stage.needs}, stage.options, key=key)
        start, cpu_start = time.perf_counter(), cpu_seconds()
        try:
            result = dict(stage.run(context) or {})
        except StageNotRunnable as reason:
            entry = base | {"status": NOT_RUN, "reason": str(reason), "seconds": time.perf_counter() - start}
            write_json(out_dir / "NOT_RUN.json", entry)
            return entry
        except Exception as error:  # noqa: BLE001 - recorded and reported, the next stages still run
            entry = base | {"status": FAILED, "reason": f"{type(error).__name__}: {error}"[:500],
                            "seconds": time.perf_counter() - start}
            write_json(out_dir / "FAILED.json", entry | {"traceback": traceback.format_exc()})
            return entry
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        write_json(marker, {"key": key, "config": plain(stage.config), "result": result, "seconds": seconds,
                            "cpu_seconds": cpu})
        return base | {"status": DONE, "result": result, "seconds": seconds, "cpu_seconds": cpu}
