"""common.safe_pickle: numpy arrays (.npy/.npz, object arrays included) load; anything that would run code is
refused before it runs, naming the file."""

import builtins
import os
import pickle

import numpy as np
import pytest

from common.safe_pickle import UnsafePickleError, load_npy, load_npz, safe_loads, safe_loads_array


class _ShellMarker:
    """Unpickling this with the standard unpickler runs `os.system("touch <marker>")`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _OpenMarker:
    """Unpickling this with the standard unpickler runs `open(<marker>, "w")`, creating the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def hostile_object_array(payload) -> np.ndarray:
    """An object array like monodepth2's gt_depths 'data' (per-image maps) with one hostile element."""
    array = np.empty(2, dtype=object)
    array[0] = np.ones((3, 4), dtype=np.float32)
    array[1] = payload
    return array


def test_arrays_of_every_pickle_protocol_round_trip():
    objects = np.empty(4, dtype=object)
    objects[:] = [np.zeros((2, 3), np.float32), np.arange(5), np.float32(1.5), None]
    arrays = [np.arange(12.0).reshape(3, 4), np.asfortranarray(np.arange(6).reshape(2, 3)), objects,
              np.zeros(2, dtype=[("a", "<f4"), ("b", "<i2")]), np.array(["ab", "c"])]
    for protocol in (2, 3, 4, 5):
        for array in arrays:
            loaded = safe_loads_array(pickle.dumps(array, protocol=protocol))
            assert loaded.dtype == array.dtype and loaded.shape == array.shape
            for expected, got in zip(array.ravel(), loaded.ravel()):
                if isinstance(expected, np.ndarray):
                    np.testing.assert_array_equal(got, expected)
                    assert got.dtype == expected.dtype
                else:
                    assert got == expected or (expected is None and got is None)


def test_numpy_1_module_names_and_python_2_strings_load():
    # numpy 1 wrote `numpy.core.multiarray`; a Python-2 pickle stores the raw data as a str (latin-1).
    array = np.array([[1.5, -2.0], [3.25, 1e6]], dtype=np.float32)
    payload = pickle.dumps(array, protocol=2)
    assert b"numpy._core.multiarray" in payload
    payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    np.testing.assert_array_equal(safe_loads_array(payload), array)


def test_npz_with_object_and_plain_arrays(tmp_path):
    maps = np.empty(2, dtype=object)
    maps[0], maps[1] = np.full((3, 4), 7.5, np.float32), np.arange(10, dtype=np.float32).reshape(2, 5)
    np.savez_compressed(tmp_path / "gt_depths.npz", data=maps, sizes=np.array([12, 10]))
    arrays = load_npz(tmp_path / "gt_depths.npz")
    assert sorted(arrays) == ["data", "sizes"]
    assert arrays["data"].dtype == object and arrays["data"][1].shape == (2, 5)
    np.testing.assert_array_equal(arrays["data"][0], maps[0])
    np.testing.assert_array_equal(arrays["sizes"], [12, 10])
    np.save(tmp_path / "one.npy", maps)
    np.testing.assert_array_equal(load_npy(tmp_path / "one.npy")[1], maps[1])


@pytest.mark.parametrize("payload_class", [_ShellMarker, _OpenMarker], ids=["os.system", "builtins.open"])
def test_hostile_npz_is_refused_and_nothing_runs(tmp_path, payload_class):
    # The payload is real: numpy's own loader with allow_pickle=True creates its marker.
    control_marker = tmp_path / "control_marker"
    np.savez(tmp_path / "control.npz", data=hostile_object_array(payload_class(control_marker)))
    with np.load(tmp_path / "control.npz", allow_pickle=True) as archive:
        archive["data"]
    assert control_marker.exists()

    marker = tmp_path / "marker"
    path = tmp_path / "gt_depths.npz"
    np.savez(path, data=hostile_object_array(payload_class(marker)))
    refused = r"gt_depths\.npz.*refusing to load global '(posix|nt|os|io|builtins)\."
    with pytest.raises(UnsafePickleError, match=refused):
        load_npz(path)
    assert not marker.exists()
    np.save(tmp_path / "evil.npy", hostile_object_array(payload_class(marker)))
    with pytest.raises(UnsafePickleError, match=r"evil\.npy.*refusing"):
        load_npy(tmp_path / "evil.npy")
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("subprocess", "Popen"), ("builtins", "getattr"),
                                         ("numpy", "load"), ("numpy.lib.format", "read_array")])
def test_any_other_global_is_refused(module, name):
    data = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\nq\x00."
    with pytest.raises(UnsafePickleError, match=f"x.npy: refusing to load global '{module}.{name}'"):
        safe_loads_array(data, source="x.npy")


def test_codecs_encode_admits_only_latin1_bytes():
    data = pickle.dumps(b"\x00\xff", protocol=2)
    assert b"_codecs" in data
    evil = data.replace(b"latin1", b"rot_13")  # same length keeps the pickle well formed
    with pytest.raises(UnsafePickleError, match="x.npy: .*only latin-1"):
        safe_loads_array(evil, source="x.npy")


def test_non_arrays_and_mismatched_headers_are_refused(tmp_path):
    with pytest.raises(UnsafePickleError, match="expected a numpy array.*list"):
        safe_loads_array(pickle.dumps([1, 2]), source="x.npy")
    # An object array whose element is a set of arrays is not plain data.
    with pytest.raises(UnsafePickleError, match="unexpected object of type ndarray"):
        weird = np.empty(1, dtype=object)
        weird[0] = [np.zeros(2)]
        safe_loads_array(pickle.dumps(weird), source="x.npy")
    # Header shape and pickled shape must agree.
    np.save(tmp_path / "a.npy", np.array([np.zeros(2), np.zeros(3)], dtype=object))
    raw = (tmp_path / "a.npy").read_bytes().replace(b"'shape': (2,)", b"'shape': (5,)")
    (tmp_path / "b.npy").write_bytes(raw)
    with pytest.raises(UnsafePickleError, match=r"b\.npy: header says shape \(5,\)"):
        load_npy(tmp_path / "b.npy")


def test_missing_and_garbage_files_name_themselves(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        load_npz(tmp_path / "nothere.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="garbage.npz: not a .npz archive"):
        load_npz(tmp_path / "garbage.npz")
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="garbage.npy: not a .npy array"):
        load_npy(tmp_path / "garbage.npy")


def test_plain_profile_still_refuses_numpy():
    # refer's pickles are plain data: the array globals are not admitted there.
    with pytest.raises(UnsafePickleError, match="numpy"):
        safe_loads(pickle.dumps(np.zeros(2), protocol=2), source="refs(unc).p")
