"""The split lists ship inside the package: every file matches the sha256 and line count in its README, the
package data of pyproject.toml covers them, and the Chapter 2 configs point at them from any working directory."""

import ast
import fnmatch
import hashlib
import re
from pathlib import Path

import pytest

from common.config import load_config, package_data_path

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ROOT / "sharingan" / "data" / "splits"
ROW = re.compile(r"^\| `(?P<name>[^`]+)` \| (?P<lines>\d+) \| .* \| `(?P<sha256>[0-9a-f]{64})` \|$")


def _readme_rows() -> dict[str, tuple[int, str]]:
    rows = {}
    for line in (SPLITS / "README.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match["name"]] = (int(match["lines"]), match["sha256"])
    return rows


def test_every_shipped_list_matches_its_readme_row():
    rows = _readme_rows()
    shipped = {str(p.relative_to(SPLITS)) for p in SPLITS.rglob("*") if p.is_file() and p.name != "README.md"}
    assert shipped == set(rows), f"files without a README row: {shipped - set(rows)}; rows without a file: " \
                                 f"{set(rows) - shipped}"
    for name, (lines, sha256) in rows.items():
        data = (SPLITS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256, name
        assert data.count(b"\n") == lines, name


def test_the_counts_the_experiments_rely_on():
    rows = _readme_rows()
    assert rows["kitti_sharingan/test.txt"][0] == 697
    assert rows["kitti_sharingan/val.txt"][0] == 888
    assert rows["vkitti_sharingan/trainA_SYN_original.txt"][0] + rows["vkitti_sharingan/testA_SYN_original.txt"][0] \
        == 21260
    assert rows["kitti_monodepth2/eigen_full_train_files.txt"][0] == 2 * 22600
    assert rows["photoface/Photoface_test_list.txt"][0] == 2153
    assert rows["photoface/Photoface_img_list.txt"][0] == 12672


def test_package_data_covers_every_list():
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is not in Python 3.10)
    section = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    patterns = ast.literal_eval(re.search(r"^sharingan = (\[.*?\])", section, re.MULTILINE).group(1))
    for path in SPLITS.rglob("*"):
        if path.is_file():
            inside = str(path.relative_to(ROOT / "sharingan"))
            assert any(fnmatch.fnmatch(inside, pattern) for pattern in patterns), inside


@pytest.mark.parametrize("config, key, expected", [
    ("depth_sharingan.yaml", "data.splits_root", SPLITS),
    ("depth_sharingan.yaml", "data.kitti.test_list", SPLITS / "kitti_sharingan" / "test.txt"),
    ("faces_pipeline.yaml", "data.photoface_lists", SPLITS / "photoface"),
])
def test_configs_default_to_the_shipped_lists_from_any_directory(config, key, expected, tmp_path, monkeypatch):
    monkeypatch.delenv("SHARINGAN_SPLITS_ROOT", raising=False)
    monkeypatch.delenv("PHOTOFACE_LISTS", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ROOT / "experiments" / "chapter2" / config)
    value = cfg
    for part in key.split("."):
        value = value[part]
    assert Path(value) == expected and Path(value).exists()


def test_the_lists_can_still_be_given_by_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARINGAN_SPLITS_ROOT", str(tmp_path / "env"))
    cfg = load_config(ROOT / "experiments" / "chapter2" / "depth_sharingan.yaml")
    assert cfg.data.kitti.val_list == str(tmp_path / "env" / "kitti_sharingan" / "val.txt")
    cfg = load_config(ROOT / "experiments" / "chapter2" / "depth_sharingan.yaml", [f"data.splits_root={tmp_path}"])
    assert cfg.data.vkitti.train_lists[0] == str(tmp_path / "vkitti_sharingan" / "trainA_SYN_original.txt")


def test_package_data_resolver_names_what_is_missing():
    assert Path(package_data_path("sharingan/data/splits")) == SPLITS
    with pytest.raises(FileNotFoundError, match="no_such_file"):
        package_data_path("sharingan/data/no_such_file")
    with pytest.raises(FileNotFoundError, match="not an installed package"):
        package_data_path("no_such_package_xyz/data")
