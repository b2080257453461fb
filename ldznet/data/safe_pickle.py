"""A restricted unpickler for the RefCOCO ``refs(<partition>).p`` files.

The refer annotations are Python-2 cPickles (docs/formats.md §11): a list of dicts of ints, strings and
lists. A pickle can name any importable callable and call it while loading (``os.system`` included), so the
files are read with an unpickler that refuses every global except the two plain container types ``set``
and ``frozenset``. Anything that needs another global (an object, a function call, ``bytes`` written by
protocol 2) raises :class:`UnsafePickleError` before it can run. The loaded value is then checked to be
made only of dict/list/tuple/set/str/bytes/int/float/bool/None.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

_ALLOWED_GLOBALS = {
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
}
_PLAIN_SCALARS = (str, bytes, int, float, bool, type(None))
_PLAIN_CONTAINERS = (list, tuple, set, frozenset)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something other than plain containers, numbers and strings."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str, encoding: str):
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return set if name == "set" else frozenset
        raise UnsafePickleError(
            f"{self._source}: refusing to load global '{module}.{name}'; only plain containers, numbers and "
            "strings are accepted"
        )

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._source}: refusing a persistent id in the pickle")


def _check_plain(value, source: str, depth: int = 0) -> None:
    if depth > 100:
        raise UnsafePickleError(f"{source}: nesting deeper than 100 levels")
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


def safe_loads(data: bytes, source: str = "<bytes>", encoding: str = "latin1"):
    """Unpickle ``data`` accepting only plain containers, numbers and strings.

    ``encoding='latin1'`` decodes Python-2 ``str`` objects losslessly (identical to ASCII for ASCII text).
    """
    try:
        value = _RestrictedUnpickler(io.BytesIO(data), source, encoding).load()
    except UnsafePickleError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
    ) as exc:
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from exc
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
