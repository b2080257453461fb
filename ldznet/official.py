"""Read the authors' released LD-ZNet checkpoint (`LDZNet_txt2mask.ckpt`) into our LD-ZNet (Tables 3.1-3.3).

The released file is a PyTorch Lightning checkpoint of the CompVis-style `LatentSeg` model. Its `state_dict`
holds the segmentation UNet as `model.diffusion_model.<key>` (760 keys, 925,882,936 values, the same count as
our trainable LD-ZNet) and its EMA copy as `model_ema.diffusion_model<key with every "." removed>`; it may also
hold the frozen parts (`first_stage_model.*` VAE, `cond_stage_model.transformer.*` CLIP text encoder,
`sd_features_stage_model.model.*` the frozen Stable Diffusion). `ldznet/official_keys.json` lists every
official UNet key with its shape.

`load_official` builds our LD-ZNet with the checkpoint's segmentation UNet (EMA weights by default: the
official inference predicts inside `ema_scope()`) and the frozen parts from a Stable Diffusion copy given by
path (or, with `frozen_from_checkpoint=True`, from the checkpoint itself). `import_official` also writes a
`segmenter.pt` that `ldznet.eval` and `ldznet.predict` read (CLI: `python -m ldznet.import_official`).

Key mapping (CompVis name -> ours), one rule per part, checked to be a bijection with equal shapes:

    time_embed.{0,2}                       unet.time_embedding.linear_{1,2}
    input_blocks.0.0                       unet.conv_in
    input_blocks.{3l+j+1}.0 / .1           unet.down_blocks.l.resnets.j / .attentions.j
    input_blocks.{3l+3}.0.op               unet.down_blocks.l.downsamplers.0.conv
    middle_block.{0,1,2}                   unet.mid_block.resnets.0 / attentions.0 / resnets.1
    output_blocks.{3l+j}.0 / .1            unet.up_blocks.l.resnets.j / .attentions.j
    output_blocks.{3l+2}.{1|2}.conv        unet.up_blocks.l.upsamplers.0.conv
    out.{0,2}, final.i                     unet.conv_norm_out, unet.conv_out, head.layers.i
    ResBlock in_layers.{0,2}, emb_layers.1, out_layers.{0,3}, skip_connection
                                           norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut
    in the five LD-ZNet transformers (blocks 6-10: input_blocks.8.1, middle_block.1, output_blocks.{3,4,5}.1):
    transformer_blocks.0.{attn1,attn2,ff,norm1,norm2,norm3}   transformer_blocks.0.block.<same>
    transformer_blocks.0.attn3 / norm_sd                      transformer_blocks.0.ldm_attention / ldm_norm
    attentionpool2D.positional_embedding (C, T)               attention_pools.<n>.positional_embedding (T, C)
    attentionpool2D.qkv_proj / c_proj (Conv1d, k=1)           attention_pools.<n>.qkv / out_projection (Linear)

Conventions of the official forward pass and where ours differs (docs/ref-ldznet.md §1-2, docs/chapter3-models.md):
- Same: ZNet's UNet at timestep 0 on the un-noised latent; z = 0.18215 x a posterior sample; the frozen LDM
  conditioned on the same CLIP text states; features after spatial-attention modules 6-10; the attention pool
  (mean token + positional embedding, bicubic resize at other sizes, QKVAttention with the q/k/v split before
  the heads, i.e. the same head layout as ours) returning all h*w+1 tokens; the extra cross-attention between
  the text cross-attention and the feed-forward; the 55-weight head.
- Differs: (1) the official inference draws the frozen LDM's timestep uniformly in [300, 500) with fresh
  noise and an unseeded VAE posterior draw at every call; ours evaluates at a fixed t = 400 with seeded noise
  and a seeded posterior draw (repeatable; `model.ldm.eval_timestep`, `model.eval_seed`), so single
  predictions differ slightly from the official script's. (2) The official script wraps each prompt in one of
  nine CLIPSeg templates drawn at random; `ldznet.eval` uses the raw phrase by default (`--prompt-mode
  template` for a fixed template). (3) The official frozen LDM is the non-EMA UNet of `sd-v1-4-full-ema.ckpt`;
  a diffusers SD v1.4 folder holds (we believe) the EMA export: give the original `.ckpt` (with
  `--tokenizer`) or use `frozen_from_checkpoint` to match the authors exactly. (4) The official code
  computes GroupNorm in float32 under fp16; irrelevant in float32.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import pickle
import re
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.checkpoints import load_torch_mapped
from common.safe_pickle import UnsafePickleError
from ldznet.config import model_defaults
from ldznet.models import build_segmenter, model_options

log = logging.getLogger(__name__)

OFFICIAL_KEYS_FILE = Path(__file__).with_name("official_keys.json")
UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema.diffusion_model"
EMA_BOOKKEEPING = ("model_ema.num_updates", "model_ema.decay")
FROZEN_PREFIXES = {
    "vae": ("first_stage_model.",),
    "text_encoder": ("cond_stage_model.transformer.",),
    # the frozen SD LatentDiffusion of the LDM features: its own keys are model.diffusion_model.*
    "unet": ("sd_features_stage_model.model.model.diffusion_model.", "sd_features_stage_model.model.diffusion_model."),
}
WEIGHTS = ("ema", "raw")
LATENT_PER_POOL_SIDE = 4 * 8  # blocks 6, 8-10 sit at latent / 4; the VAE downsamples by 8


def official_keys() -> dict[str, list[int]]:
    """Every key of the official segmentation UNet (without `model.diffusion_model.`) with its shape."""
    return json.loads(OFFICIAL_KEYS_FILE.read_text())


def ema_key(official_key: str) -> str:
    """Name of the EMA copy of a UNet key (LitEma drops every "." of `diffusion_model.<key>`)."""
    return EMA_PREFIX + official_key.replace(".", "")


# --- our parameter names -> official names ------------------------------------------------------------------

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_POOL = {"positional_embedding": "positional_embedding", "qkv": "qkv_proj", "out_projection": "c_proj"}


def _resnet(rest: str, name: str) -> str:
    part, _, tail = rest.partition(".")
    if part not in _RESNET:
        raise KeyError(f"{name}: unknown ResBlock part {part!r}")
    return f"{_RESNET[part]}.{tail}"


def _transformer(rest: str) -> str:
    """Inside a spatial transformer: undo our LD-ZNet wrapper (`block.`) and rename the extra layers."""
    rest = re.sub(r"^(transformer_blocks\.\d+)\.block\.", r"\1.", rest)
    rest = re.sub(r"^(transformer_blocks\.\d+)\.ldm_attention\.", r"\1.attn3.", rest)
    return re.sub(r"^(transformer_blocks\.\d+)\.ldm_norm\.", r"\1.norm_sd.", rest)


def unet_module_to_official(module: str, layers_per_block: int = 2) -> str:
    """diffusers module path of the UNet (e.g. `down_blocks.2.attentions.1`) -> CompVis path (`input_blocks.8.1`)."""
    stride = layers_per_block + 1
    if match := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)", module):
        return f"input_blocks.{int(match[1]) * stride + int(match[3]) + 1}.{0 if match[2] == 'resnets' else 1}"
    if match := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)", module):
        return f"middle_block.{2 * int(match[2]) if match[1] == 'resnets' else 1}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)", module):
        return f"output_blocks.{int(match[1]) * stride + int(match[3])}.{0 if match[2] == 'resnets' else 1}"
    raise KeyError(f"no CompVis name for UNet module {module!r}")


def official_name(name: str, pool_modules: Mapping[str, str], has_attention: Mapping[int, bool],
                  layers_per_block: int = 2) -> str:
    """Our trainable parameter name -> the official UNet key (without `model.diffusion_model.`).

    `pool_modules`: attention-pool number -> diffusers module of its transformer; `has_attention`: up level ->
    whether it has spatial transformers (decides the index of the upsampler inside the output block).
    """
    stride = layers_per_block + 1
    if match := re.fullmatch(r"attention_pools\.(\d+)\.(\w+)((?:\.weight|\.bias)?)", name):
        if match[1] not in pool_modules or match[2] not in _POOL:
            raise KeyError(f"{name}: unknown attention pool parameter")
        module = unet_module_to_official(pool_modules[match[1]], layers_per_block)
        return f"{module}.attentionpool2D.{_POOL[match[2]]}{match[3]}"
    if match := re.fullmatch(r"head\.layers\.(\d+)\.(weight|bias)", name):
        return f"final.{match[1]}.{match[2]}"
    if not name.startswith("unet."):
        raise KeyError(f"{name}: not part of the segmentation UNet")
    key = name[len("unet."):]
    plain = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
             "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}
    for ours, theirs in plain.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    if match := re.fullmatch(r"((?:down_blocks|up_blocks)\.\d+|mid_block)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        module = unet_module_to_official(f"{match[1]}.{match[2]}.{match[3]}", layers_per_block)
        rest = _resnet(match[4], name) if match[2] == "resnets" else _transformer(match[4])
        return f"{module}.{rest}"
    if match := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(match[1]) + 1) * stride}.0.op.{match[2]}"
    if match := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        level = int(match[1])
        return f"output_blocks.{level * stride + stride - 1}.{2 if has_attention[level] else 1}.conv.{match[2]}"
    raise KeyError(f"{name}: no official name")


@dataclass(frozen=True)
class KeyMapping:
    """One official UNet tensor and the parameter of ours it lands on."""

    official: str
    ours: str
    official_shape: tuple[int, ...]
    our_shape: tuple[int, ...]
    transform: str  # "identity" | "transpose" (pool positional embedding) | "squeeze_kernel" (Conv1d k=1 -> Linear)

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.transform == "transpose":
            return tensor.t()
        if self.transform == "squeeze_kernel":
            return tensor.squeeze(-1)
        return tensor


def _official_shape(name: str, shape: tuple[int, ...]) -> tuple[tuple[int, ...], str]:
    if name.endswith(".positional_embedding"):
        return (shape[1], shape[0]), "transpose"
    if name.startswith("attention_pools.") and name.endswith(".weight"):
        return (*shape, 1), "squeeze_kernel"
    return shape, "identity"


def key_mapping(model: nn.Module) -> dict[str, KeyMapping]:
    """{official key: KeyMapping} for every trainable parameter of our LD-ZNet; raises unless a bijection."""
    if getattr(model, "variant", None) != "ldznet":
        raise ValueError(f"the official checkpoint is an LD-ZNet (cross-attention); got a "
                         f"{getattr(model, 'variant', type(model).__name__)!r} model")
    layers_per_block = int(model.unet.config.layers_per_block)
    pool_modules = {str(number): model.ldm_features.layout[number].name for number in model.ldm_features.blocks}
    has_attention = {level: bool(getattr(block, "attentions", None))
                     for level, block in enumerate(model.unet.up_blocks)}
    mapping: dict[str, KeyMapping] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        official = official_name(name, pool_modules, has_attention, layers_per_block)
        shape, transform = _official_shape(name, tuple(parameter.shape))
        if official in mapping:
            raise ValueError(f"{name} and {mapping[official].ours} both map to official key {official!r}")
        mapping[official] = KeyMapping(official, name, shape, tuple(parameter.shape), transform)
    emas = collections.Counter(ema_key(key) for key in mapping)
    clashes = [key for key, count in emas.items() if count > 1]
    if clashes:
        raise ValueError(f"EMA names are ambiguous for {clashes[:3]}")
    return mapping


# --- reading the checkpoint without executing anything -----------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class SkippedObject:
    """Stands in for any non-tensor object the pickle names (hyper-parameters, callbacks, ...).

    The class the pickle asks for is never imported or called: this placeholder only records its name and
    swallows the arguments and state the pickle hands it.
    """

    qualified_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass

    def __repr__(self) -> str:
        return f"<skipped {self.qualified_name}>"


@dataclass
class _StorageType:
    dtype: torch.dtype


@dataclass
class _LazyStorage:
    archive: zipfile.ZipFile
    member: str
    dtype: torch.dtype
    path: Path


@dataclass
class LazyTensor:
    """A tensor of a checkpoint read by the restricted reader; its bytes are read only by `materialize()`."""

    storage: _LazyStorage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> torch.dtype:
        return self.storage.dtype

    def materialize(self) -> torch.Tensor:
        try:
            data = bytearray(self.storage.archive.read(self.storage.member))
        except (zipfile.BadZipFile, OSError, EOFError, KeyError) as error:
            raise ValueError(f"{self.storage.path}: cannot read tensor data {self.storage.member}: {error}") from error
        flat = torch.frombuffer(data, dtype=self.dtype) if data else torch.empty(0, dtype=self.dtype)
        needed = self.offset + sum((size - 1) * step for size, step in zip(self.shape, self.stride)) + 1
        if math.prod(self.shape) and needed > flat.numel():
            raise ValueError(f"{self.storage.path}: tensor data {self.storage.member} is truncated "
                             f"({flat.numel()} values, {needed} needed)")
        return torch.as_strided(flat, self.shape, self.stride, self.offset).clone()


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    if not isinstance(storage, _LazyStorage):
        raise UnsafePickleError(f"tensor rebuilt from {type(storage).__name__}, not a storage of the file")
    return LazyTensor(storage, int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


def _rebuild_parameter(data, *_ignored):
    return data


def _rebuild_from_type(function, _new_type, arguments, _state):
    if function not in (_rebuild_tensor, _rebuild_parameter):
        raise UnsafePickleError("tensor subclass rebuilt by an unknown function")
    return function(*arguments)


def _encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("_codecs.encode called with unexpected arguments")
    return text.encode("latin1")


class _Marker:
    """torch.Tensor / Parameter named as a type in a pickle (never instantiated)."""


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _encode,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Tensor"): _Marker,
    ("torch.nn.parameter", "Parameter"): _Marker,
}


# plain value types (no side effects when called); protocol-2 pickles name their module by its Python 2 name
_PLAIN_TYPES = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "int": int,
                "long": int, "float": float, "bool": bool}
_ALLOWED.update({(module, name): value for module in ("builtins", "__builtin__")
                 for name, value in _PLAIN_TYPES.items()})


class _CheckpointUnpickler(pickle.Unpickler):
    """Tensors become `LazyTensor`s; every other global becomes an inert `SkippedObject` subclass."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path
        self.skipped: set[str] = set()

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        qualified = f"{module}.{name}"
        self.skipped.add(qualified)
        return type(f"Skipped[{qualified}]", (SkippedObject,), {"qualified_name": qualified})

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafePickleError(f"{self.path}: unexpected persistent id {str(pid)[:80]}")
        member = f"{self.prefix}data/{pid[2]}"
        return _LazyStorage(self.archive, member, pid[1].dtype, self.path)


