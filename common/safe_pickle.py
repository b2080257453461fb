"""Reading pickles, `.npy` and `.npz` files without running code from them.

A pickle names importable callables and calls them while it loads (``os.system`` included), and numpy's
``np.load(allow_pickle=True)`` unpickles the object arrays of a ``.npy``/``.npz`` file with the standard
unpickler. Files we did not write (refer's ``refs(<partition>).p``, monodepth2's ``gt_depths.npz``) are read
here instead, with an unpickler that admits only a short list of globals and refuses everything else with
:class:`UnsafePickleError` *before* it can be called:

- plain data (:func:`safe_loads`, :func:`safe_load`): the containers ``set``/``frozenset`` only; the result is
  checked to be made of dict/list/tuple/set/str/bytes/int/float/bool/None;
- numpy arrays (:func:`safe_loads_array`, :func:`load_npy`, :func:`load_npz`): in addition numpy's array
  reconstruction (``_reconstruct``, ``_frombuffer``, ``scalar``, ``ndarray``, ``dtype``, under both the
  numpy 1 ``numpy.core`` and numpy 2 ``numpy._core`` module names) and a ``_codecs.encode`` that only turns a
  latin-1 string back into bytes (how Python 3 writes ``bytes`` at pickle protocol 2). The result must be an
  ndarray whose elements (for object arrays) are again arrays or plain values.

Arrays without Python objects in a ``.npy``/``.npz`` are read by numpy itself with ``allow_pickle=False``.
"""

from __future__ import annotations

import ast
import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

_PLAIN_SCALARS = (str, bytes, int, float, bool, type(None))
_PLAIN_CONTAINERS = (list, tuple, set, frozenset)
_MAX_DEPTH = 100


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than the admitted plain data (or numpy arrays)."""


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` use it, restricted to latin-1 strings."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") != "latin1":
        raise UnsafePickleError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}); only latin-1 "
                                "strings (bytes written at pickle protocol 2) are accepted")
    return text.encode("latin1")


_PLAIN_GLOBALS: dict[tuple[str, str], Any] = {
    (module, name): value
    for module in ("builtins", "__builtin__")
    for name, value in (("set", set), ("frozenset", frozenset))
}


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """numpy's array-reconstruction callables under the module names numpy 1 and numpy 2 write."""
    reconstruct = np.zeros(1).__reduce__()[0]        # numpy._core.multiarray._reconstruct
    scalar = np.float32(0).__reduce__()[0]            # numpy._core.multiarray.scalar
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]      # numpy._core.numeric._frombuffer (protocol 5)
    admitted = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                ("_codecs", "encode"): _latin1_bytes, ("codecs", "encode"): _latin1_bytes}
    for core in ("numpy.core", "numpy._core"):
        admitted[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        admitted[(f"{core}.multiarray", "scalar")] = scalar
        admitted[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return admitted


_ARRAY_GLOBALS: dict[tuple[str, str], Any] = {**_PLAIN_GLOBALS, **_numpy_globals()}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, encoding: str, admitted: Mapping[tuple[str, str], Any],
                 what: str) -> None:
        super().__init__(file, encoding=encoding)
        self._source, self._admitted, self._what = source, admitted, what

    def find_class(self, module: str, name: str):
        try:
            return self._admitted[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to load global '{module}.{name}'; only {self._what} are accepted"
            ) from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source}: refusing a persistent id in the pickle")


def _unpickle(data: bytes, source: str, encoding: str, admitted: Mapping[tuple[str, str], Any], what: str):
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source, encoding, admitted, what).load()
    except UnsafePickleError as error:
        if str(error).startswith(source):
            raise
        raise UnsafePickleError(f"{source}: {error}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError) as error:
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(error).__name__}: {error})") from error


def _check_plain(value, source: str, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise UnsafePickleError(f"{source}: nesting deeper than {_MAX_DEPTH} levels")
    if isinstance(value, _PLAIN_SCALARS):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, source, depth + 1)
            _check_plain(item, source, depth + 1)
        return
    if isinstance(value, _PLAIN_CONTAINERS):
        for item in value:
            _check_plain(item, source, depth + 1)
        return
    raise UnsafePickleError(f"{source}: unexpected object of type {type(value).__name__} in the pickle")


