"""Files that could run code: a hostile `gt_depths.npz`, a hostile Lightning checkpoint, and a sweep of the
shipped code for readers that would unpickle (or eval) a file unsafely. docs/RELIABILITY.md lists the sweep."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from common.safe_pickle import UnsafePickleError
from sharingan.data.kitti import KittiDepthEvalDataset, write_kitti_fixture

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("common", "sharingan", "ldznet", "demo", "benchmarks")


class _ShellMarker:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_kitti_hostile_gt_depths_npz_runs_nothing_and_names_the_file(tmp_path):
    entries = write_kitti_fixture(tmp_path / "kitti", frames=2, image_size=(24, 80), points_per_frame=50)
    marker = tmp_path / "marker"
    data = np.empty(2, dtype=object)
    data[0], data[1] = np.ones((24, 80), np.float32), _ShellMarker(marker)
    np.savez_compressed(tmp_path / "gt_depths.npz", data=data)
    with pytest.raises(UnsafePickleError, match=r"gt_depths\.npz.*refusing to load global '(posix|nt|os)\.system'"):
        KittiDepthEvalDataset(tmp_path / "kitti", entries, size=(16, 64), gt_file=tmp_path / "gt_depths.npz")
    assert not marker.exists()


def test_kitti_gt_depths_npz_of_plain_maps_loads(tmp_path):
    entries = write_kitti_fixture(tmp_path / "kitti", frames=2, image_size=(24, 80), points_per_frame=50)
    data = np.empty(2, dtype=object)
    data[0], data[1] = np.full((24, 80), 3.0, np.float32), np.full((24, 80), 9.5, np.float32)
    np.savez_compressed(tmp_path / "gt_depths.npz", data=data)
    dataset = KittiDepthEvalDataset(tmp_path / "kitti", entries, size=(16, 64), gt_file=tmp_path / "gt_depths.npz")
    assert dataset[1]["gt"].dtype == np.float64 and float(dataset[1]["gt"][0, 0]) == 9.5
    np.savez_compressed(tmp_path / "other.npz", depths=data)
    with pytest.raises(KeyError, match=r"other\.npz has no 'data' array \(found \['depths'\]\)"):
        KittiDepthEvalDataset(tmp_path / "kitti", entries, size=(16, 64), gt_file=tmp_path / "other.npz")


def test_lightning_resume_reader_is_weights_only_even_when_the_environment_says_otherwise(tmp_path, monkeypatch):
    from common.resilience import AtomicCheckpointIO

    marker = tmp_path / "marker"
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "evil": _ShellMarker(marker)}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # would make torch.load(weights_only=None) unsafe
    with pytest.raises(Exception, match="(?i)weights.only"):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="weights_only=True only"):
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    good = tmp_path / "good.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 3, "w": torch.ones(2)}, good)
    assert AtomicCheckpointIO().load_checkpoint(good)["step"] == 3


# ----------------------------------------------------------------------------------------------------------
# Sweep of the shipped code
# ----------------------------------------------------------------------------------------------------------

# Modules whose unpickler subclasses were reviewed: `find_class` returns only admitted functions or inert
# placeholders, so nothing named by the file is imported or called. A new one must be reviewed and listed here.
RESTRICTED_UNPICKLERS = {
    "common/safe_pickle.py": "allow-list of set/frozenset and numpy's array reconstruction",
    "ldznet/official.py": "torch zip checkpoints: tensors become lazy views, any other global an inert placeholder",
}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "<expression>")
    return ".".join(reversed(parts))


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def unsafe_readers(source: str, filename: str) -> list[str]:
    """Calls in `source` that could run code from a file: pickle/dill/joblib/marshal/shelve loads, np.load with
    allow_pickle, torch.load without weights_only=True, yaml.load/unsafe_load/full_load, eval/exec,
    torch.hub.load, trust_remote_code=True."""
    found = []
    restricted = filename in RESTRICTED_UNPICKLERS
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno} {name}"
        last = name.rsplit(".", 1)[-1]
        module = name.rsplit(".", 1)[0] if "." in name else ""
        if name in ("eval", "exec", "compile", "__import__") or name in ("builtins.eval", "builtins.exec"):
            found.append(f"{where}: evaluates code")
        elif module in ("pickle", "_pickle", "cPickle", "dill", "cloudpickle", "marshal", "joblib", "shelve") and \
                last in ("load", "loads", "Unpickler", "open") and not restricted:
            found.append(f"{where}: unrestricted unpickling")
        elif module in ("np", "numpy") and last == "load":
            flag = _keyword(node, "allow_pickle")
            if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{where}: allow_pickle (use common.safe_pickle.load_npz / load_npy)")
        elif name == "torch.load":
            flag = _keyword(node, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        elif module == "yaml" and last in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all"):
            found.append(f"{where}: yaml.{last} (use yaml.safe_load or OmegaConf.load)")
        elif name in ("torch.hub.load", "hub.load"):
            found.append(f"{where}: torch.hub.load runs the repository's code")
        flag = _keyword(node, "trust_remote_code")
        if flag is not None and not (isinstance(flag, ast.Constant) and flag.value is False):
            found.append(f"{where}: trust_remote_code")
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ClassDef) and not restricted and \
                any(_dotted(base).endswith("Unpickler") for base in node.bases):
            found.append(f"{filename}:{node.lineno} class {node.name}: an unpickler outside common/safe_pickle.py")
    return found


def test_the_sweep_detects_each_unsafe_reader():
    snippets = {
        "np.load(p, allow_pickle=True)": 1, "np.load(p)": 0, "numpy.load(p, allow_pickle=flag)": 1,
        "torch.load(p)": 1, "torch.load(p, weights_only=False)": 1, "torch.load(p, weights_only=True)": 0,
        "pickle.load(f)": 1, "pickle.loads(b)": 1, "yaml.load(t)": 1, "yaml.safe_load(t)": 0, "eval(s)": 1,
        "exec(s)": 1, "model.eval()": 0, "built[name].eval()": 0, "torch.hub.load('a', 'b')": 1,
        "f(p, trust_remote_code=True)": 1,
        "class U(pickle.Unpickler): pass": 1, "joblib.load(p)": 1,
    }
    for snippet, expected in snippets.items():
        assert len(unsafe_readers(snippet, "x.py")) == expected, snippet


def test_no_shipped_code_reads_a_file_in_a_way_that_could_run_code():
    found = []
    files = [path for folder in SHIPPED for path in sorted((REPO_ROOT / folder).rglob("*.py"))]
    assert len(files) > 50
    for path in files:
        relative = path.relative_to(REPO_ROOT).as_posix()
        found += unsafe_readers(path.read_text(encoding="utf-8"), relative)
    assert not found, "readers that could run code from a file:\n" + "\n".join(found)