@dataclass
class CheckpointContents:
    """The unpickled top level of a checkpoint and how it was read."""

    top: Any
    reader: str  # "weights_only" or "restricted"
    skipped: list[str] = field(default_factory=list)


def read_checkpoint(path: str | Path) -> CheckpointContents:
    """Read a checkpoint without executing anything from it.

    First `torch.load(weights_only=True, mmap=True)`. Lightning checkpoints may also pickle other objects
    (hyper-parameters, callback states), which that refuses; then the zip archive is read with a restricted
    unpickler: tensors become `LazyTensor`s (read on demand), any other class or function named by the pickle
    becomes an inert `SkippedObject` (never imported, never called), and their names are reported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LD-ZNet checkpoint not found: {path}")
    try:
        return CheckpointContents(load_torch_mapped(path), "weights_only")
    except pickle.UnpicklingError as error:
        refusal = error
    except Exception as error:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{path}: cannot read the checkpoint (truncated or not a PyTorch file?): {error}") from error
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: torch.load(weights_only=True) refused it ({str(refusal)[:200]}) and it is not a "
                         "zip-format PyTorch checkpoint that the restricted reader could read")
    try:
        archive = zipfile.ZipFile(path)
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path}: expected one */data.pkl in the archive, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).decode() != "little":
            raise ValueError(f"{path}: big-endian checkpoints are not supported")
        with archive.open(pickles[0]) as file:
            unpickler = _CheckpointUnpickler(file, archive, prefix, path)
            top = unpickler.load()
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}") from error
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OSError) as error:
        raise ValueError(f"{path}: cannot read the checkpoint: {type(error).__name__}: {error}") from error
    skipped = sorted(unpickler.skipped)
    if skipped:
        log.warning("%s: skipped %d kind(s) of non-tensor object without running them: %s", path, len(skipped),
                    ", ".join(skipped))
    return CheckpointContents(top, "restricted", skipped)


def materialize(value, key: str, path: Path) -> torch.Tensor:
    if isinstance(value, LazyTensor):
        return value.materialize()
    if isinstance(value, torch.Tensor):
        return value
    raise ValueError(f"{path}: {key} is a {type(value).__name__}, not a tensor")


def _shape(value, key: str, path: Path) -> tuple[int, ...]:
    if isinstance(value, (LazyTensor, torch.Tensor)):
        return tuple(value.shape)
    raise ValueError(f"{path}: {key} is a {type(value).__name__}, not a tensor")


def checkpoint_state_dict(contents: CheckpointContents, path: Path) -> dict[str, Any]:
    """The flat state dict: a Lightning checkpoint's `state_dict`, or the file itself if it is one."""
    top = contents.top
    if isinstance(top, Mapping) and isinstance(top.get("state_dict"), Mapping):
        return dict(top["state_dict"])
    if isinstance(top, Mapping) and any(str(key).startswith(UNET_PREFIX) for key in top):
        return dict(top)
    keys = ", ".join(sorted(map(str, top))[:10]) if isinstance(top, Mapping) else type(top).__name__
    raise ValueError(f"{path}: not an LD-ZNet checkpoint: no 'state_dict' and no {UNET_PREFIX}* keys (found {keys})")


