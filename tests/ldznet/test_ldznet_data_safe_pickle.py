"""The restricted unpickler: plain data loads, anything that would call code is refused before running."""

import os
import pickle
import pickletools

import pytest

from ldznet.data.safe_pickle import UnsafePickleError, safe_dumps, safe_load, safe_loads


class _TouchFile:
    """Unpickling this with the standard pickle module would run `os.system("touch <marker>")`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_plain_refs_round_trip_protocol_2():
    refs = [
        {
            "ref_id": 1,
            "sentences": [{"raw": "Café à gauche", "tokens": ["cafe"]}],
            "split": "testA",
            "box": (1.5, 2.0),
            "ids": {3, 4},
            "none": None,
            "flag": True,
            "big": 2**70,
        }
    ]
    data = safe_dumps(refs, protocol=2)
    assert data[:2] == b"\x80\x02"
    assert safe_loads(data) == refs


def test_python2_short_binstring_decodes_latin1():
    # Hand-built protocol-2 pickle as cPickle writes py2 str: [{'raw': 'caf\xe9'}] with SHORT_BINSTRING.
    data = b"\x80\x02]q\x00}q\x01(U\x03rawq\x02U\x04caf\xe9q\x03ua."
    assert safe_loads(data) == [{"raw": "café"}]


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps([{"ref_id": 1, "evil": _TouchFile(marker)}], protocol=2)
    # The payload really names os.system (posix.system / nt.system) as a global.
    globals_named = [
        arg for op, arg, _ in pickletools.genops(payload) if op.name in ("GLOBAL", "STACK_GLOBAL")
    ]
    assert any("system" in str(arg) for arg in globals_named) or b"system" in payload
    path = tmp_path / "refs(unc).p"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p.*system"):
        safe_load(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "module,name", [("builtins", "eval"), ("subprocess", "Popen"), ("builtins", "getattr")]
)
def test_any_other_global_is_refused(module, name):
    data = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nq\x00."
    with pytest.raises(UnsafePickleError, match=f"{module}.{name}"):
        safe_loads(data, source="x.p")


def test_garbage_and_missing_files_name_themselves(tmp_path):
    bad = tmp_path / "refs(umd).p"
    bad.write_bytes(b"not a pickle at all")
    with pytest.raises(UnsafePickleError, match=r"refs\(umd\)\.p"):
        safe_load(bad)
    with pytest.raises(FileNotFoundError, match="nothere.p"):
        safe_load(tmp_path / "nothere.p")
