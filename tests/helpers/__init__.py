"""Helpers shared by the tests only (`from tests.helpers.<module> import ...`; pytest's importlib mode finds the
`tests` namespace from the repository root). Helpers that benchmarks or smoke runs also need live in
`common/testing.py`."""