# --- checking and loading the segmentation UNet -------------------------------------------------------------

def _check_copy(state: Mapping[str, Any], mapping: Mapping[str, KeyMapping], name_of, label: str, path: Path) -> None:
    """Every expected key present with its shape, nothing else in that copy; errors name the keys."""
    expected = {name_of(key): entry for key, entry in mapping.items()}
    present = {key for key in state if key in expected}
    missing = sorted(set(expected) - present)
    if missing:
        raise ValueError(f"{path}: the {label} copy of the segmentation UNet lacks {len(missing)} key(s), e.g. "
                         f"{missing[:5]} (truncated, or not the released LD-ZNet?)")
    prefix = UNET_PREFIX if label == "raw" else EMA_PREFIX
    unexpected = sorted(key for key in state if key.startswith(prefix) and key not in expected
                        and key not in EMA_BOOKKEEPING)
    if unexpected:
        raise ValueError(f"{path}: {len(unexpected)} {label} key(s) have no place in our LD-ZNet, e.g. "
                         f"{unexpected[:5]}")
    for key, entry in expected.items():
        shape = _shape(state[key], key, path)
        if shape != entry.official_shape:
            raise ValueError(f"{path}: {key} has shape {list(shape)}, expected {list(entry.official_shape)} "
                             f"(our {entry.ours})")


