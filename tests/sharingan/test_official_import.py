"""The authors' released SharinGAN files load into our networks (`sharingan.official`), proved key by key.

Official-format files are built here from the shipped key listing (`sharingan/official_keys.json`: every
official key and shape) in the official top-level layouts, saved in PyTorch's legacy format, with and without
`num_batches_tracked` and `module.` prefixes. Every tensor gets a distinct value, so a key landing on a
parameter of the same shape but another role is caught. The official alias groups (one module registered
under several names) are written out by hand below, independently of the importer. A second method checks
the forward passes: the official networks' computation written with `torch.nn.functional` directly on the
official key names (docs/ref-sharingan.md §1) must equal our imported modules' outputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.config import REPO_ROOT, load_config
from sharingan import official
from sharingan.checkpoints import load_networks, load_pretrained, read_networks_checkpoint

LISTING = json.loads((REPO_ROOT / "sharingan" / "official_keys.json").read_text())
SECTION = {"depth": "depth", "normals": "faces"}
ENTRY = {"depth": {"generator": "netG_state_dict", "task_network": "netT_state_dict", "critic": "netD0_state_dict"},
         "normals": {"generator": "autoenc_state_dict", "task_network": "primary_net_state_dict", "critic": "disc"}}
PAIRS = [(task, network) for task in ("depth", "normals") for network in ("generator", "task_network", "critic")]


# ------------------------------------------------------------------------------------- official-format files
def shapes(task: str, network: str) -> dict[str, list[int]]:
    return LISTING[SECTION[task]][ENTRY[task][network]]


def official_aliases(task: str, network: str) -> dict[str, str]:
    """Official key -> the first key of the same tensor (hand-written from the official module structure)."""
    keys = shapes(task, network)
    if task == "depth" and network in ("generator", "task_network"):
        prelu = [key for key, shape in keys.items() if shape == [1]]  # the one PReLU, reused everywhere
        assert len(prelu) == (16 if network == "generator" else 18)
        return {key: prelu[0] for key in prelu[1:]}
    if task == "normals" and network == "generator":  # RBDN: trunk registered again as main_network
        aliases = {}
        for j in range(5):
            for suffix in ("weight", "bias"):
                aliases[f"main_network.{3 * j}.{suffix}"] = f"conv{j + 2}1.{suffix}"
            for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                aliases[f"main_network.{3 * j + 1}.{suffix}"] = f"bn{j + 2}1.{suffix}"
        for suffix in ("weight", "bias"):
            aliases[f"main_network.15.{suffix}"] = f"conv_de.{suffix}"
        return aliases
    return {}


def official_state(task: str, network: str, mode: str = "distinct", counters: bool = True, prefix: str = "",
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the official keys and shapes. mode "distinct": tensor i holds the constant i + 1
    everywhere (a broadcast view: tiny files); "random": finite random weights that keep activations sane."""
    generator = torch.Generator().manual_seed(seed)
    aliases = official_aliases(task, network)
    state: dict[str, torch.Tensor] = {}
    for index, (key, shape) in enumerate(shapes(task, network).items()):
        if key.endswith("num_batches_tracked"):
            if counters:
                state[key] = state[aliases[key]] if key in aliases else torch.tensor(1000 + index)
            continue
        if key in aliases:
            state[key] = state[aliases[key]]
        elif mode == "distinct":
            state[key] = torch.tensor(float(index + 1)).expand(shape)
        elif shape == [1]:
            state[key] = torch.tensor([0.2])
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = torch.randn(shape, generator=generator) * 0.1
        elif len(shape) == 1:  # batch-norm scale
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            fan_in = math.prod(shape[1:]) if "unpool" not in key and not key.endswith("model.4.weight") \
                else shape[0] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    return {prefix + key: value for key, value in state.items()}


