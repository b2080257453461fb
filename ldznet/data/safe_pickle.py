"""The restricted unpickler for the RefCOCO ``refs(<partition>).p`` files (kept importable here).

The refer annotations are Python-2 cPickles (docs/formats.md §11): a list of dicts of ints, strings and
lists. They are read with :func:`common.safe_pickle.safe_load`, which refuses every global except ``set`` and
``frozenset`` (so ``os.system`` and the like raise :class:`UnsafePickleError` before they can run) and checks
that the value is made only of dict/list/tuple/set/str/bytes/int/float/bool/None. The implementation is shared
with the other readers of foreign pickles (e.g. monodepth2's ``gt_depths.npz``) in :mod:`common.safe_pickle`.
"""

from common.safe_pickle import UnsafePickleError, safe_dumps, safe_load, safe_loads

__all__ = ["UnsafePickleError", "safe_dumps", "safe_load", "safe_loads"]