def _raw_name(key: str) -> str:
    return UNET_PREFIX + key


def check_segmentation_unet(state: Mapping[str, Any], mapping: Mapping[str, KeyMapping], weights: str,
                            path: Path) -> None:
    """Check the chosen copy (and the other one when the file has it) against our LD-ZNet."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    has_raw = any(key.startswith(UNET_PREFIX) for key in state)
    has_ema = any(key.startswith(EMA_PREFIX) for key in state)
    if weights == "ema" and not has_ema:
        raise ValueError(f"{path}: no EMA copy ({EMA_PREFIX}*) in the checkpoint; use --weights raw")
    if weights == "raw" and not has_raw:
        raise ValueError(f"{path}: no {UNET_PREFIX}* keys in the checkpoint; use --weights ema")
    if has_raw:
        _check_copy(state, mapping, _raw_name, "raw", path)
    if has_ema:
        _check_copy(state, mapping, ema_key, "ema", path)


@torch.no_grad()
def load_segmentation_unet(model: nn.Module, state: Mapping[str, Any], mapping: Mapping[str, KeyMapping],
                           weights: str, path: Path) -> None:
    """Copy the chosen official copy into our parameters, one tensor at a time."""
    check_segmentation_unet(state, mapping, weights, path)
    parameters = dict(model.named_parameters())
    name_of = ema_key if weights == "ema" else _raw_name
    for key, entry in mapping.items():
        value = entry.apply(materialize(state[name_of(key)], name_of(key), path))
        if not value.is_floating_point():
            raise ValueError(f"{path}: {name_of(key)} has dtype {value.dtype}, expected floating point")
        parameters[entry.ours].copy_(value.to(parameters[entry.ours].dtype))


def image_size_of(state: Mapping[str, Any], path: Path) -> int:
    """The image size the attention pools were built for, from the block-6 pool (the only one on the input side):
    12 x 12 + 1 = 145 tokens -> 384 in the release."""
    pattern = re.compile(r"^(?:model\.diffusion_model\.input_blocks\.\d+\.\d+\.attentionpool2D\.positional_embedding|"
                         r"model_ema\.diffusion_modelinput_blocks\d+attentionpool2Dpositional_embedding)$")
    keys = sorted(key for key in state if pattern.match(str(key)))
    if not keys:
        raise ValueError(f"{path}: no attention pool on the input side (input_blocks.*.1.attentionpool2D."
                         "positional_embedding): not an LD-ZNet checkpoint?")
    tokens = {_shape(state[key], key, path)[-1] for key in keys}
    if len(tokens) != 1:
        raise ValueError(f"{path}: the input-side attention pools disagree in size: {keys}")
    count = tokens.pop()
    side = math.isqrt(max(count - 1, 0))
    if side < 1 or side * side + 1 != count:
        raise ValueError(f"{path}: {keys[0]} has {count} tokens, not side^2 + 1")
    return side * LATENT_PER_POOL_SIDE


# --- the frozen parts ---------------------------------------------------------------------------------------

_SD_PREFIX = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
              "text_encoder": "cond_stage_model.transformer."}


def frozen_state_dict(state: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's frozen parts renamed as one original SD checkpoint (`model.diffusion_model.*`,
    `first_stage_model.*`, `cond_stage_model.transformer.*`); raises naming the part that is absent."""
    renamed: dict[str, torch.Tensor] = {}
    for part, prefixes in FROZEN_PREFIXES.items():
        found = [prefix for prefix in prefixes if any(str(key).startswith(prefix) for key in state)]
        if not found:
            raise ValueError(f"{path}: the checkpoint holds no {part} weights ({' or '.join(prefixes)}*); give a "
                             "Stable Diffusion copy instead (--stable-diffusion) of --frozen-from-checkpoint")
        for key, value in state.items():
            if str(key).startswith(found[0]):
                renamed[_SD_PREFIX[part] + key[len(found[0]):]] = materialize(value, key, path)
    return renamed


