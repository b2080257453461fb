"""LD-ZNet, ZNet and RGBNet: text-based image segmentation on Stable Diffusion (dissertation Chapter 3).

Entry points: `python -m ldznet.train`, `ldznet.summary`, `ldznet.predict`, `ldznet.pipeline`,
`ldznet.analysis.coarse_masks`, `ldznet.analysis.probe`. Load a trained model with
`ldznet.checkpoints.load_segmenter(path)`.
"""
