"""Evaluation metrics of the dissertation, each with its protocol spelled out (see the module docstrings)."""