def components_from_checkpoint(state: Mapping[str, Any], path: Path, tokenizer_path: str | Path,
                               architecture: str | Path | Mapping = "sd"):
    """VAE, CLIP text encoder and frozen LDM UNet from the LD-ZNet checkpoint itself (tokenizer from a folder)."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    from ldznet.stable_diffusion import _load_converted, architecture_for, build_random_components, load_tokenizer

    tokenizer = load_tokenizer(tokenizer_path)
    architecture = architecture_for(architecture)
    original = frozen_state_dict(state, path)
    components = build_random_components(architecture, tokenizer)
    with torch.no_grad():
        _load_converted(components.unet, convert_ldm_unet_checkpoint(original, architecture["unet"]),
                        "frozen LDM UNet (sd_features_stage_model)", path)
        _load_converted(components.vae, convert_ldm_vae_checkpoint(original, architecture["vae"]),
                        "VAE (first_stage_model)", path)
        _load_converted(components.text_encoder, convert_ldm_clip_checkpoint(original),
                        "text encoder (cond_stage_model)", path, ignorable=("position_ids",))
    for module in (components.unet, components.vae, components.text_encoder):
        module.eval()
    components.record = {"path": str(path.resolve()), "format": "ldznet_checkpoint_frozen_parts",
                         "tokenizer_path": str(Path(tokenizer_path).resolve())}
    return components


def _tokenizer_folder(stable_diffusion: str | Path | None, tokenizer_path: str | Path | None) -> Path:
    if tokenizer_path is not None:
        return Path(tokenizer_path)
    if stable_diffusion is not None and (Path(stable_diffusion) / "tokenizer").is_dir():
        return Path(stable_diffusion) / "tokenizer"
    raise ValueError("the checkpoint holds no tokenizer: give --tokenizer (a folder with CLIP's vocab.json and "
                     "merges.txt) or --stable-diffusion pointing at a diffusers folder with tokenizer/")


# --- building the model -------------------------------------------------------------------------------------

def _read_state(checkpoint: str | Path) -> tuple[dict[str, Any], CheckpointContents, Path]:
    path = Path(checkpoint)
    contents = read_checkpoint(path)
    return checkpoint_state_dict(contents, path), contents, path


def _stable_diffusion_node(stable_diffusion, tokenizer_path, architecture) -> dict[str, Any]:
    node: dict[str, Any] = {"path": str(Path(stable_diffusion).resolve())}
    if tokenizer_path is not None:
        node["tokenizer_path"] = str(Path(tokenizer_path).resolve())
    if not (isinstance(architecture, str) and architecture == "sd"):
        node["architecture"] = dict(architecture) if isinstance(architecture, Mapping) else str(architecture)
    return node


def _build_and_load(state: Mapping[str, Any], contents: CheckpointContents, path: Path, components,
                    stable_diffusion_node: Mapping[str, Any], weights: str) -> nn.Module:
    image_size = image_size_of(state, path)
    # base.yaml's model options, with the released checkpoint's image size; no gradient checkpointing (inference)
    options = model_defaults(variant="ldznet", image_size=image_size, gradient_checkpointing=False,
                             stable_diffusion=dict(stable_diffusion_node))
    model = build_segmenter(options, components)
    mapping = key_mapping(model)
    load_segmentation_unet(model, state, mapping, weights, path)
    top = contents.top if isinstance(contents.top, Mapping) else {}
    known = (UNET_PREFIX, EMA_PREFIX, *EMA_BOOKKEEPING, *(p for ps in FROZEN_PREFIXES.values() for p in ps),
             "first_stage_model.", "cond_stage_model.", "sd_features_stage_model.")
    ignored = sorted({str(key).split(".")[0] for key in state if not str(key).startswith(known)})
    num_updates = state.get("model_ema.num_updates")
    model.official_info = {
        "checkpoint": str(path.resolve()), "weights": weights, "reader": contents.reader,
        "skipped_objects": list(contents.skipped), "ignored_state_keys": ignored,
        "global_step": top.get("global_step") if isinstance(top.get("global_step"), int) else None,
        "epoch": top.get("epoch") if isinstance(top.get("epoch"), int) else None,
        "ema_num_updates": int(materialize(num_updates, "model_ema.num_updates", path).item())
        if num_updates is not None else None,
        "unet_keys": len(mapping),
    }
    model.checkpoint_info = {"variant": "ldznet", "task": "phrasecut", "model": model_options(options),
                             "stable_diffusion_record": dict(components.record or {})}
    if ignored:
        log.info("%s: state entries not used by the segmenter: %s", path, ", ".join(ignored))
    return model


def load_official(checkpoint: str | Path, stable_diffusion: str | Path | None = None, *, weights: str = "ema",
                  tokenizer_path: str | Path | None = None, architecture: str | Path | Mapping = "sd",
                  frozen_from_checkpoint: bool = False, components=None, device: str | torch.device = "cpu",
                  hash_files: bool = True) -> nn.Module:
    """Our LD-ZNet with the released segmentation UNet, in eval mode.

    `weights`: "ema" (default; what the official inference uses) or "raw". Frozen parts: from the Stable
    Diffusion copy `stable_diffusion` (diffusers folder or original .ckpt + `tokenizer_path`), or, with
    `frozen_from_checkpoint=True`, from the checkpoint's `first_stage_model.*`, `cond_stage_model.transformer.*`
    and `sd_features_stage_model.model.*` (tokenizer from `tokenizer_path` or `stable_diffusion`/tokenizer).
    `architecture`: "sd" for the real model ("tiny" or a mapping for tests). The model carries
    `official_info` (what was read) and `checkpoint_info` (as `load_segmenter` sets it).
    """
    from ldznet.stable_diffusion import load_stable_diffusion

    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    state, contents, path = _read_state(checkpoint)
    if components is not None:
        node = dict(stable_diffusion_node_of(components))
    elif frozen_from_checkpoint:
        tokenizer = _tokenizer_folder(stable_diffusion, tokenizer_path)
        components = components_from_checkpoint(state, path, tokenizer, architecture)
        node = {"path": None, "tokenizer_path": str(tokenizer.resolve())}
    else:
        if stable_diffusion is None:
            raise ValueError("give the Stable Diffusion v1.4 copy the frozen parts come from (--stable-diffusion), "
                             "or take them from the checkpoint (--frozen-from-checkpoint)")
        components = load_stable_diffusion(stable_diffusion, architecture, tokenizer_path, hash_files=hash_files)
        node = _stable_diffusion_node(stable_diffusion, tokenizer_path, architecture)
    model = _build_and_load(state, contents, path, components, node, weights)
    return model.to(device).eval()


def stable_diffusion_node_of(components) -> dict[str, Any]:
    """The `model.stable_diffusion` node that reloads `components` (from their record)."""
    record = components.record or {}
    node = {"path": record.get("path")}
    if record.get("tokenizer_path"):
        node["tokenizer_path"] = record["tokenizer_path"]
    return node


# --- writing segmenter.pt -----------------------------------------------------------------------------------

def write_segmenter(model: nn.Module, out: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write `model` as a segmenter file (`ldznet.checkpoints` format) that `ldznet.eval`/`ldznet.predict` read.

    The file holds the weights chosen at import once; with `--weights ema` they are also filed as the EMA copy
    (same tensors, stored once), so `load_segmenter` gives the released EMA model whether or not it asks for EMA.
    """
    from common.checkpoints import save_torch
    from ldznet.checkpoints import segmenter_header

    info = model.checkpoint_info
    header = segmenter_header(info["model"], info["task"], info["stable_diffusion_record"])
    weights = {name: parameter.detach().cpu() for name, parameter in model.named_parameters()
               if parameter.requires_grad}
    chosen = model.official_info["weights"]
    payload = {**header, "state_dict": weights, "ema_state_dict": weights if chosen == "ema" else None,
               "extra": {"official": {**model.official_info, **dict(extra or {})}}}
    save_torch(payload, out)
    return Path(out)


