"""Read the authors' released SharinGAN weights into our networks (Tables 2.1-2.4 with the official files).

The official repository (koutilya-pnvr/SharinGAN) released, as `torch.save(dict)` files in PyTorch 0.4's
legacy (non-zip) format:

- final depth `Depth_Estimator_WI_geom_bicubic_da-144999.pth.tar`: `netG_state_dict` (G), `netT_state_dict`
  (T), `netD0_state_dict` (critic), optimiser states;
- G pretraining `Gen_Resnet_Baseline.pth.tar` (script: `AE_Resnet_Baseline.pth.tar`): `netG_state_dict` (+ optimiser);
- T pretraining `PTNet_baseline-8999_bicubic.pth.tar`: `netT_state_dict` (+ optimiser);
- final faces `Face_Normal_Estimator_da-<i>.pth.tar`: `autoenc_state_dict` (RBDN), `primary_net_state_dict`
  (SfSNet), optimiser states (a face critic, if present, under any name: it is recognised by its keys);
- RBDN pretraining `preg_RBDN-19999.pth.tar`: `autoenc_state_dict` (+ optimiser);
- SfSNet pretraining `net_epoch_r5_5.pth`: a bare SfSNet state dict.

`load_official(path, task)` returns our networks (paper size) with those weights; `import_official` writes them
as a networks checkpoint (`sharingan.checkpoints.save_networks`) that `sharingan.eval`, `sharingan.predict`,
`init.generator=` / `init.task_network=` and the pipeline's `init.official=` accept.

How a file is read:
- `torch.load(weights_only=True, map_location="cpu")`: nothing in the file is executed. Tensors, state dicts
  and optimiser states (dicts, lists, numbers) load; a file that pickles any other object is refused with an
  error naming it. Optimiser states and other non-network entries are skipped and listed in the report.
- `module.` prefixes (DataParallel) are removed.
- Each network entry must hold exactly the official keys of that network (`sharingan/official_keys.json`,
  shapes included): a missing key (truncated file), an unknown key or a wrong shape is an error naming the
  file, the entry and the key. Files from PyTorch 0.4.0 have no BatchNorm `num_batches_tracked` buffers: when
  an entry has none of them they are set to 0 (they do not enter inference; batch norm uses momentum 0.1).
- Keys are mapped by role (`RULES`: official module names -> ours), not by order. Where the official network
  shares one module under several names, the file holds one tensor under each name; those copies must be
  equal (else an error names them) and fill our one parameter:
  * G and T reuse one PReLU module everywhere (`encoder.3`, `*.model.2/5`, `*.nonlinearity`, ...): one slope,
    as in our modules (`activation`).
  * RBDN registers its trunk twice (`conv21`/`bn21` ... `conv61`/`bn61`, `conv_de` and `main_network.*`).
- Entries with unknown names are identified by their keys (the top-level name of the face critic in the
  released files is not documented); an entry that fits no network is an error.

Forward-pass differences between the official modules and ours (none changes a prediction at the official
input sizes 192x640 and 128x128):
- Official G returns [encoder feature, image] and T returns [centre input, 4 depth maps]; ours return the image
  and the 4 depth maps (the extra outputs feed no loss and no evaluation).
- Our critic adds an adaptive average pool before the linear head: the identity at 192x640 (2x5 map).
- Our T pads with replicate instead of reflect only where a map is smaller than the padding (never at
  192x640: the smallest map is 12x40).
- SfSNet's x2 bilinear upsampling: ours uses `align_corners=False`; that the official PyTorch port does the
  same is not verified here (the sources say only "bilinear x2"). If it used `nn.UpsamplingBilinear2d`
  (`align_corners=True`), normals and albedo would differ slightly near the borders of each 2x2 cell.
Input/output conventions (checked by the tests): depth G and T take images in [-1, 1] and T's last output is
the full-resolution tanh map, depth = (y + 1) / 2 · 80 m (`sharingan.losses.depth_from_network`); faces take
[0, 1] images at 128x128 and SfSNet's normals are [0, 1]-encoded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from common.checkpoints import sha256_of_file
from common.config import REPO_ROOT, apply_overrides, load_config
from sharingan.checkpoints import save_networks
from sharingan.models.critic import ImageCritic
from sharingan.models.depth_network import DepthUNet
from sharingan.models.face_critic import FaceCritic
from sharingan.models.generator import ResNetGenerator
from sharingan.models.rbdn import RBDN
from sharingan.models.sfsnet import SfSNet
from sharingan.tasks import load_task

KEYS_FILE = Path(__file__).with_name("official_keys.json")
TASKS = ("depth", "normals")
LISTING_TASK = {"depth": "depth", "normals": "faces"}  # our task name -> section of official_keys.json
NETWORKS = ("generator", "task_network", "critic")
# official listing name of each network, per task
LISTING_NAME = {
    "depth": {"generator": "netG_state_dict", "task_network": "netT_state_dict", "critic": "netD0_state_dict"},
    "normals": {"generator": "autoenc_state_dict", "task_network": "primary_net_state_dict", "critic": "disc"},
}
# top-level entry names of the released files -> our network
KNOWN_ENTRIES = {
    "depth": {"netG_state_dict": "generator", "netT_state_dict": "task_network", "netD0_state_dict": "critic"},
    "normals": {"autoenc_state_dict": "generator", "primary_net_state_dict": "task_network"},
}
# the official networks' settings in our configs (paper sizes); data.size = the official input size
OFFICIAL_MODEL = {
    "depth": {"generator_width": 1.0, "task_width": 1.0, "critic_width": 1.0, "critic_pool_size": [2, 5],
              "critic_batch_norm": True},
    "normals": {"generator": {"width": 1.0, "branches": 3, "trunk_layers": 4}, "critic": {"width": 1.0},
                "task_network": {"width": 1.0, "blocks": 5}},
}
OFFICIAL_SIZE = {"depth": [192, 640], "normals": [128, 128]}
BATCHES_TRACKED = "num_batches_tracked"


# --------------------------------------------------------------------------------------- role mapping
Rule = tuple[str, Callable[[re.Match], str]]


def _g(match: re.Match, name: str) -> str:
    return match.group(name)


def _rbdn_branch(match: re.Match) -> str:
    """Official branch b (1 = outermost, 3 = innermost) -> our nested `branch.inner...` prefix."""
    return "branch." + "inner." * (int(match.group("b")) - 1)


RBDN_PARTS = {"": "entry", "_strided": "down"}

RULES: dict[str, dict[str, list[Rule]]] = {
    "depth": {
        # official _ResGenerator (T2Net): encoder = [pad, conv, BN, PReLU, EncoderBlock, pool, EncoderBlock, pool,
        # 7 width-1 InceptionBlocks]; decoder = [DecoderUpBlock x2, pad, conv, tanh]. Ours splits the seven
        # residual blocks into `bottleneck`; each block's body = [pad, conv, BN, PReLU, pad, conv, BN].
        "generator": [
            (r"encoder\.(?P<i>[123])\.(?P<p>\w+)", lambda m: f"encoder.{_g(m, 'i')}.{_g(m, 'p')}"),
            (r"encoder\.(?P<i>[46])\.model\.(?P<j>\d)\.(?P<p>\w+)",
             lambda m: f"encoder.{_g(m, 'i')}.{_g(m, 'j')}.{_g(m, 'p')}"),
            (r"encoder\.(?P<i>\d+)\.layer0\.1\.(?P<p>\w+)",
             lambda m: f"bottleneck.{int(_g(m, 'i')) - 8}.body.1.{_g(m, 'p')}"),
            (r"encoder\.(?P<i>\d+)\.norm1\.(?P<p>\w+)",
             lambda m: f"bottleneck.{int(_g(m, 'i')) - 8}.body.2.{_g(m, 'p')}"),
            (r"encoder\.(?P<i>\d+)\.nonlinearity\.(?P<p>\w+)",
             lambda m: f"bottleneck.{int(_g(m, 'i')) - 8}.activation.{_g(m, 'p')}"),
            (r"encoder\.(?P<i>\d+)\.branch1x1\.1\.(?P<p>\w+)",
             lambda m: f"bottleneck.{int(_g(m, 'i')) - 8}.body.5.{_g(m, 'p')}"),
            (r"encoder\.(?P<i>\d+)\.norm2\.(?P<p>\w+)",
             lambda m: f"bottleneck.{int(_g(m, 'i')) - 8}.body.6.{_g(m, 'p')}"),
            (r"decoder\.(?P<i>[01])\.model\.(?P<j>\d)\.(?P<p>\w+)",
             lambda m: f"decoder.{_g(m, 'i')}.{_g(m, 'j')}.{_g(m, 'p')}"),
            (r"decoder\.3\.(?P<p>\w+)", lambda m: f"decoder.3.{_g(m, 'p')}"),
        ],
        # official _UNetGenerator: conv1 = [pad, conv, BN, PReLU]; conv2-4 = EncoderBlocks; center = 3 width-3
        # InceptionBlocks (layer0-2 = dilations 1, 3, 5; norm1 after the concat; branch1x1 = the 3x3 fuse conv;
        # norm2) + a DecoderUpBlock; deconv4-2 = DecoderUpBlocks; output4-1 = [pad, conv, tanh].
        "task_network": [
            (r"conv1\.(?P<i>[123])\.(?P<p>\w+)", lambda m: f"conv1.{_g(m, 'i')}.{_g(m, 'p')}"),
            (r"conv(?P<n>[234])\.model\.(?P<j>\d)\.(?P<p>\w+)",
             lambda m: f"conv{_g(m, 'n')}.{_g(m, 'j')}.{_g(m, 'p')}"),
            (r"center\.(?P<i>\d)\.layer(?P<b>\d)\.1\.(?P<p>\w+)",
             lambda m: f"center.{_g(m, 'i')}.branches.{_g(m, 'b')}.1.{_g(m, 'p')}"),
            (r"center\.(?P<i>\d)\.norm1\.(?P<p>\w+)", lambda m: f"center.{_g(m, 'i')}.merge.0.{_g(m, 'p')}"),
            (r"center\.(?P<i>\d)\.nonlinearity\.(?P<p>\w+)", lambda m: f"center.{_g(m, 'i')}.merge.1.{_g(m, 'p')}"),
            (r"center\.(?P<i>\d)\.branch1x1\.1\.(?P<p>\w+)", lambda m: f"center.{_g(m, 'i')}.fuse.1.{_g(m, 'p')}"),
            (r"center\.(?P<i>\d)\.norm2\.(?P<p>\w+)", lambda m: f"center.{_g(m, 'i')}.fuse.2.{_g(m, 'p')}"),
            (r"center\.(?P<i>\d)\.model\.(?P<j>\d)\.(?P<p>\w+)",
             lambda m: f"center.{_g(m, 'i')}.{_g(m, 'j')}.{_g(m, 'p')}"),
            (r"deconv(?P<n>[234])\.model\.(?P<j>\d)\.(?P<p>\w+)",
             lambda m: f"deconv{_g(m, 'n')}.{_g(m, 'j')}.{_g(m, 'p')}"),
            (r"output(?P<n>[1234])\.model\.1\.(?P<p>\w+)", lambda m: f"output{_g(m, 'n')}.1.{_g(m, 'p')}"),
        ],
        # official Discriminator: main = 14 x [conv, BN, ReLU] (indices 0-41), flatten (42), then
        # Linear (43), BN1d (44), ReLU, Linear (46), BN1d (47), ReLU, Linear (49). Ours: features (same indices
        # 0-41), adaptive pool, head = [Linear, BN1d, ReLU, Linear, BN1d, ReLU, Linear] = main.43-49 shifted by 43.
        "critic": [
            (r"main\.(?P<i>\d+)\.(?P<p>\w+)",
             lambda m: (f"features.{_g(m, 'i')}.{_g(m, 'p')}" if int(_g(m, "i")) < 42
                        else f"head.{int(_g(m, 'i')) - 43}.{_g(m, 'p')}")),
        ],
    },
    "normals": {
        # official RBDN_original: bn0 on the input, conv1/bn1 = x_scale1; branch b = conv_bb1 (entry),
        # conv_bb1_strided (down), conv_bb2 (middle: 256->128, 128->128 in the innermost branch 3),
        # unpool_bb (transposed conv up), conv_de_bb1 (exit); trunk conv21-conv61 (+ bn) and conv_de (linear),
        # the same modules registered again as main_network.
        "generator": [
            (r"bn0\.(?P<p>\w+)", lambda m: f"input_norm.{_g(m, 'p')}"),
            (r"conv1\.(?P<p>\w+)", lambda m: f"scale1.0.{_g(m, 'p')}"),
            (r"bn1\.(?P<p>\w+)", lambda m: f"scale1.1.{_g(m, 'p')}"),
            (r"(?P<kind>conv|bn)_b(?P<b>[123])1(?P<s>_strided)?\.(?P<p>\w+)",
             lambda m: (f"{_rbdn_branch(m)}{RBDN_PARTS[m.group('s') or '']}."
                        f"{0 if _g(m, 'kind') == 'conv' else 1}.{_g(m, 'p')}")),
            (r"(?P<kind>conv|bn)_b(?P<b>[123])2\.(?P<p>\w+)",
             lambda m: f"{_rbdn_branch(m)}middle.{0 if _g(m, 'kind') == 'conv' else 1}.{_g(m, 'p')}"),
            (r"unpool_b(?P<b>[123])\.(?P<p>\w+)", lambda m: f"{_rbdn_branch(m)}up.0.{_g(m, 'p')}"),
            (r"bn_unpool_b(?P<b>[123])\.(?P<p>\w+)", lambda m: f"{_rbdn_branch(m)}up.1.{_g(m, 'p')}"),
            (r"(?P<kind>conv|bn)_de_b(?P<b>[123])1\.(?P<p>\w+)",
             lambda m: f"{_rbdn_branch(m)}exit.{0 if _g(m, 'kind') == 'conv' else 1}.{_g(m, 'p')}"),
            (r"(?P<kind>conv|bn)(?P<k>[2-6])1\.(?P<p>\w+)",
             lambda m: f"trunk.{int(_g(m, 'k')) - 2}.{0 if _g(m, 'kind') == 'conv' else 1}.{_g(m, 'p')}"),
            (r"conv_de\.(?P<p>\w+)", lambda m: f"output.{_g(m, 'p')}"),
            (r"main_network\.(?P<i>\d+)\.(?P<p>\w+)",
             lambda m: (f"trunk.{int(_g(m, 'i')) // 3}.{int(_g(m, 'i')) % 3}.{_g(m, 'p')}"
                        if int(_g(m, "i")) < 15 else f"output.{_g(m, 'p')}")),
        ],
        # official sfsnet.py: conv1/conv2 = conv+BN(+ReLU), conv3 strided; n/a = normal/albedo branches with
        # res1-5 (pre-activation blocks: res.0 BN, res.2 conv, res.3 BN, res.5 conv), reso (BN-ReLU), conv1
        # (1x1), conv2 (3x3), out (1x1); lconv + lout = the light branch.
        "task_network": [
            (r"conv1\.conv\.(?P<j>[01])\.(?P<p>\w+)", lambda m: f"stem.{_g(m, 'j')}.{_g(m, 'p')}"),
            (r"conv2\.conv\.(?P<j>[01])\.(?P<p>\w+)", lambda m: f"stem.{int(_g(m, 'j')) + 3}.{_g(m, 'p')}"),
            (r"conv3\.(?P<p>\w+)", lambda m: f"stem.6.{_g(m, 'p')}"),
            (r"(?P<b>[na])res(?P<k>[1-9])\.res\.(?P<j>\d)\.(?P<p>\w+)",
             lambda m: (f"{'normal' if _g(m, 'b') == 'n' else 'albedo'}_branch.residual.{int(_g(m, 'k')) - 1}"
                        f".body.{_g(m, 'j')}.{_g(m, 'p')}")),
            (r"(?P<b>[na])reso\.0\.(?P<p>\w+)",
             lambda m: f"{'normal' if _g(m, 'b') == 'n' else 'albedo'}_branch.post.0.{_g(m, 'p')}"),
            (r"(?P<b>[na])conv1\.conv\.(?P<j>[01])\.(?P<p>\w+)",
             lambda m: f"{'normal' if _g(m, 'b') == 'n' else 'albedo'}_branch.head.{_g(m, 'j')}.{_g(m, 'p')}"),
            (r"(?P<b>[na])conv2\.conv\.(?P<j>[01])\.(?P<p>\w+)",
             lambda m: (f"{'normal' if _g(m, 'b') == 'n' else 'albedo'}_branch.head.{int(_g(m, 'j')) + 3}"
                        f".{_g(m, 'p')}")),
            (r"(?P<b>[na])out\.(?P<p>\w+)",
             lambda m: f"{'normal' if _g(m, 'b') == 'n' else 'albedo'}_branch.head.6.{_g(m, 'p')}"),
            (r"lconv\.conv\.(?P<j>[01])\.(?P<p>\w+)", lambda m: f"light_reduce.{_g(m, 'j')}.{_g(m, 'p')}"),
            (r"lout\.(?P<p>\w+)", lambda m: f"light_fc.{_g(m, 'p')}"),
        ],
        # official disc.py: main = 6 x [conv, ReLU, conv (stride 2), ReLU] (indices 0-23), flatten (24), Linear
        # (25), ReLU, Linear (27), ReLU, Linear (29). Ours: features (same indices), classifier = [Flatten,
        # Linear, ReLU, Linear, ReLU, Linear] = main.24-29 shifted by 24.
        "critic": [
            (r"main\.(?P<i>\d+)\.(?P<p>\w+)",
             lambda m: (f"features.{_g(m, 'i')}.{_g(m, 'p')}" if int(_g(m, "i")) < 24
                        else f"classifier.{int(_g(m, 'i')) - 24}.{_g(m, 'p')}")),
        ],
    },
}


def translate(task: str, network: str, official_key: str) -> str | None:
    """Our state-dict key for one official key (None when no rule applies)."""
    for pattern, build in RULES[_check_task(task)][network]:
        match = re.fullmatch(pattern, official_key)
        if match:
            return build(match)
    return None


def official_listing(task: str) -> dict[str, dict[str, tuple[int, ...]]]:
    """{network: {official key: shape}} for `task`, from the shipped `official_keys.json`."""
    listing = json.loads(KEYS_FILE.read_text())[LISTING_TASK[_check_task(task)]]
    return {network: {key: tuple(shape) for key, shape in listing[name].items()}
            for network, name in LISTING_NAME[task].items()}


def key_map(task: str, network: str) -> dict[str, str]:
    """Every official key of `network` -> our key (raises if an official key has no rule)."""
    mapping = {}
    for key in official_listing(task)[network]:
        ours = translate(task, network, key)
        if ours is None:
            raise KeyError(f"no mapping rule for official {task} {network} key {key!r}")
        mapping[key] = ours
    return mapping


# ------------------------------------------------------------------------------------------ networks
def build_official_networks(task: str) -> dict[str, nn.Module]:
    """Our networks at the official sizes (paper widths; critic for 192x640 / 128x128 inputs)."""
    if _check_task(task) == "depth":
        return {"generator": ResNetGenerator(), "task_network": DepthUNet(), "critic": ImageCritic()}
    return {"generator": RBDN(), "task_network": SfSNet(), "critic": FaceCritic(image_size=128)}


def _check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown SharinGAN task {task!r} for official weights (expected one of {TASKS})")
    return task


# ------------------------------------------------------------------------------------------ reading
@dataclass
class OfficialImport:
    """What `read_official` found: our networks with the official weights, and a report of the file."""

    networks: dict[str, nn.Module]
    report: dict[str, Any] = field(default_factory=dict)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(torch.is_tensor(v) for v in value.values())


def _strip_module(state: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Remove DataParallel's `module.` prefix (on every key that has it)."""
    stripped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise ValueError(f"{where}: state-dict key {key!r} is not a string")
        name = key[len("module."):] if key.startswith("module.") else key
        if name in stripped:
            raise ValueError(f"{where}: key {key!r} collides with {name!r} once the 'module.' prefix is removed")
        stripped[name] = value
    return stripped


