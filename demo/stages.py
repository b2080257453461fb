"""The stage runner of the miniature: run stages in order, cache finished ones, say plainly what did not run.

Each stage has a name, a config (plain data) and the stages it needs. Its key is the sha256 of its config,
of its upstream stages' keys and of the source of the code it names (`Stage.code`), so changing one idea,
in a YAML file or in the chapter code, re-runs that stage and everything after it, and nothing else. On
success the stage writes ``<out>/<name>/DONE.json`` (key, config, result, wall and CPU seconds); a second
run with the same key skips it (``--force`` re-runs everything, ``--only NAME`` one stage). A stage's
*parts* (`Stage.parts`, one per training seed) are cached under the same key (``<part>/PART_DONE.json``), so
an interrupted stage resumes at its unfinished parts (``STARTED.json`` holds the key of the attempt).

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
    """One step of the miniature. `run(ctx)` returns a JSON-able result dict.

    A stage with `parts` runs `run_part(ctx, part, folder)` once per part (each cached on its own, so an
    interrupted stage resumes at its first unfinished part), then `run(ctx)` combines `ctx.parts` in the main
    process (keep that cheap). With jobs > 1 `run` / `run_part` must be module-level functions (or
    `functools.partial` of one): they are sent to worker processes."""

    name: str
    run: Callable[[StageContext], Mapping[str, Any]]
    config: Any = None
    needs: Sequence[str] = ()
    requires: Sequence[str] = ()  # importable modules the stage cannot run without
    description: str = ""
    code: Sequence[str] = ()  # packages/modules whose source enters the key (edit the code -> the stage re-runs)
    options: Mapping[str, Any] = field(default_factory=dict)  # run settings that do not change the result
    parts: Sequence[str] = ()  # independent units (e.g. one per training seed), run in parallel with jobs > 1
    run_part: Callable[[StageContext, str, Path], Mapping[str, Any]] | None = None  # runs one part in its folder


@dataclass
class StageContext:
    name: str
    out_dir: Path  # <out>/<name>, created before the run
    root: Path  # <out>
    config: Any
    results: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # results of the stages it needs
    options: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""  # the stage key (parts cached with another key are re-run)
    parts: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # finished parts, given to `run` to combine

    def path_of(self, stage: str) -> Path:
        return self.root / stage


def seed_of(part: str) -> int:
    """'seed3' or 'seed3_rgbnet' -> 3 (the part names of the per-seed stages)."""
    return int(part.removeprefix("seed").split("_", 1)[0])


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


def _unit_work(run: Callable, ctx: StageContext, part: str | None, folder: Path | None, threads: int,
               log: Path | None) -> dict[str, Any]:
    """One unit (a stage without parts, or one part) in a fresh worker process: its own torch threads, its
    console output into ``log``, and the outcome returned as plain data (a traceback as text, never raised)."""
    import os
    import sys

    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        stream = open(log, "w", buffering=1)  # noqa: SIM115 - lives as long as the worker (one unit)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        sys.stdout = sys.stderr = stream
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    return _unit(run, ctx, part, folder)


def _unit(run: Callable, ctx: StageContext, part: str | None, folder: Path | None) -> dict[str, Any]:
    start, cpu_start = time.perf_counter(), cpu_seconds()
    try:
        result = dict((run(ctx) if part is None else run(ctx, part, folder)) or {})
    except StageNotRunnable as reason:
        return {"outcome": NOT_RUN, "reason": str(reason), "seconds": time.perf_counter() - start}
    except Exception as error:  # noqa: BLE001 - recorded and reported, the next stages still run
        return {"outcome": FAILED, "reason": f"{type(error).__name__}: {error}"[:500],
                "traceback": traceback.format_exc(), "seconds": time.perf_counter() - start,
                "cpu_seconds": cpu_seconds() - cpu_start}
    return {"outcome": DONE, "result": result, "seconds": time.perf_counter() - start,
            "cpu_seconds": cpu_seconds() - cpu_start}


@dataclass
class _Pending:
    """A stage whose units are being run: the parts still to start, running, finished."""

    stage: Stage
    key: str
    context: StageContext
    start: float
    todo: list[str | None]  # part names; [None] for a stage without parts
    running: int = 0
    done: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    cpu: float = 0.0
    failure: dict[str, Any] | None = None


class StageRunner:
    """Runs the stages (in plan order when ``jobs`` is 1); records each stage's status in ``<out>/stages.json``.

    With ``jobs`` > 1 the independent units - stages whose needs are finished, and the parts of a stage
    (`Stage.parts`, e.g. one per training seed) - run at the same time in ``jobs`` worker processes, each a
    fresh process with ``threads`` torch threads and its console output in ``<out>/<stage>/<part>.log``. On a
    few cores this is what makes the miniature fast: its networks are too small for two threads to help much,
    two processes use two cores. The results do not depend on ``jobs`` (each unit seeds itself)."""

    def __init__(self, out_dir: str | Path, force: bool = False, only: Sequence[str] = (), progress: bool = True,
                 jobs: int = 1, threads: int = 0):
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        self.root = Path(out_dir)
        self.force = force
        self.only = set(only)
        self.progress = progress
        self.jobs = jobs
        self.threads = threads  # torch threads per worker process (0: leave torch's default)
        self.status: dict[str, dict[str, Any]] = {}

    def _record(self) -> None:
        write_json(self.root / "stages.json", self.status)

    def run(self, stages: Sequence[Stage]) -> dict[str, dict[str, Any]]:
        self.root.mkdir(parents=True, exist_ok=True)
        order = {stage.name: index for index, stage in enumerate(stages)}
        keys: dict[str, str] = {}
        for stage in stages:
            unknown = [need for need in stage.needs if need not in order]
            if unknown:
                raise ValueError(f"stage {stage.name!r} needs unknown stage(s) {unknown}")
            later = [need for need in stage.needs if order[need] > order[stage.name]]
            if later:
                raise ValueError(f"stage {stage.name!r} needs {later}, listed after it: list stages in order")
            if stage.parts and stage.run_part is None:
                raise ValueError(f"stage {stage.name!r} has parts but no run_part")
            keys[stage.name] = stage_key(stage.config, [keys[need] for need in stage.needs]
                                         + [code_fingerprint(stage.code)])
        results: dict[str, Mapping[str, Any]] = {}
        waiting = list(stages)
        pending: dict[str, _Pending] = {}
        bar = tqdm(total=len(stages), desc="demo", unit="stage", disable=not self.progress)
        pool = None
        if self.jobs > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                       max_tasks_per_child=1)
        futures: dict[Any, tuple[str, str | None]] = {}
        try:
            while waiting or pending:
                # 1. stages whose needs are settled: cached, not runnable, or started (their units queued)
                for stage in list(waiting):
                    if any(need in pending or any(w.name == need for w in waiting) for need in stage.needs):
                        continue
                    waiting.remove(stage)
                    started = self._start(stage, keys[stage.name], results)
                    if isinstance(started, _Pending):
                        pending[stage.name] = started
                    else:
                        self._finish(stage.name, started, results, bar)
                # 2. hand out units: first the earliest stage in plan order, as many as there are free workers
                ran_inline = False
                for name in sorted(pending, key=order.get):
                    job = pending[name]
                    while job.todo and job.failure is None and (pool is None or len(futures) < self.jobs):
                        part = job.todo.pop(0)
                        job.running += 1
                        run = job.stage.run if part is None else job.stage.run_part
                        folder = None if part is None else self._part_folder(job, part)
                        if pool is None:  # jobs = 1: one unit at a time in this process, in plan order
                            self._settle(job, part, _unit(run, job.context, part, folder), results, pending, bar)
                            ran_inline = True
                            break
                        log = job.context.out_dir / f"{part or 'stage'}.log"
                        tqdm.write(f"[demo] {name}{'/' + part if part else ''}: started (log: {log})")
                        futures[pool.submit(_unit_work, run, job.context, part, folder, self.threads, log)] = (
                            name, part)
                    if ran_inline:
                        break
                # 3. wait for a worker
                if futures:
                    from concurrent.futures import FIRST_COMPLETED, wait

                    finished, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                    for future in finished:
                        name, part = futures.pop(future)
                        try:
                            outcome = future.result()
                        except Exception as error:  # noqa: BLE001 - a worker that died (memory, signal)
                            outcome = {"outcome": FAILED, "reason": f"the unit did not run to its end in a worker "
                                       f"process ({type(error).__name__}: {error})"[:500],
                                       "traceback": traceback.format_exc(), "seconds": None}
                        self._settle(pending[name], part, outcome, results, pending, bar)
                elif pending and all(not job.todo and not job.running for job in pending.values()):
                    raise RuntimeError("demo scheduler: stages pending with nothing to run")  # a bug, not data
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return {stage.name: self.status[stage.name] for stage in stages}

    def _part_folder(self, job: _Pending, part: str) -> Path:
        folder = job.context.out_dir / part
        if folder.exists():  # an interrupted attempt of this part: start it clean
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def _start(self, stage: Stage, key: str, results: Mapping[str, Mapping]) -> _Pending | dict[str, Any]:
        """Cached, not runnable, or a `_Pending` with the units still to run (finished parts are reused)."""
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
        job = _Pending(stage, key, context, time.perf_counter(), [None] if not stage.parts else [])
        for part in stage.parts:
            previous_part = read_marker(out_dir / part / "PART_DONE.json")
            if previous_part and previous_part.get("key") == key:
                tqdm.write(f"[demo] {stage.name}/{part}: reused (finished in an earlier attempt)")
                job.done[part] = dict(previous_part.get("result", {}))
            else:
                job.todo.append(part)
        if stage.parts:
            tqdm.write(f"[demo] {stage.name}: ready, {len(job.todo)} of {len(stage.parts)} parts to run")
        return job

    def _settle(self, job: _Pending, part: str | None, outcome: Mapping[str, Any],
                results: dict[str, Mapping[str, Any]], pending: dict[str, _Pending], bar) -> None:
        """Record one finished unit; when the stage's last unit is in, combine the parts and finish the stage."""
        name = job.stage.name
        job.running -= 1
        job.cpu += outcome.get("cpu_seconds") or 0.0
        base = {"key": job.key, "description": job.stage.description, "needs": list(job.stage.needs)}
        if outcome["outcome"] == DONE and part is not None:
            write_json(job.context.out_dir / part / "PART_DONE.json",
                       {"key": job.key, "result": outcome["result"], "seconds": outcome["seconds"],
                        "cpu_seconds": outcome.get("cpu_seconds")})
            job.done[part] = outcome["result"]
            tqdm.write(f"[demo] {name}/{part}: done ({outcome['seconds']:.1f} s)")
        elif outcome["outcome"] != DONE and job.failure is None:
            job.failure = dict(outcome) | {"part": part}
        if job.running or (job.todo and job.failure is None):
            return
        del pending[name]
        seconds = time.perf_counter() - job.start
        if job.failure is not None:
            failure = job.failure
            where = f" (part {failure['part']})" if failure.get("part") else ""
            entry = base | {"status": failure["outcome"], "reason": failure["reason"] + where, "seconds": seconds}
            write_json(job.context.out_dir / ("NOT_RUN.json" if failure["outcome"] == NOT_RUN else "FAILED.json"),
                       entry | ({"traceback": failure["traceback"]} if failure.get("traceback") else {}))
            self._finish(name, entry, results, bar)
            return
        if part is None:
            result = outcome["result"]
        else:  # combine the parts (cheap, in this process)
            job.context.parts = {p: job.done[p] for p in job.stage.parts}
            combined = _unit(job.stage.run, job.context, None, None)
            if combined["outcome"] != DONE:
                entry = base | {"status": combined["outcome"], "reason": combined["reason"], "seconds": seconds}
                write_json(job.context.out_dir / "FAILED.json", entry | {"traceback": combined.get("traceback")})
                self._finish(name, entry, results, bar)
                return
            result = combined["result"]
        write_json(job.context.out_dir / "DONE.json", {"key": job.key, "config": plain(job.stage.config),
                                                       "result": result, "seconds": seconds, "cpu_seconds": job.cpu})
        self._finish(name, base | {"status": DONE, "result": result, "seconds": seconds, "cpu_seconds": job.cpu},
                     results, bar)

    def _finish(self, name: str, entry: dict[str, Any], results: dict[str, Mapping[str, Any]], bar) -> None:
        self.status[name] = entry
        if entry["status"] in (DONE, CACHED):
            results[name] = entry.get("result", {})
        self._record()
        bar.update(1)
        tqdm.write(f"[demo] {name}: {entry['status']}"
                   + (f" ({entry['seconds']:.1f} s)" if entry.get("seconds") is not None else "")
                   + (f" - {entry['reason']}" if entry.get("reason") else ""))