def _check_array(value, source: str, depth: int = 0) -> None:
    """An ndarray (exactly, no subclass) whose object elements are arrays or plain values."""
    if depth > _MAX_DEPTH:
        raise UnsafePickleError(f"{source}: nesting deeper than {_MAX_DEPTH} levels")
    if type(value) is not np.ndarray:
        raise UnsafePickleError(f"{source}: expected a numpy array, the pickle holds {type(value).__name__}")
    if not value.dtype.hasobject:
        return
    if value.dtype != np.dtype(object):
        raise UnsafePickleError(f"{source}: structured dtype with Python objects ({value.dtype}) is not accepted")
    for item in value.ravel():
        if isinstance(item, np.ndarray):
            _check_array(item, source, depth + 1)
        elif isinstance(item, np.generic):
            if isinstance(item, np.object_) or item.dtype.hasobject:
                raise UnsafePickleError(f"{source}: unexpected numpy object scalar in the array")
        else:
            _check_plain(item, source, depth + 1)


# ----------------------------------------------------------------------------------------------------------
# Plain data (refer's refs(<partition>).p)
# ----------------------------------------------------------------------------------------------------------


def safe_loads(data: bytes, source: str = "<bytes>", encoding: str = "latin1"):
    """Unpickle ``data`` accepting only plain containers, numbers and strings.

    ``encoding='latin1'`` decodes Python-2 ``str`` objects losslessly (identical to ASCII for ASCII text).
    """
    value = _unpickle(data, source, encoding, _PLAIN_GLOBALS, "plain containers, numbers and strings")
    _check_plain(value, source)
    return value


def safe_load(path: str | Path, encoding: str = "latin1"):
    """Read a pickle file with :func:`safe_loads`; a missing file raises ``FileNotFoundError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickle file not found: {path}")
    return safe_loads(path.read_bytes(), source=str(path), encoding=encoding)


def safe_dumps(value, protocol: int = 2) -> bytes:
    """Pickle plain data (checked first) with the given protocol; protocol 2 is what refer's files use."""
    _check_plain(value, "<value to pickle>")
    return pickle.dumps(value, protocol=protocol)


# ----------------------------------------------------------------------------------------------------------
# numpy arrays (.npy / .npz, e.g. monodepth2's gt_depths.npz)
# ----------------------------------------------------------------------------------------------------------


def safe_loads_array(data: bytes, source: str = "<bytes>", encoding: str = "latin1") -> np.ndarray:
    """Unpickle a numpy array (object arrays of arrays included) admitting only numpy's array reconstruction."""
    value = _unpickle(data, source, encoding, _ARRAY_GLOBALS, "numpy arrays, plain containers, numbers and strings")
    _check_array(value, source)
    return value


_NPY_MAGIC = b"\x93NUMPY"


def _read_npy(raw: bytes, source: str, encoding: str) -> np.ndarray:
    """One `.npy` payload: plain arrays through numpy (allow_pickle=False), object arrays through the
    restricted unpickler (the header is a Python literal, parsed with ast.literal_eval)."""
    if not raw.startswith(_NPY_MAGIC) or len(raw) < 10:
        raise ValueError(f"{source}: not a .npy array (bad magic string)")
    major = raw[6]
    if major == 1:
        length, start = int.from_bytes(raw[8:10], "little"), 10
    elif major in (2, 3):
        length, start = int.from_bytes(raw[8:12], "little"), 12
    else:
        raise ValueError(f"{source}: unsupported .npy format version {major}.{raw[7]}")
    header_text = raw[start:start + length].decode("latin1" if major < 3 else "utf8")
    try:
        header = ast.literal_eval(header_text)
        dtype = np.lib.format.descr_to_dtype(header["descr"])
        shape = tuple(int(v) for v in header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError) as error:
        raise ValueError(f"{source}: malformed .npy header {header_text.strip()!r} ({error})") from error
    if not dtype.hasobject:
        try:
            return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{source}: cannot read array ({error})") from error
    array = safe_loads_array(raw[start + length:], source=source, encoding=encoding)
    if array.shape != shape:
        raise UnsafePickleError(f"{source}: header says shape {shape} but the pickled array is {array.shape}")
    return array


def load_npy(path: str | Path, encoding: str = "latin1") -> np.ndarray:
    """Read a `.npy` file without running code (object arrays via the restricted unpickler)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"numpy file not found: {path}")
    return _read_npy(path.read_bytes(), str(path), encoding)


def load_npz(path: str | Path, encoding: str = "latin1") -> dict[str, np.ndarray]:
    """Read every array of a `.npz` archive without running code -> {name: array}.

    A member that would need anything beyond numpy's array reconstruction raises :class:`UnsafePickleError`
    naming the file and the member.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"numpy archive not found: {path}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path}: not a .npz archive ({error})") from error
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for member in archive.namelist():
            name = member[:-4] if member.endswith(".npy") else member
            try:
                raw = archive.read(member)
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise ValueError(f"{path}: cannot read member {member!r} ({error})") from error
            arrays[name] = _read_npy(raw, f"{path} [{member}]", encoding)
    return arrays
