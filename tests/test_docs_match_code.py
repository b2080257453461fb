"""What the README, the docs and `make help` say matches what the code does: the `key=value` examples name keys
that the composed configs have, the README's `make help` block is the real output, the checkpoint files the
README names are the ones the code writes, and there is no `_target_` / `common.instantiate` left to mention."""

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from common.config import EXPERIMENTS_ROOT, load_config

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# the experiment each make target composes (the pipelines' default configs)
TARGET_CONFIGS = {
    "chapter2-depth": EXPERIMENTS_ROOT / "chapter2" / "depth_pipeline.yaml",
    "chapter2-normals": EXPERIMENTS_ROOT / "chapter2" / "faces_pipeline.yaml",
    "chapter3": EXPERIMENTS_ROOT / "chapter3" / "pipeline.yaml",
}
KEY = re.compile(r"^\+?[A-Za-z_][\w.]*$")
MISSING = object()


def _override_examples() -> list[tuple[str, str, str]]:
    """(where, make target, key) for every key=value in `make TARGET ARGS="..."` examples and in `make help`."""
    examples = []
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"^([\w-]+):.*## .*ARGS=\"([^\"]*)\"", line)
        if match:
            examples.append(("Makefile help", match[1], match[2]))
    for document in DOCUMENTS:
        text = document.read_text().replace("\\\n", " ")
        for match in re.finditer(r"make ([\w-]+) ARGS=\"([^\"]*)\"", text):
            examples.append((document.name, match[1], match[2]))
    keys = []
    for where, target, arguments in examples:
        for token in arguments.split():
            if "=" in token and KEY.match(token.split("=", 1)[0]):
                keys.append((where, target, token.split("=", 1)[0].lstrip("+")))
    return keys


def test_override_examples_name_keys_the_configs_have():
    examples = _override_examples()
    assert any(where == "Makefile help" for where, _, _ in examples)  # the parser finds the help strings
    configs = {target: load_config(path) for target, path in TARGET_CONFIGS.items()}
    wrong = []
    for where, target, key in examples:
        if target not in configs:
            wrong.append(f"{where}: `make {target}` takes no config overrides but an example passes {key}=")
        elif OmegaConf.select(configs[target], key, default=MISSING) is MISSING:
            wrong.append(f"{where}: `make {target} ARGS=\"{key}=...\"`: {TARGET_CONFIGS[target].name} has no key {key}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_readme_make_help_block_is_what_make_help_prints():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## `make help`\n\n```\n(.*?)```", readme, re.DOTALL).group(1)
    printed = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60).stdout
    assert block == printed


def _checkpoint_names_written_by_code() -> set[str]:
    """File names the code writes: string constants ending in .pt/.ckpt, Lightning's `filename="X"` -> X.ckpt,
    `save_last=True` -> last.ckpt (docstrings and comments do not count)."""
    names = set()
    for package in ("common", "sharingan", "ldznet"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                          if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                          and node.body and isinstance(node.body[0], ast.Expr)
                          and isinstance(node.body[0].value, ast.Constant)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                    names.update(re.findall(r"[\w-]+\.(?:pt|ckpt)\b", node.value))
                if isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant):
                    if node.arg == "filename" and isinstance(node.value.value, str):
                        names.add(node.value.value + ".ckpt")
                    if node.arg == "save_last" and node.value.value is True:
                        names.add("last.ckpt")
    return names


def test_readme_names_the_checkpoint_files_the_code_writes():
    readme = (ROOT / "README.md").read_text()
    outputs = re.search(r"## Where outputs go\n(.*?)\n## ", readme, re.DOTALL).group(1)
    named = set(re.findall(r"([\w-]+\.(?:pt|ckpt))`", outputs))
    written = _checkpoint_names_written_by_code()
    assert {"networks_best.pt", "segmenter.pt", "last.ckpt"} <= written  # the scan sees what the runs write
    assert named <= written, f"README names files no code writes: {named - written}"
    # the files that eval / predict read must be the ones the README points to
    assert {"networks_best.pt", "segmenter.pt"} <= named, named


def test_no_target_nodes_and_no_instantiate_module():
    assert not (ROOT / "common" / "instantiate.py").exists()
    with_target = [str(p.relative_to(ROOT)) for p in EXPERIMENTS_ROOT.rglob("*.yaml") if "_target_" in p.read_text()]
    assert not with_target, with_target
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.yaml", "Makefile"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    this = str(Path(__file__).relative_to(ROOT))
    mentions = [name for name in tracked if name != this and (ROOT / name).is_file()
                and re.search(r"common[./]instantiate", (ROOT / name).read_text(encoding="utf-8"))]
    assert not mentions, mentions
