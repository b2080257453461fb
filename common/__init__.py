"""Shared layer of the monorepo: configs, runs, trainer, checkpoints, visualisation, metrics, result tables.

Only code that both chapters use lives here (SharinGAN in `sharingan/`, LD-ZNet in `ldznet/`).
"""
