"""Analyses of the frozen LDM (dissertation §3.2): Fig 3.1 coarse masks (`coarse_masks.py`) and the
Fig 3.4 probe of the 16 spatial-attention features over timesteps (`probe.py`)."""