def import_official(checkpoint: str | Path, out: str | Path, stable_diffusion: str | Path | None = None, *,
                    weights: str = "ema", tokenizer_path: str | Path | None = None,
                    architecture: str | Path | Mapping = "sd", frozen_from_checkpoint: bool = False,
                    frozen_out: str | Path | None = None, hash_files: bool = True) -> nn.Module:
    """`load_official`, then write `out` (segmenter.pt). With `frozen_from_checkpoint`, the checkpoint's frozen
    parts are first written as a diffusers folder (`frozen_out`, default `<out stem>_stable_diffusion/` beside
    `out`) that the segmenter file points to. Returns the model."""
    from ldznet.stable_diffusion import check_diffusers_folder, file_sha256, save_diffusers_folder

    out = Path(out)
    if not frozen_from_checkpoint:
        model = load_official(checkpoint, stable_diffusion, weights=weights, tokenizer_path=tokenizer_path,
                              architecture=architecture, hash_files=hash_files)
    else:
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        state, contents, path = _read_state(checkpoint)
        tokenizer = _tokenizer_folder(stable_diffusion, tokenizer_path)
        components = components_from_checkpoint(state, path, tokenizer, architecture)
        folder = Path(frozen_out) if frozen_out else out.with_name(f"{out.stem}_stable_diffusion")
        save_diffusers_folder(components, folder, write_tokenizer=False)
        (folder / "tokenizer").mkdir(exist_ok=True)
        for file in sorted(tokenizer.iterdir()):  # the given CLIP tokenizer files, as they are
            if file.is_file():
                shutil.copyfile(file, folder / "tokenizer" / file.name)
        found = check_diffusers_folder(folder)
        files = sorted(file for paths in found.values() for file in paths)
        components.record = {"path": str(folder.resolve()), "format": "diffusers",
                             "written_from": str(path.resolve()),
                             "sha256": {str(file.relative_to(folder)): file_sha256(file) for file in files}
                             if hash_files else None}
        model = _build_and_load(state, contents, path, components, {"path": str(folder.resolve())}, weights)
        model.eval()
    source = {"sha256": file_sha256(checkpoint) if hash_files else None}
    write_segmenter(model, out, source)
    return model
