"""Fig 3.4: how much text-segmentation information each LDM feature holds, per block and timestep (§3.2.2).

For every spatial-attention block b in 1..16 (numbering in `ldznet.models.ldm_features`) and every t in
100, 200, ..., 900, 999 (the figure's "1000" is outside SD's 0..999 schedule), the frozen text-conditioned SD
UNet runs once on z_t of a small PhraseCut subset; a small decoder (conv 3x3 -> GroupNorm -> SiLU -> conv 1x1,
logits upsampled bilinearly) is trained on the features of (b, t) and scored by AP (CLIPSeg protocol,
common.metrics.segmentation) on a small validation subset. The dissertation gives neither the decoder nor the
subset sizes: these are our choices (docs/protocols.md §6), set in experiments/chapter3/probe.yaml.

Features are cached in one HDF5 file per split (`<out>/features_<split>.h5`, float16, datasets
`t<t>/block<b>` of shape (N, C, h, w) and `masks`), reused when the settings match, so decoders can be
retrained without running SD again. The same noise is used for every t of a sample (z_t differ only by t).

    python -m ldznet.analysis.probe [experiments/chapter3/probe.yaml] [key=value ...]

Writes `<out>/probe_ap.png` (16 x T heat map), `<out>/probe_ap.md/.json` (the table), `<out>/metrics.json`
and TensorBoard scalars + the heat map in `<out>/tb`. Paper finding to compare with: blocks 6-10 at
t = 300-500 hold the most (Fig 3.4).
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoints import atomic_write, write_json
from common.config import EXPERIMENTS_ROOT, load_config, parse_cli, save_config
from common.metrics.segmentation import ThresholdSweepMetrics
from common.results import write_results_table
from common.runs import environment_record, seed_everything
from ldznet.data import build_dataset
from ldznet.models.ldm_features import LDMFeatures, check_block_numbers
from ldznet.models.text_conditioning import FrozenTextConditioning
from ldznet.models.znet import LatentEncoder
from ldznet.stable_diffusion import components_from_config

DEFAULT_CONFIG = EXPERIMENTS_ROOT / "chapter3" / "probe.yaml"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _fingerprint(cfg: DictConfig, split: str, record: dict) -> str:
    """What the cached features depend on; a change invalidates the cache."""
    keys = ("image_size", "latent", "noise_seed", "timesteps", "blocks", "mask_size")
    plain = OmegaConf.to_container(cfg, resolve=True)
    settings = {key: plain[key] for key in keys}
    settings["data"] = plain["data"][split]
    settings["samples"] = plain[f"{split}_samples"]
    settings["stable_diffusion"] = record.get("sha256") or record.get("path")
    return json.dumps(settings, sort_keys=True, default=str)


@torch.no_grad()
def cache_features(cfg: DictConfig, split: str, components, path: Path, device: torch.device) -> Path:
    """Write (or reuse) `path` with features of every (t, block) and the masks of the `split` subset."""
    fingerprint = _fingerprint(cfg, split, components.record)
    if path.is_file():
        with h5py.File(path, "r") as file:
            if file.attrs.get("complete") and file.attrs.get("fingerprint") == fingerprint:
                return path
    dataset = build_dataset(cfg.data[split], limit=int(cfg[f"{split}_samples"]))
    if len(dataset) == 0:
        raise ValueError(f"probe: the {split} subset ({cfg.data[split].root}) is empty")
    timesteps, blocks = [int(t) for t in cfg.timesteps], check_block_numbers(cfg.blocks)
    encoder = LatentEncoder(components.vae, cfg.latent).to(device).eval()
    text = FrozenTextConditioning(components.tokenizer, components.text_encoder).to(device)
    # no sampled timesteps: every call below passes its t and noise
    features = LDMFeatures(components.unet, components.scheduler, blocks, train_timesteps=None,
                           eval_timestep=None).to(device).eval()
    generator = torch.Generator().manual_seed(int(cfg.noise_seed))
    loader = DataLoader(dataset, batch_size=int(cfg.batch_size), shuffle=False, num_workers=int(cfg.num_workers))
    temporary = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(temporary, "w") as file:
        count, start = len(dataset), 0
        size = int(cfg.mask_size)
        masks = file.create_dataset("masks", (count, 1, size, size), dtype="uint8")
        prompts = []
        for batch in tqdm(loader, desc=f"probe features ({split})", unit="batch"):
            images = batch["image"].to(device)
            batch_prompts = list(batch["prompt"])
            prompts += batch_prompts
            end = start + images.shape[0]
            masks[start:end] = (F.interpolate(batch["mask"].float(), size=(size, size), mode="area") > 0.5).numpy()
            z = encoder(images)
            states = text(batch_prompts)
            noise = torch.randn(z.shape, generator=generator).to(z)
            for timestep in timesteps:
                t = torch.full((z.shape[0],), timestep, dtype=torch.long, device=device)
                for block, feature in features(z, states, timesteps=t, noise=noise).items():
                    name = f"t{timestep}/block{block}"
                    if name not in file:
                        file.create_dataset(name, (count, *feature.shape[1:]), dtype="float16",
                                            chunks=(1, *feature.shape[1:]))
                    file[name][start:end] = feature.half().cpu().numpy()
            start = end
        file.create_dataset("prompts", data=np.array(prompts, dtype=h5py.string_dtype()))
        file.attrs["fingerprint"] = fingerprint
        file.attrs["complete"] = True
    os.replace(temporary, path)
    return path


class ProbeDecoder(nn.Module):
    """The "simple decoder" of Fig 3.4 (our design): conv 3x3 -> GroupNorm -> SiLU -> conv 1x1 -> upsample."""

    def __init__(self, channels: int, hidden: int = 64, groups: int = 8):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.GroupNorm(groups, hidden),
                                    nn.SiLU(), nn.Conv2d(hidden, 1, 1))

    def forward(self, features: torch.Tensor, size: int) -> torch.Tensor:
        return F.interpolate(self.layers(features), size=(size, size), mode="bilinear", align_corners=False)


def train_and_score(train_features: torch.Tensor, train_masks: torch.Tensor, val_features: torch.Tensor,
                    val_masks: torch.Tensor, cfg: DictConfig, device: torch.device, seed: int) -> float:
    """Train one decoder on (features, masks) and return its AP (percent) on the validation pair."""
    torch.manual_seed(seed)
    size = int(train_masks.shape[-1])
    decoder = ProbeDecoder(train_features.shape[1], int(cfg.decoder.hidden_channels)).to(device)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=float(cfg.decoder.learning_rate))
    generator = torch.Generator().manual_seed(seed)
    batch_size = int(cfg.decoder.batch_size)
    for _ in range(int(cfg.decoder.epochs)):
        order = torch.randperm(train_features.shape[0], generator=generator)
        for first in range(0, len(order), batch_size):
            index = order[first:first + batch_size]
            logits = decoder(train_features[index].to(device).float(), size)
            loss = F.binary_cross_entropy_with_logits(logits, train_masks[index].to(device).float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    metric = ThresholdSweepMetrics()
    decoder.eval()
    with torch.no_grad():
        for first in range(0, val_features.shape[0], batch_size):
            logits = decoder(val_features[first:first + batch_size].to(device).float(), size)
            for probability, mask in zip(torch.sigmoid(logits).cpu(), val_masks[first:first + batch_size]):
                metric.add(probability[0].numpy(), mask[0].numpy())
    return float(metric.compute()["ap"])


def save_heat_map(path: Path, grid: np.ndarray, blocks: Sequence[int], timesteps: Sequence[int]) -> np.ndarray:
    """16 x T AP heat map (rows: blocks, columns: t) as a PNG; returns the RGB array (for TensorBoard)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(max(4.5, 1.5 + 0.7 * len(timesteps)), 1.0 + 0.4 * len(blocks)))
    image = axis.imshow(grid, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(timesteps)), [str(t) for t in timesteps])
    axis.set_yticks(range(len(blocks)), [str(b) for b in blocks])
    axis.set_xlabel("timestep t")
    axis.set_ylabel("spatial-attention block")
    axis.set_title("Fig 3.4 probe: decoder AP (%)")
    for row in range(grid.shape[0]):
        for column in range(grid.shape[1]):
            axis.text(column, row, f"{grid[row, column]:.1f}", ha="center", va="center", fontsize=7, color="w")
    figure.colorbar(image, ax=axis, label="AP (%)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    figure.canvas.draw()
    rgb = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    with atomic_write(path, "wb") as file:
        file.write(buffer.getvalue())
    return rgb


def _load(file: h5py.File, name: str) -> torch.Tensor:
    return torch.from_numpy(file[name][...])


def run_probe(cfg: DictConfig) -> dict:
    """Cache features, train the block x timestep decoders, write the heat map and the table."""
    from torch.utils.tensorboard import SummaryWriter

    seed_everything(int(cfg.seed))
    out = Path(str(cfg.out))
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    write_json(out / "env.json", environment_record())
    device = resolve_device(str(cfg.device))
    components = components_from_config(cfg.stable_diffusion)
    paths = {split: cache_features(cfg, split, components, out / f"features_{split}.h5", device)
             for split in ("train", "val")}
    timesteps, blocks = [int(t) for t in cfg.timesteps], check_block_numbers(cfg.blocks)
    grid = np.zeros((len(blocks), len(timesteps)))
    writer = SummaryWriter(str(out / "tb"))
    with h5py.File(paths["train"], "r") as train_file, h5py.File(paths["val"], "r") as val_file:
        train_masks, val_masks = _load(train_file, "masks"), _load(val_file, "masks")
        progress = tqdm(total=grid.size, desc="probe decoders", unit="decoder")
        for column, timestep in enumerate(timesteps):
            for row, block in enumerate(blocks):
                name = f"t{timestep}/block{block}"
                ap = train_and_score(_load(train_file, name), train_masks, _load(val_file, name), val_masks,
                                     cfg, device, seed=int(cfg.seed) + 1000 * block + timestep)
                grid[row, column] = ap
                writer.add_scalar(f"probe/ap_block{block:02d}", ap, timestep)
                progress.update(1)
        progress.close()
    heat = save_heat_map(out / "probe_ap.png", grid, blocks, timesteps)
    writer.add_image("probe/ap_heat_map", heat, 0, dataformats="HWC")
    writer.close()
    best_row, best_column = np.unravel_index(int(np.argmax(grid)), grid.shape)
    columns = [f"t={t}" for t in timesteps]
    rows = [{"method": f"block {block}", **{column: float(value) for column, value in zip(columns, grid[row])}}
            for row, block in enumerate(blocks)]
    write_results_table(out / "probe_ap", "Fig 3.4: AP (%) of a small decoder per LDM block and timestep", rows,
                        columns, protocol={"train_samples": int(cfg.train_samples), "val_samples": int(cfg.val_samples),
                                           "image_size": int(cfg.image_size), "mask_size": int(cfg.mask_size)},
                        notes="Paper (Fig 3.4, no numbers printed): blocks 6-10 at t = 300-500 are best.", digits=1)
    result = {"ap": {f"block{block}": dict(zip(columns, grid[row].tolist())) for row, block in enumerate(blocks)},
              "best": {"block": int(blocks[best_row]), "timestep": int(timesteps[best_column]),
                       "ap": float(grid[best_row, best_column])},
              "stable_diffusion": components.record}
    write_json(out / "metrics.json", result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    config, overrides = parse_cli(sys.argv[1:] if argv is None else argv, prog="python -m ldznet.analysis.probe",
                                  description=__doc__, default=DEFAULT_CONFIG)
    result = run_probe(load_config(config, overrides))
    best = result["best"]
    print(f"best: block {best['block']} at t = {best['timestep']} (AP {best['ap']:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
