"""Weights and checkpoints, written atomically and read safely.

- Released weights: safetensors (`save_weights` / `load_weights`), with a small string metadata dict.
- Everything else (training checkpoints): `torch.save`, read back with `torch.load(weights_only=True)` so an
  untrusted file cannot execute code while it is unpickled.
- Every write goes to a temporary file in the same folder, is flushed to disk, then renamed over the target:
  a crash or a kill mid-write leaves the previous file intact, never a half-written one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as file:
        file.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path, "w") as file:
        json.dump(obj, file, indent=2, sort_keys=False, default=_json_default)
        file.write("\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_torch(obj: Any, path: str | Path) -> None:
    """`torch.save` through an atomic write (tensors, dicts, lists, numbers, strings only)."""
    with atomic_write(path, "wb") as file:
        torch.save(obj, file)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with `weights_only=True`; a missing or unreadable file names itself."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot load checkpoint {path} safely (weights_only=True): {error}") from error


def load_torch_mapped(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)`, memory-mapped when the file is in the zip format (multi-GB SD / LD-ZNet
    checkpoints are then not copied into memory); legacy pre-zip files, which cannot be mapped, load plainly.
    Errors are the caller's to name (each reader explains its own way out)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location=map_location, weights_only=True)


def save_weights(state_dict: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (tensors made contiguous; metadata values must be strings)."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in state_dict.items()}
    metadata = {key: str(value) for key, value in (metadata or {}).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def load_weights(path: str | Path, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file -> (state_dict, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=device) as file:
            metadata = dict(file.metadata() or {})
        return load_file(str(path), device=device), metadata
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read safetensors file {path}: {error}") from error


def sha256_of_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
