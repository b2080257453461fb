"""Experiment configs: small YAML files that compose, plus `key=value` command-line overrides.

An experiment file may start with a `defaults:` list naming other YAML files. They are merged left to right,
then the file itself on top, then the command-line overrides (omegaconf dotlist). A path in `defaults` is
relative to the including file, or to the `experiments/` folder when it starts with `/`; `.yaml` may be left out.

    # experiments/chapter2/depth_sharingan.yaml
    defaults: [depth_base, /common/trainer]
    optim.task.lr: 1e-4

An override of a key that no file defines is an error that lists the valid keys (a typo must not silently
start a 3-day run with the default value); `+key=value` adds a new key on purpose.

`${package_data:sharingan/data/splits}` in a config is the absolute path of a file or folder shipped inside an
installed package (here the split lists), so the defaults work from any working directory and without a clone.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from common.checkpoints import write_text

REPO_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_ROOT = REPO_ROOT / "experiments"


def package_data_path(relative: str) -> str:
    """Absolute path of `relative` = "<top-level package>/<path inside it>" in the installed package.

    The package is located without importing it. A missing package or file is an error naming both.
    """
    package, _, inside = str(relative).strip().strip("/").partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"${{package_data:{relative}}}: {package!r} is not an installed package")
    path = Path(next(iter(spec.submodule_search_locations))) / inside
    if not path.exists():
        raise FileNotFoundError(f"${{package_data:{relative}}}: {path} does not exist (package data missing from "
                                f"this install of {package!r}?)")
    return str(path)


OmegaConf.register_new_resolver("package_data", package_data_path, replace=True)


class ConfigKeyError(KeyError):
    """An override names a key that the composed config does not have."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly.
        return str(self.args[0])


class MissingConfigKey(ConfigKeyError):
    """A value the code needs is not in the config (issue 14: the YAML holds every default, code has none)."""


_ABSENT = object()


def require(cfg: DictConfig | Mapping, key: str, source: str | Path | None = None) -> Any:
    """The value at the dotted `key` of a config (DictConfig or plain mapping), with no fallback.

    An absent key or omegaconf's `???` raises MissingConfigKey (a KeyError) naming the key and, when given, the
    config file it should be in, so a broken wiring is never hidden by a default written in code. A value of
    `null` is a value (e.g. an optional list file) and is returned as None. Interpolations are resolved.
    """
    if isinstance(cfg, DictConfig):
        node = OmegaConf.select(cfg, str(key), default=_ABSENT)  # absent and `???` both give the sentinel
    else:
        node = cfg
        for part in str(key).split("."):
            if isinstance(node, Mapping):
                node = node.get(part, _ABSENT)
            elif isinstance(node, Sequence) and not isinstance(node, str) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = _ABSENT
            if node is _ABSENT or isinstance(node, str) and node == "???":
                node = _ABSENT
                break
    if node is _ABSENT:
        where = f" in {source}" if source is not None else ""
        raise MissingConfigKey(f"config key {key!r} is missing{where} (no default in code: set it in the "
                               "experiment YAML or pass it explicitly)")
    return node


def _resolve_include(name: str, including_file: Path) -> Path:
    base = EXPERIMENTS_ROOT if name.startswith("/") else including_file.parent
    path = base / name.lstrip("/")
    if path.suffix not in (".yaml", ".yml"):
        path = path.with_name(path.name + ".yaml")
    if not path.is_file():
        raise FileNotFoundError(f"config {including_file}: defaults entry {name!r} -> {path} does not exist")
    return path


def _load_composed(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    path = Path(path).resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ValueError(f"config include cycle: {chain}")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    node = OmegaConf.load(path)
    if not isinstance(node, DictConfig):
        raise ValueError(f"config {path}: top level must be a mapping, got {type(node).__name__}")
    defaults = node.pop("defaults", None)
    if defaults is None:
        return node
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, (list, ListConfig)):
        raise ValueError(f"config {path}: `defaults` must be a list of file names")
    parts = [_load_composed(_resolve_include(str(name), path), (*seen, path)) for name in defaults]
    return OmegaConf.merge(*parts, node)


def _all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key, value in cfg.items_ex(resolve=False) if hasattr(cfg, "items_ex") else cfg.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, DictConfig):
            keys.extend(_all_keys(value, dotted + "."))
    return keys


def _has_key(cfg: DictConfig, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if isinstance(node, DictConfig) and part in node:
            node = node._get_node(part)
        elif isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node._get_node(int(part))
        else:
            return False
    return True


def apply_overrides(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """Apply `key=value` overrides; unknown keys raise ConfigKeyError listing the valid ones."""
    overrides = list(overrides)
    plain, additions = [], []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        if item.startswith("+"):
            additions.append(item[1:])
            continue
        key = item.split("=", 1)[0]
        if not _has_key(cfg, key):
            valid = _all_keys(cfg)
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ConfigKeyError(
                f"unknown config key {key!r} in override {item!r}.{hint} Valid keys: {', '.join(sorted(valid))}"
                " (prefix with '+' to add a new key)"
            )
        plain.append(item)
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(plain), OmegaConf.from_dotlist(additions))


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """Compose an experiment file with its `defaults` and apply `key=value` overrides."""
    cfg = _load_composed(Path(path))
    return apply_overrides(cfg, overrides)


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config (interpolations evaluated) atomically."""
    write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


OVERRIDES_HELP = """\
overrides:
  key=value       set a config key (dotted path, e.g. trainer.max_steps=200); a key that the composed config
                  does not have is an error listing the valid keys
  +key=value      add a new key on purpose
  experiment=PATH another way to name the experiment file
"""


def cli_parser(prog: str | None = None, description: str | None = None, default: str | Path | None = None
               ) -> argparse.ArgumentParser:
    """The argparse parser of a `python -m <command> [EXPERIMENT.yaml] [key=value ...]` command (for --help)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=OVERRIDES_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = f" (default: {default})" if default is not None else ""
    parser.add_argument("experiment", metavar="EXPERIMENT.yaml", nargs="?" if default is not None else None,
                        help=f"experiment config; its `defaults:` list is composed first{where}")
    parser.add_argument("overrides", metavar="key=value", nargs="*", help="config overrides (below)")
    return parser


def parse_cli(argv: Sequence[str], prog: str | None = None, description: str | None = None,
              default: str | Path | None = None) -> tuple[Path, list[str]]:
    """Split `[experiment=]PATH.yaml key=value ...` into the experiment path and the overrides.

    `-h`/`--help` prints the command's help and exits 0; an unknown option or a missing experiment file (when
    there is no `default`) prints the usage and exits 2, as argparse does.
    """
    argv = list(argv)
    parser = cli_parser(prog, description, default)
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        raise SystemExit(0)
    options = [arg for arg in argv if arg.startswith("-")]
    if options:
        parser.error(f"unrecognized arguments: {' '.join(options)} (overrides are key=value)")
    experiment, overrides = None, []
    for arg in argv:
        if experiment is None and arg.startswith("experiment="):
            experiment = arg.split("=", 1)[1]
        elif experiment is None and "=" not in arg and arg.endswith((".yaml", ".yml")):
            experiment = arg
        else:
            overrides.append(arg)
    if experiment is None:
        if default is None:
            parser.error("no experiment file given")
        experiment = default
    return Path(experiment), overrides