def _identify(task: str, state: Mapping[str, torch.Tensor], where: str) -> str:
    """The network whose official key set shares the most keys with `state` (an entry of unknown name)."""
    listing = official_listing(task)
    overlap = {network: len(set(state) & set(keys)) for network, keys in listing.items()}
    best = max(overlap, key=overlap.get)
    if overlap[best] < max(1, len(state) // 2):
        raise ValueError(f"{where} is not a state dict of any official {task} network (its first keys: "
                         f"{list(state)[:4]}; expected e.g. {', '.join(next(iter(k)) for k in listing.values())})")
    return best


def convert_state_dict(task: str, network: str, state: Mapping[str, torch.Tensor], module: nn.Module,
                       where: str) -> dict[str, Any]:
    """Load one official state dict (prefix-free) into our `module`, every key and shape checked.

    Returns a small report. Raises ValueError naming `where` and the key at fault.
    """
    expected = official_listing(task)[network]
    has_counters = any(key.endswith(BATCHES_TRACKED) for key in state)
    if not has_counters:
        expected = {key: shape for key, shape in expected.items() if not key.endswith(BATCHES_TRACKED)}
    missing = [key for key in expected if key not in state]
    if missing:
        raise ValueError(f"{where} lacks {len(missing)} official {network} key(s), e.g. {missing[:3]} "
                         f"(truncated or not an official file)")
    unknown = [key for key in state if key not in expected]
    if unknown:
        raise ValueError(f"{where} has {len(unknown)} key(s) that the official {network} does not have, e.g. "
                         f"{unknown[:3]}")
    ours = module.state_dict(keep_vars=True)
    owner = {name: id(tensor) for name, tensor in ours.items()}  # aliases (shared modules) share an id
    filled: dict[int, tuple[str, torch.Tensor]] = {}
    for key, value in state.items():
        if tuple(value.shape) != expected[key]:
            raise ValueError(f"{where}: key {key!r} has shape {list(value.shape)}, the official {network} has "
                             f"{list(expected[key])}")
        target = translate(task, network, key)
        if target is None or target not in ours:
            raise ValueError(f"{where}: official key {key!r} has no counterpart in our {network} "
                             f"(mapped to {target!r})")
        if tuple(ours[target].shape) != tuple(value.shape):
            raise ValueError(f"{where}: key {key!r} {list(value.shape)} does not fit our {network}.{target} "
                             f"{list(ours[target].shape)}")
        group = owner[target]
        if group in filled:
            first, tensor = filled[group]
            if not torch.equal(tensor, value):
                raise ValueError(f"{where}: keys {first!r} and {key!r} are one shared tensor of the official "
                                 f"{network} but hold different values")
            continue
        filled[group] = (key, value)
    converted: dict[str, torch.Tensor] = {}
    counters_filled = 0
    for name, tensor in ours.items():
        if owner[name] in filled:
            converted[name] = filled[owner[name]][1].to(tensor.dtype)
        elif name.endswith(BATCHES_TRACKED) and not has_counters:
            converted[name] = torch.zeros_like(tensor)
            counters_filled += 1
        else:
            raise ValueError(f"{where}: nothing in the file fills our {network}.{name}")
    module.load_state_dict(converted, strict=True)
    return {"keys": len(state), "parameters": sum(p.numel() for p in module.parameters()),
            "num_batches_tracked_set_to_zero": counters_filled}


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the file name and what to do
        raise ValueError(f"cannot read {path} safely with torch.load(weights_only=True) (truncated, not a PyTorch "
                         f"file, or it pickles objects other than tensors, state dicts and optimiser states; "
                         f"nothing was executed): {error}") from error


def read_official(path: str | Path, task: str, modules: Mapping[str, nn.Module] | None = None) -> OfficialImport:
    """Read an official file of `task` ("depth" or "normals") into our networks; see the module docstring.

    `modules`: our networks to fill (default: `build_official_networks(task)`).
    """
    path = Path(path)
    _check_task(task)
    payload = _load_file(path)
    if not isinstance(payload, Mapping):
        raise ValueError(f"{path}: expected a dict of state dicts, found {type(payload).__name__}")
    entries: dict[str, tuple[str, dict[str, torch.Tensor]]] = {}  # network -> (entry, state)
    skipped: dict[str, str] = {}
    if _is_state_dict(payload):  # a bare state dict (e.g. net_epoch_r5_5.pth)
        state = _strip_module(payload, f"{path}")
        entries[_identify(task, state, f"{path}")] = ("<state dict>", state)
    else:
        for name, value in payload.items():
            where = f"{path} [{name!r}]"
            network = KNOWN_ENTRIES[task].get(name)
            if network is None and _is_state_dict(value):
                network = _identify(task, _strip_module(value, where), where)
            if network is None:
                skipped[str(name)] = ("optimiser state" if isinstance(value, Mapping) and "param_groups" in value
                                      else type(value).__name__)
                continue
            if not _is_state_dict(value):
                raise ValueError(f"{where} should hold the {network} state dict, found {type(value).__name__}")
            if network in entries:
                raise ValueError(f"{path}: entries {entries[network][0]!r} and {name!r} both hold a {network}")
            entries[network] = (str(name), _strip_module(value, where))
    if not entries:
        raise ValueError(f"{path} holds no state dict of an official {task} network (entries: {list(payload)})")
    modules = modules if modules is not None else build_official_networks(task)
    networks, report = {}, {"file": str(path), "task": task, "networks": {}, "skipped": skipped}
    for network in NETWORKS:
        if network not in entries:
            continue
        name, state = entries[network]
        where = f"{path} [{name!r}]" if name != "<state dict>" else str(path)
        details = convert_state_dict(task, network, state, modules[network], where)
        report["networks"][network] = {"entry": name, **details}
        networks[network] = modules[network].eval()
    return OfficialImport(networks, report)


def load_official(path: str | Path, task: str) -> dict[str, nn.Module]:
    """Our networks ("generator", "task_network", "critic": those the file holds) with the official weights."""
    return read_official(path, task).networks


# ------------------------------------------------------------------------------------------ writing
OFFICIAL_ROW_NAMES = {  # eval.row_name of an imported checkpoint, by the networks it holds
    ("depth", True): "SharinGAN (authors' released weights)",
    ("depth", False): "All synthetic (authors' pretrained T)",
    ("normals", True): "SharinGAN (authors' released weights)",
    ("normals", False): "SfSNet (authors' pretrained weights)",
}


def official_config(task: str, cfg: DictConfig | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The config stored with imported networks: `cfg` (default: the task's pipeline config with `overrides`)
    with the official networks' sizes (`OFFICIAL_MODEL`), no pipeline block and experiment `<task>_official`."""

    if cfg is None:
        cfg = load_config(REPO_ROOT / load_task(task).PIPELINE_CONFIG, list(overrides))
    else:
        cfg = apply_overrides(cfg.copy(), list(overrides))
    if str(cfg.task) != task:
        raise ValueError(f"config is for task {cfg.task!r}, not {task!r}")
    cfg = OmegaConf.merge(cfg, {"model": OFFICIAL_MODEL[task], "experiment": f"{task}_official"})
    cfg.pop("pipeline", None)
    size = [int(v) for v in cfg.data.size]
    if size != OFFICIAL_SIZE[task]:
        print(f"[official] note: data.size is {size}; the official {task} networks were trained at "
              f"{OFFICIAL_SIZE[task]}")
    return cfg


def import_official(path: str | Path, task: str, out: str | Path, cfg: DictConfig | None = None,
                    overrides: Sequence[str] = ()) -> tuple[Path, dict[str, Any]]:
    """Convert an official file into a networks checkpoint at `out` (atomic); returns (out, report)."""

    cfg = official_config(task, cfg, overrides)
    built = load_task(task).build_networks(cfg)  # the stored config must rebuild exactly these networks
    try:
        imported = read_official(path, task, built)
    except ValueError as error:
        if task == "normals" and "critic" in str(error) and [int(v) for v in cfg.data.size] != [128, 128]:
            raise ValueError(f"{error} (the official face critic takes 128x128 inputs: set data.size=[128,128])"
                             ) from error
        raise
    cfg.eval.row_name = OFFICIAL_ROW_NAMES[(task, {"generator", "task_network"} <= set(imported.networks))]
    report = {**imported.report, "sha256": sha256_of_file(path), "row_name": str(cfg.eval.row_name)}
    save_networks(out, cfg, imported.networks, stage="official", extra={"official": report})
    return Path(out), report


def describe(report: Mapping[str, Any]) -> str:
    """One line per network and per skipped entry, for the command line."""
    lines = [f"{report['file']} ({report['task']}):"]
    for network, details in report["networks"].items():
        counters = details["num_batches_tracked_set_to_zero"]
        lines.append(f"  {network:<12} <- {details['entry']}: {details['keys']} keys, {details['parameters']:,} "
                     f"parameters" + (f", {counters} num_batches_tracked absent (set to 0)" if counters else ""))
    for entry, kind in report["skipped"].items():
        lines.append(f"  skipped {entry!r} ({kind})")
    return "\n".join(lines)