def optimiser_state(lr: float = 1e-4) -> dict:
    """What PyTorch 0.4's Adam.state_dict() holds (numbers, tuples, tensors)."""
    return {"state": {140000000000: {"step": 10, "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
            "param_groups": [{"lr": lr, "betas": (0.5, 0.9), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                              "params": [140000000000]}]}


def save_legacy(path: Path, payload) -> Path:
    torch.save(payload, path, _use_new_zipfile_serialization=False)
    return path


def final_depth_file(path: Path, mode: str = "distinct", counters: bool = False, prefix: str = "module.") -> Path:
    """Depth_Estimator_WI_geom_bicubic_da-144999.pth.tar layout."""
    return save_legacy(path, {
        "netG_state_dict": official_state("depth", "generator", mode, counters, prefix, seed=1),
        "netT_state_dict": official_state("depth", "task_network", mode, counters, prefix, seed=2),
        "netG_optimizer": optimiser_state(5e-5), "netT_optimizer": optimiser_state(),
        "netD0_state_dict": official_state("depth", "critic", mode, counters, "", seed=3),
        "netD0_optimizer_state_dict": optimiser_state(1e-5)})


def final_faces_file(path: Path, mode: str = "distinct", counters: bool = False, critic: str | None = None) -> Path:
    """Face_Normal_Estimator_da-<i>.pth.tar layout (a critic under an undocumented name when `critic`)."""
    payload = {"primary_net_state_dict": official_state("normals", "task_network", mode, counters, seed=4),
               "autoenc_state_dict": official_state("normals", "generator", mode, counters, seed=5),
               "primary_net_optimizer": optimiser_state(), "autoenc_optimizer": optimiser_state(), "iteration": 1999}
    if critic:
        payload[critic] = official_state("normals", "critic", mode, counters, seed=6)
    return save_legacy(path, payload)


# ------------------------------------------------------------------------------------- the mapping itself
@pytest.mark.parametrize("task, network", PAIRS)
def test_key_map_is_a_bijection_onto_our_parameters(task, network):
    """Every official key maps to one of our keys with the same shape; the official keys landing on one of our
    parameters are exactly one official alias group; every parameter and buffer of ours receives one group."""
    module = official.build_official_networks(task)[network]
    ours = module.state_dict(keep_vars=True)
    mapping = official.key_map(task, network)
    assert list(mapping) == list(shapes(task, network))
    groups: dict[int, set[str]] = {}
    for key, target in mapping.items():
        assert target in ours, f"{key} -> {target}: not a key of our {network}"
        assert list(ours[target].shape) == shapes(task, network)[key], key
        groups.setdefault(id(ours[target]), set()).add(key)
    aliases = official_aliases(task, network)
    expected_groups = {}
    for key in mapping:
        expected_groups.setdefault(aliases.get(key, key), set()).add(key)
    assert sorted(map(sorted, groups.values())) == sorted(map(sorted, expected_groups.values()))
    assert set(groups) == {id(tensor) for tensor in ours.values()}  # nothing of ours left unfilled


def test_parameter_counts_match_the_official_networks():
    counts = {(task, network): sum(p.numel() for p in module.parameters())
              for task in ("depth", "normals") for network, module in official.build_official_networks(task).items()}
    assert counts == {("depth", "generator"): 3_121_220, ("depth", "task_network"): 54_564_676,
                      ("depth", "critic"): 19_931_809, ("normals", "generator"): 3_406_473,
                      ("normals", "task_network"): 3_423_393, ("normals", "critic"): 12_055_329}


# hand-written: official key -> our key, for the roles where shapes alone are ambiguous
HAND_TABLE = {
    ("depth", "generator"): {
        "encoder.1.weight": "encoder.1.weight", "encoder.4.model.4.bias": "encoder.4.4.bias",
        "encoder.6.model.3.weight": "encoder.6.3.weight",
        "encoder.8.layer0.1.weight": "bottleneck.0.body.1.weight",
        "encoder.8.branch1x1.1.weight": "bottleneck.0.body.5.weight",
        "encoder.9.norm1.weight": "bottleneck.1.body.2.weight", "encoder.9.norm2.weight": "bottleneck.1.body.6.weight",
        "encoder.14.norm2.running_var": "bottleneck.6.body.6.running_var",
        "decoder.0.model.1.weight": "decoder.0.1.weight", "decoder.0.model.4.weight": "decoder.0.4.weight",
        "decoder.1.model.5.running_mean": "decoder.1.5.running_mean", "decoder.3.bias": "decoder.3.bias",
        "encoder.3.weight": "activation.weight"},
    ("depth", "task_network"): {
        "conv1.1.weight": "conv1.1.weight", "conv3.model.3.weight": "conv3.3.weight",
        "center.0.layer0.1.weight": "center.0.branches.0.1.weight",
        "center.1.layer2.1.weight": "center.1.branches.2.1.weight",
        "center.2.layer1.1.weight": "center.2.branches.1.1.weight",
        "center.2.norm1.bias": "center.2.merge.0.bias", "center.1.norm2.weight": "center.1.fuse.2.weight",
        "center.0.branch1x1.1.weight": "center.0.fuse.1.weight", "center.3.model.4.weight": "center.3.4.weight",
        "deconv4.model.1.weight": "deconv4.1.weight", "deconv2.model.5.bias": "deconv2.5.bias",
        "output4.model.1.weight": "output4.1.weight", "output1.model.1.weight": "output1.1.weight",
        "center.1.nonlinearity.weight": "activation.weight"},
    ("depth", "critic"): {
        "main.0.weight": "features.0.weight", "main.4.running_var": "features.4.running_var",
        "main.39.weight": "features.39.weight", "main.43.weight": "head.0.weight", "main.44.bias": "head.1.bias",
        "main.46.weight": "head.3.weight", "main.47.running_mean": "head.4.running_mean",
        "main.49.bias": "head.6.bias"},
    ("normals", "generator"): {
        "bn0.weight": "input_norm.weight", "conv1.weight": "scale1.0.weight", "bn1.bias": "scale1.1.bias",
        "conv_b11.weight": "branch.entry.0.weight", "conv_de_b11.weight": "branch.exit.0.weight",
        "conv_b11_strided.weight": "branch.down.0.weight", "conv_b12.weight": "branch.middle.0.weight",
        "unpool_b1.weight": "branch.up.0.weight", "bn_unpool_b1.running_var": "branch.up.1.running_var",
        "conv_b21.weight": "branch.inner.entry.0.weight", "bn_b22.weight": "branch.inner.middle.1.weight",
        "conv_b32.weight": "branch.inner.inner.middle.0.weight",
        "conv_de_b31.bias": "branch.inner.inner.exit.0.bias", "conv21.weight": "trunk.0.0.weight",
        "bn41.weight": "trunk.2.1.weight", "conv61.weight": "trunk.4.0.weight", "conv_de.weight": "output.weight",
        "main_network.9.weight": "trunk.3.0.weight", "main_network.15.bias": "output.bias"},
    ("normals", "task_network"): {
        "conv1.conv.0.weight": "stem.0.weight", "conv2.conv.1.weight": "stem.4.weight", "conv3.bias": "stem.6.bias",
        "nres1.res.2.weight": "normal_branch.residual.0.body.2.weight",
        "nres1.res.5.weight": "normal_branch.residual.0.body.5.weight",
        "ares5.res.3.running_mean": "albedo_branch.residual.4.body.3.running_mean",
        "nreso.0.weight": "normal_branch.post.0.weight", "areso.0.bias": "albedo_branch.post.0.bias",
        "nconv1.conv.0.weight": "normal_branch.head.0.weight", "aconv2.conv.0.weight": "albedo_branch.head.3.weight",
        "nout.weight": "normal_branch.head.6.weight", "aout.bias": "albedo_branch.head.6.bias",
        "lconv.conv.0.weight": "light_reduce.0.weight", "lconv.conv.1.running_var": "light_reduce.1.running_var",
        "lout.weight": "light_fc.weight"},
    ("normals", "critic"): {
        "main.0.weight": "features.0.weight", "main.2.weight": "features.2.weight", "main.22.bias": "features.22.bias",
        "main.25.weight": "classifier.1.weight", "main.27.weight": "classifier.3.weight",
        "main.29.bias": "classifier.5.bias"},
}


def _value_of(tensor: torch.Tensor) -> float:
    """The constant a distinct-mode tensor holds (asserting it is constant)."""
    first = float(tensor.flatten()[0])
    assert bool((tensor == first).all())
    return first


@pytest.mark.parametrize("task, network", PAIRS)
def test_distinct_values_land_on_the_parameter_of_the_same_role(task, network, tmp_path):
    state = official_state(task, network, "distinct")
    path = save_legacy(tmp_path / "bare.pth", state) if network != "critic" else \
        save_legacy(tmp_path / "bare.pth", {"some_critic_name": state})
    networks = official.load_official(path, task)
    ours = networks[network].state_dict()
    for official_key, our_key in HAND_TABLE[(task, network)].items():
        assert _value_of(ours[our_key]) == _value_of(state[official_key]), (official_key, our_key)
    # every official tensor consumed once, every parameter of ours filled once
    official_values = {_value_of(state[official_aliases(task, network).get(k, k)]) for k in state}
    our_values = {}
    for tensor in networks[network].state_dict(keep_vars=True).values():
        our_values.setdefault(id(tensor), _value_of(tensor.detach()))
    assert sorted(our_values.values()) == sorted(official_values)
    mapping = official.key_map(task, network)
    assert all(_value_of(ours[mapping[key]]) == _value_of(value) for key, value in state.items())


# ------------------------------------------------------------------------------- every released file layout
def test_final_depth_file_legacy_format_module_prefix_no_counters(tmp_path):
    path = final_depth_file(tmp_path / "Depth_Estimator_WI_geom_bicubic_da-144999.pth.tar")
    with open(path, "rb") as handle:
        assert handle.read(2) != b"PK"  # legacy pickle format, not a zip archive
    imported = official.read_official(path, "depth")
    assert set(imported.networks) == {"generator", "task_network", "critic"}
    report = imported.report
    assert report["networks"]["generator"] == {"entry": "netG_state_dict", "keys": 158 - 23,
                                               "parameters": 3_121_220, "num_batches_tracked_set_to_zero": 23}
    assert report["networks"]["critic"]["entry"] == "netD0_state_dict"
    assert set(report["skipped"]) == {"netG_optimizer", "netT_optimizer", "netD0_optimizer_state_dict"}
    generator = imported.networks["generator"]
    assert not generator.training
    assert all(int(v) == 0 for k, v in generator.state_dict().items() if k.endswith("num_batches_tracked"))
    assert _value_of(generator.encoder[1].weight.detach()) == 1.0  # the first official tensor


@pytest.mark.parametrize("layout", ["pretrained_generator", "pretrained_task", "rbdn", "bare_sfsnet", "faces"])
def test_each_released_file_layout(layout, tmp_path):
    if layout == "pretrained_generator":  # Gen_Resnet_Baseline.pth.tar
        task, payload = "depth", {"netG_state_dict": official_state("depth", "generator", prefix="module."),
                                  "netG_optimizer": optimiser_state(5e-5)}
        expected = {"generator"}
    elif layout == "pretrained_task":  # PTNet_baseline-8999_bicubic.pth.tar, counters present (PyTorch >= 0.4.1)
        task, payload = "depth", {"netT_state_dict": official_state("depth", "task_network", prefix="module."),
                                  "netT_optimizer": optimiser_state()}
        expected = {"task_network"}
    elif layout == "rbdn":  # preg_RBDN-19999.pth.tar
        task, payload = "normals", {"autoenc_state_dict": official_state("normals", "generator", counters=False),
                                    "autoenc_optimizer": optimiser_state()}
        expected = {"generator"}
    elif layout == "bare_sfsnet":  # net_epoch_r5_5.pth: a bare state dict, no wrapper
        task, payload = "normals", official_state("normals", "task_network", prefix="module.")
        expected = {"task_network"}
    else:
        task, expected = "normals", {"generator", "task_network", "critic"}
        payload = None
    path = (final_faces_file(tmp_path / "Face_Normal_Estimator_da-1999.pth.tar", critic="disc_state_dict")
            if payload is None else save_legacy(tmp_path / f"{layout}.pth.tar", payload))
    networks = official.load_official(path, task)
    assert set(networks) == expected


def test_face_final_file_reports_what_it_skipped(tmp_path):
    imported = official.read_official(final_faces_file(tmp_path / "faces.pth.tar", critic="netD"), "normals")
    assert imported.report["networks"]["critic"]["entry"] == "netD"
    assert imported.report["skipped"] == {"primary_net_optimizer": "optimiser state",
                                          "autoenc_optimizer": "optimiser state", "iteration": "int"}


# ------------------------------------------------------------------------------------------------ errors
def test_truncated_state_dict_names_the_missing_key(tmp_path):
    state = official_state("depth", "task_network")
    del state["center.2.norm2.weight"]
    path = save_legacy(tmp_path / "ptnet.pth.tar", {"netT_state_dict": state})
    with pytest.raises(ValueError, match=r"netT_state_dict.*center\.2\.norm2\.weight"):
        official.load_official(path, "depth")


def test_some_but_not_all_counters_is_a_truncated_file(tmp_path):
    state = official_state("normals", "task_network")
    del state["nres3.res.0.num_batches_tracked"]
    with pytest.raises(ValueError, match=r"nres3\.res\.0\.num_batches_tracked"):
        official.load_official(save_legacy(tmp_path / "r5.pth", state), "normals")


def test_wrong_shape_names_the_key_and_both_shapes(tmp_path):
    state = official_state("depth", "generator")
    state["decoder.1.model.4.weight"] = torch.zeros(128, 32, 3, 3)
    path = save_legacy(tmp_path / "g.pth.tar", {"netG_state_dict": state})
    with pytest.raises(ValueError, match=r"decoder\.1\.model\.4\.weight.*\[128, 32, 3, 3\].*\[128, 64, 3, 3\]"):
        official.load_official(path, "depth")


def test_unknown_key_is_named(tmp_path):
    state = official_state("normals", "generator")
    state["conv_b41.weight"] = torch.zeros(128, 128, 3, 3)
    path = save_legacy(tmp_path / "rbdn.pth.tar", {"autoenc_state_dict": state})
    with pytest.raises(ValueError, match=r"conv_b41\.weight"):
        official.load_official(path, "normals")


def test_diverging_copies_of_a_shared_tensor_are_refused(tmp_path):
    state = official_state("normals", "generator")
    state["main_network.6.weight"] = state["conv41.weight"] + 1.0
    path = save_legacy(tmp_path / "rbdn.pth.tar", {"autoenc_state_dict": state})
    with pytest.raises(ValueError, match=r"conv41\.weight.*main_network\.6\.weight.*different values"):
        official.load_official(path, "normals")
    state = official_state("depth", "generator")
    state["encoder.12.nonlinearity.weight"] = torch.tensor([0.5])
    path = save_legacy(tmp_path / "g.pth.tar", {"netG_state_dict": state})
    with pytest.raises(ValueError, match=r"encoder\.12\.nonlinearity\.weight.*different values"):
        official.load_official(path, "depth")


def test_truncated_bytes_wrong_task_and_foreign_entries(tmp_path):
    good = final_faces_file(tmp_path / "faces.pth.tar")
    cut = tmp_path / "cut.pth.tar"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"cut\.pth\.tar"):
        official.load_official(cut, "normals")
    with pytest.raises(ValueError, match=r"primary_net_state_dict.*not a state dict of any official depth network"):
        official.load_official(good, "depth")
    foreign = save_legacy(tmp_path / "foreign.pth", {"netG_state_dict": official_state("depth", "generator"),
                                                     "extra_net": {"fc.weight": torch.zeros(2, 2)}})
    with pytest.raises(ValueError, match=r"'extra_net'.*not a state dict"):
        official.load_official(foreign, "depth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        official.load_official(tmp_path / "missing.pth", "depth")
    with pytest.raises(ValueError, match="unknown SharinGAN task"):
        official.load_official(good, "faces")


def test_unsafe_pickles_are_refused_without_executing_them(tmp_path):
    path = save_legacy(tmp_path / "pickled.pth.tar", {"netG_state_dict": official_state("depth", "generator"),
                                                      "options": Path("/some/where")})
    with pytest.raises(ValueError, match=r"weights_only=True.*nothing was executed"):
        official.load_official(path, "depth")


# ------------------------------------------------------------- second method: the official forward passes
def _conv(x, s, name, reflect=0, padding=0, stride=1, dilation=1):
    if reflect:
        x = F.pad(x, (reflect,) * 4, mode="reflect")
    return F.conv2d(x, s[f"{name}.weight"], s.get(f"{name}.bias"), stride, padding, dilation)


def _bn(x, s, name):
    return F.batch_norm(x, s[f"{name}.running_mean"], s[f"{name}.running_var"], s[f"{name}.weight"],
                        s[f"{name}.bias"], False, 0.0, 1e-5)


def _up(x, s, name):  # official DecoderUpBlock: pad, conv, BN, PReLU, ConvT (s2, p1, op1), BN, PReLU
    x = F.prelu(_bn(_conv(x, s, f"{name}.model.1", reflect=1), s, f"{name}.model.2"), s[f"{name}.model.3.weight"])
    x = F.conv_transpose2d(x, s[f"{name}.model.4.weight"], s[f"{name}.model.4.bias"], 2, 1, 1)
    return F.prelu(_bn(x, s, f"{name}.model.5"), s[f"{name}.model.6.weight"])


def _encoder_block(x, s, name):  # official EncoderBlock: [conv 3x3 pad 1, BN, PReLU] x 2
    for conv, norm, act in ((0, 1, 2), (3, 4, 5)):
        x = F.prelu(_bn(_conv(x, s, f"{name}.model.{conv}", padding=1), s, f"{name}.model.{norm}"),
                    s[f"{name}.model.{act}.weight"])
    return x


def _inception(x, s, name, width):  # official InceptionBlock: dilations 1, 3, 5 ... (width of them)
    branches = [_conv(x, s, f"{name}.layer{i}.1", reflect=2 * i + 1, dilation=2 * i + 1) for i in range(width)]
    y = F.prelu(_bn(torch.cat(branches, 1), s, f"{name}.norm1"), s[f"{name}.nonlinearity.weight"])
    y = _bn(_conv(y, s, f"{name}.branch1x1.1", reflect=1), s, f"{name}.norm2")
    return F.prelu(x + y, s[f"{name}.nonlinearity.weight"])


def official_generator(s, x):
    x = F.prelu(_bn(_conv(x, s, "encoder.1", reflect=3), s, "encoder.2"), s["encoder.3.weight"])
    x = F.avg_pool2d(_encoder_block(x, s, "encoder.4"), 2)
    x = F.avg_pool2d(_encoder_block(x, s, "encoder.6"), 2)
    for i in range(8, 15):
        x = _inception(x, s, f"encoder.{i}", 1)
    x = _up(_up(x, s, "decoder.0"), s, "decoder.1")
    return torch.tanh(_conv(x, s, "decoder.3", reflect=3))


def official_task_network(s, x):
    def output(level, name, k):
        return torch.tanh(_conv(level, s, f"{name}.model.1", reflect=k // 2))

    def up2(t):
        return F.interpolate(t, scale_factor=2, mode="nearest")

    conv1 = F.avg_pool2d(F.prelu(_bn(_conv(x, s, "conv1.1", reflect=3), s, "conv1.2"), s["conv1.3.weight"]), 2)
    conv2 = F.avg_pool2d(_encoder_block(conv1, s, "conv2"), 2)
    conv3 = F.avg_pool2d(_encoder_block(conv2, s, "conv3"), 2)
    center = F.avg_pool2d(_encoder_block(conv3, s, "conv4"), 2)
    for i in range(3):
        center = _inception(center, s, f"center.{i}", 3)
    center = _up(center, s, "center.3")
    level4 = torch.cat([center, 0.1 * conv3], 1)
    out4 = output(level4, "output4", 3)
    level3 = torch.cat([_up(level4, s, "deconv4"), 0.05 * conv2, up2(out4)], 1)
    out3 = output(level3, "output3", 3)
    level2 = torch.cat([_up(level3, s, "deconv3"), 0.01 * conv1, up2(out3)], 1)
    out2 = output(level2, "output2", 3)
    out1 = output(torch.cat([_up(level2, s, "deconv2"), up2(out2)], 1), "output1", 7)
    return [out4, out3, out2, out1]


def official_depth_critic(s, x):
    for k in range(14):
        x = F.relu(_bn(_conv(x, s, f"main.{3 * k}", padding=1, stride=2 if k % 2 else 1), s, f"main.{3 * k + 1}"))
    x = x.flatten(1)
    x = F.relu(_bn(F.linear(x, s["main.43.weight"], s["main.43.bias"]), s, "main.44"))
    x = F.relu(_bn(F.linear(x, s["main.46.weight"], s["main.46.bias"]), s, "main.47"))
    return F.linear(x, s["main.49.weight"], s["main.49.bias"]).squeeze(1)


def official_rbdn(s, x):
    def block(t, conv, norm, stride=1):
        return F.relu(_bn(_conv(t, s, conv, padding=1, stride=stride), s, norm))

    def branch(b, t):
        down = block(block(t, f"conv_b{b}1", f"bn_b{b}1"), f"conv_b{b}1_strided", f"bn_b{b}1_strided", 2)
        middle = down if b == 3 else torch.cat([down, branch(b + 1, down)], 1)
        middle = block(middle, f"conv_b{b}2", f"bn_b{b}2")
        up = F.conv_transpose2d(middle, s[f"unpool_b{b}.weight"], s[f"unpool_b{b}.bias"], 2, 1, 1)
        return block(F.relu(_bn(up, s, f"bn_unpool_b{b}")), f"conv_de_b{b}1", f"bn_de_b{b}1")

    scale1 = block(_bn(x, s, "bn0"), "conv1", "bn1")
    y = torch.cat([scale1, branch(1, scale1)], 1)
    for k in range(2, 7):
        y = block(y, f"conv{k}1", f"bn{k}1")
    return _conv(y, s, "conv_de", padding=1)


def official_sfsnet(s, x):
    def cbr(t, name, padding):
        return F.relu(_bn(_conv(t, s, f"{name}.conv.0", padding=padding), s, f"{name}.conv.1"))

    stem = _conv(cbr(cbr(x, "conv1", 3), "conv2", 1), s, "conv3", padding=1, stride=2)
    features, maps = [], []
    for b in "na":
        y = stem
        for k in range(1, 6):
            r = _conv(F.relu(_bn(y, s, f"{b}res{k}.res.0")), s, f"{b}res{k}.res.2", padding=1)
            y = y + _conv(F.relu(_bn(r, s, f"{b}res{k}.res.3")), s, f"{b}res{k}.res.5", padding=1)
        y = F.relu(_bn(y, s, f"{b}reso.0"))
        features.append(y)
        up = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        maps.append(_conv(cbr(cbr(up, f"{b}conv1", 0), f"{b}conv2", 1), s, f"{b}out"))
    light = cbr(torch.cat([stem, *features], 1), "lconv", 0).mean(dim=(2, 3))
    return {"normal": maps[0], "albedo": maps[1], "lighting": F.linear(light, s["lout.weight"], s["lout.bias"])}


def official_face_critic(s, x):
    for k in range(12):
        x = F.relu(_conv(x, s, f"main.{2 * k}", padding=1, stride=2 if k % 2 else 1))
    x = F.relu(F.linear(x.flatten(1), s["main.25.weight"], s["main.25.bias"]))
    x = F.relu(F.linear(x, s["main.27.weight"], s["main.27.bias"]))
    return F.linear(x, s["main.29.weight"], s["main.29.bias"])


REFERENCES = {("depth", "generator"): (official_generator, (1, 3, 96, 160)),
              ("depth", "task_network"): (official_task_network, (1, 3, 96, 160)),
              ("depth", "critic"): (official_depth_critic, (2, 3, 192, 640)),
              ("normals", "generator"): (official_rbdn, (1, 3, 64, 64)),
              ("normals", "task_network"): (official_sfsnet, (1, 3, 64, 64)),
              ("normals", "critic"): (official_face_critic, (2, 3, 128, 128))}


@pytest.mark.parametrize("task, network", PAIRS)
def test_imported_networks_compute_the_official_forward_pass(task, network, tmp_path):
    state = official_state(task, network, "random", seed=7)
    path = save_legacy(tmp_path / "file.pth.tar", {f"{network}_weights": state})
    module = official.load_official(path, task)[network]
    reference, shape = REFERENCES[(task, network)]
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    x = x * 2 - 1 if task == "depth" else x
    with torch.no_grad():
        ours, theirs = module(x), reference(state, x)
    if isinstance(ours, dict):
        ours, theirs = [ours[k] for k in sorted(ours)], [theirs[k] for k in sorted(theirs)]
    ours, theirs = (ours, theirs) if isinstance(ours, list) else ([ours], [theirs])
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()
        assert float(b.std()) > 0  # the comparison is not between two constants


# ---------------------------------------------------------------------- the networks checkpoint it writes
def test_depth_conventions_of_imported_networks(tmp_path):
    """Official convention (docs/ref-sharingan.md §6): G and T take [-1, 1] images, T's last output is
    full resolution, depth = (y + 1) / 2 * 80 m: `predict_depth` (used by eval and predict) must compute it."""
    from sharingan.data.images import to_network
    from sharingan.tasks.depth import predict_depth

    generator_state = official_state("depth", "generator", "random", seed=1)
    task_state = official_state("depth", "task_network", "random", seed=2)
    path = save_legacy(tmp_path / "f.pth.tar", {"netG_state_dict": generator_state, "netT_state_dict": task_state})
    networks = official.load_official(path, "depth")
    image = to_network(np.random.default_rng(0).integers(0, 256, (96, 160, 3)).astype(np.uint8))[None]
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0 and float(image.min()) < -0.9
    with torch.no_grad():
        depth = predict_depth(networks["generator"], networks["task_network"], image)
        y = official_task_network(task_state, official_generator(generator_state, image))[-1]
    assert depth.shape == (1, 1, 96, 160) and float(depth.std()) > 0
    assert torch.allclose(depth, (y + 1) / 2 * 80.0, atol=1e-3)


def test_cli_writes_a_checkpoint_that_eval_predict_and_init_accept(tmp_path, capsys):
    from sharingan import import_official, predict
    from sharingan.tasks import load_task

    source = final_faces_file(tmp_path / "Face_Normal_Estimator_da-1999.pth.tar", mode="random", critic="netD")
    out = import_official.main(["--task", "normals", "--checkpoint", str(source), "--out",
                                str(tmp_path / "networks.pt"), "data.photoface_root=/data/photoface"])
    printed = capsys.readouterr().out
    keys = sum(not k.endswith("num_batches_tracked") for k in shapes("normals", "generator"))
    assert f"generator    <- autoenc_state_dict: {keys} keys, 3,406,473 parameters" in printed
    assert "skipped 'iteration' (int)" in printed
    payload = read_networks_checkpoint(out, task="normals")
    assert payload["stage"] == "official" and set(payload["networks"]) == {"generator", "task_network", "critic"}
    assert payload["extra"]["official"]["file"] == str(source)
    networks, cfg, _ = load_networks(out, task="normals")
    assert cfg.data.photoface_root == "/data/photoface" and cfg.eval.row_name == "SharinGAN (authors' released weights)"
    expected = official.load_official(source, "normals")
    for name in ("generator", "task_network", "critic"):
        for (key, a), b in zip(networks[name].state_dict().items(), expected[name].state_dict().values()):
            assert torch.equal(a, b), (name, key)
    # init.generator / init.task_network of a paper-size config
    built = load_task("normals").build_networks(cfg)
    load_pretrained(built["task_network"], out, "task_network", "normals")
    assert torch.equal(built["task_network"].light_fc.weight, expected["task_network"].light_fc.weight)
    # predict on one image
    from common.viz import save_png
    image = tmp_path / "face.png"
    save_png(image, np.random.default_rng(0).integers(0, 256, (128, 128, 3)).astype(np.uint8))
    written = predict.main(["--checkpoint", str(out), "--input", str(image), "--out", str(tmp_path / "pred")])
    assert {p.name for p in written} >= {"face_normals.png"}
    # a pretrained-generator file: usable as init.generator of a depth run
    g_file = save_legacy(tmp_path / "AE_Resnet_Baseline.pth.tar",
                         {"netG_state_dict": official_state("depth", "generator", prefix="module.")})
    g_out = import_official.main(["--task", "depth", "--checkpoint", str(g_file), "--out", str(tmp_path / "g.pt")])
    generator = load_task("depth").build_networks(load_config(REPO_ROOT / "experiments/chapter2/depth_base.yaml")
                                                  )["generator"]
    load_pretrained(generator, g_out, "generator", "depth")
    assert _value_of(generator.decoder[3].bias.detach()) == _value_of(
        official_state("depth", "generator")["decoder.3.bias"])


def test_face_critic_needs_the_official_input_size(tmp_path):
    source = final_faces_file(tmp_path / "faces.pth.tar", critic="netD")
    with pytest.raises(ValueError, match=r"data.size=\[128,128\]"):
        official.import_official(source, "normals", tmp_path / "n.pt", overrides=["data.size=[64,64]"])


# --------------------------------------------------------------------------- the pipeline with init.official
def test_faces_pipeline_evaluates_the_official_file(tmp_path):
    from sharingan import eval as eval_command
    from sharingan import pipeline
    from sharingan.data.multipie import write_multipie_fixture
    from sharingan.data.photoface import write_photoface_fixture

    write_photoface_fixture(tmp_path / "photoface", subjects=("1001", "2001"), test_subjects=1, image_size=64)
    write_multipie_fixture(tmp_path / "multipie", subjects=(1, 2), shots=(0, 9, 18))
    source = final_faces_file(tmp_path / "Face_Normal_Estimator_da-1999.pth.tar", mode="random")
    tiny = REPO_ROOT / "experiments" / "chapter2" / "faces_tiny.yaml"
    result = pipeline.main(["--task", "normals", "--config", str(tiny), "--root", str(tmp_path / "runs"),
                            f"data.photoface_root={tmp_path / 'photoface'}",
                            f"data.multipie_root={tmp_path / 'multipie'}", "eval.multipie.shots=[0,9,18]",
                            f"init.official={source}"])
    assert result["skipped_stages"] == ["pretrain_generator", "pretrain_task", "train"]
    assert not list((tmp_path / "runs").rglob("checkpoints"))  # nothing was trained
    row = result["rows"]["SharinGAN (authors' released weights)"]
    metrics = json.loads(Path(row["metrics"]).read_text())
    assert set(metrics) == {"photoface", "multipie"}
    assert all(math.isfinite(metrics["photoface"]["metrics"][k]) for k in ("mae_deg", "lt20", "lt25", "lt30"))
    table = next(Path(p) for p in result["tables"] if Path(p).name == "table_2_3_photoface.md").read_text()
    assert "SharinGAN (authors' released weights)" in table and "24.00" in table  # ours beside the paper's
    again = eval_command.main(["--checkpoint", row["checkpoint"], "--out", str(tmp_path / "eval"),
                               "data.multipie_root=null"])
    assert again["photoface"]["metrics"]["mae_deg"] == pytest.approx(metrics["photoface"]["metrics"]["mae_deg"])


@pytest.mark.slow
def test_depth_pipeline_evaluates_the_official_file(tmp_path):
    from common.testing import write_depth_fixtures
    from sharingan.pipeline import run_pipeline

    data = write_depth_fixtures(tmp_path / "data")
    source = final_depth_file(tmp_path / "Depth_Estimator_WI_geom_bicubic_da-144999.pth.tar", mode="random")
    tiny = REPO_ROOT / "experiments" / "chapter2" / "depth_tiny.yaml"
    result = run_pipeline("depth", tiny, [*data, f"init.official={source}"], tmp_path / "runs")
    assert result["data"] == {"kitti_eigen_test": 2, "make3d_test": 2}
    row = result["rows"]["SharinGAN (authors' released weights)"]
    metrics = json.loads(Path(row["metrics"]).read_text())
    assert {"kitti_eigen_cap50", "kitti_eigen_cap80", "make3d_c1"} == set(metrics)
    assert all(math.isfinite(v) for v in metrics["kitti_eigen_cap80"]["metrics"].values())
    table = (Path(result["out_dir"]) / "tables" / "table_2_1_cap80.md").read_text()
    assert "| SharinGAN (authors' released weights) | ours |" in table
    assert "| SharinGAN (proposed) | paper |" in table
    assert (Path(result["out_dir"]) / "tables" / "table_2_2.md").is_file()
