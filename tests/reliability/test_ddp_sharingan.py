"""SharinGAN's end-to-end iteration under DDP (2 CPU processes, gloo, Lightning's own launcher) is exactly its
documented single-process equivalent (sharingan.lit_module, "Several devices").

The equivalent: rank r reads samples r, r + 2, ... of the single-device data stream (per-rank batches of 2 + 2:
two synthetic and two real images for depth; for faces 2 + 2 per chunk, five chunks); every optimiser step
(5 critic, 1 (depth) or 3 (faces) generator, 1 task) averages the gradients that each rank's batch gives with
that rank's own batch-norm statistics and its own WGAN-GP noise (seed, iteration x 2 + r). The reference below
computes this by hand in one process, from the losses (sharingan.losses, the module's L_T) and plain
`torch.autograd.grad`, without Lightning or torch.distributed, from the same initial weights. After one
iteration the weights of G, D and T on both ranks equal each other and the reference within 1e-5; each rank's
batch-norm running statistics equal its replica's. Also: the refused configuration (sync_batchnorm).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from common.config import REPO_ROOT, load_config
from common.resilience import sample_seed
from common.testing import write_depth_fixtures
from sharingan.checkpoints import save_networks
from sharingan.data.loaders import resumable_loader
from sharingan.lit_module import SharinGANModule, frozen
from sharingan.losses import critic_loss, generator_adversarial_loss, reconstruction_loss
from sharingan.schedule import adam_settings, split_batch
from sharingan.tasks import load_task
from sharingan.train import run_stage

DEPTH_TINY = REPO_ROOT / "experiments" / "chapter2" / "depth_tiny.yaml"
FACES_TINY = REPO_ROOT / "experiments" / "chapter2" / "faces_tiny.yaml"
WORLD = 2
TOLERANCE = 1e-5

# sharingan.train's command line with two hooks that dump each rank's first batch, its weights when training
# starts (after DDP's broadcast from rank 0) and its final weights (Lightning's DDP launcher re-runs this file
# for rank 1, so the hooks exist in both processes).
DRIVER = textwrap.dedent("""
    import os, sys
    import torch
    from sharingan.lit_module import SharinGANModule
    out = os.environ["SHARINGAN_DDP_DUMP"]

    def states(module):
        return {name: {key: value.detach().clone() for key, value in network.state_dict().items()}
                for name, network in module.networks().items() if network is not None}

    def on_train_batch_start(self, batch, batch_index):
        if self.iteration == 0:
            torch.save({"batch": batch, "initial": states(self)}, f"{out}/start{self.trainer.global_rank}.pt")

    def on_train_end(self):
        torch.save({"final": states(self), "world": self.trainer.world_size}, f"{out}/end{self.trainer.global_rank}.pt")

    SharinGANModule.on_train_batch_start = on_train_batch_start
    SharinGANModule.on_train_end = on_train_end
    from sharingan.train import main
    main(sys.argv[1:])
""")


def run_ddp(tiny: Path, overrides: list[str], tmp_path: Path) -> tuple[list[dict], list[dict], Path]:
    dump, root = tmp_path / "dump", tmp_path / "runs"
    dump.mkdir()
    root.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "SHARINGAN_DDP_DUMP": str(dump)}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        env.pop(name, None)
    started = time.perf_counter()
    process = subprocess.run([sys.executable, str(driver), str(tiny), "--root", str(root), *overrides,
                              "trainer.accelerator=cpu", f"trainer.devices={WORLD}", "schedule.train_iterations=1",
                              "logging.image_every=0", "experiment=ddp"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    print(f"2-process DDP run: {time.perf_counter() - started:.1f} s")
    assert process.returncode == 0, process.stderr[-4000:]
    starts = [torch.load(dump / f"start{rank}.pt", weights_only=True) for rank in range(WORLD)]
    ends = [torch.load(dump / f"end{rank}.pt", weights_only=True) for rank in range(WORLD)]
    assert all(end["world"] == WORLD for end in ends)
    return starts, ends, root


def select(batch, rank: int, world: int):
    """Samples rank, rank + world, ... of a (nested) batch: what `ShardedStepSampler` gives that rank."""
    if isinstance(batch, torch.Tensor):
        return batch[rank::world]
    if isinstance(batch, Mapping):
        return {key: select(value, rank, world) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return list(batch[rank::world])
    return batch


def assert_same(actual, expected, where: str) -> None:
    if isinstance(expected, torch.Tensor):
        torch.testing.assert_close(actual, expected, atol=0, rtol=0, msg=lambda m: f"{where}: {m}")
    elif isinstance(expected, Mapping):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    else:
        assert list(actual) == list(expected), where


def reference_iteration(cfg, initial: dict, batches: list[dict]) -> list[dict[str, dict[str, torch.Tensor]]]:
    """One SharinGAN iteration of `len(batches)` replicas in one process, each optimiser step on the gradient
    averaged over the replicas (each with its own batch, batch-norm statistics and noise). Returns each
    replica's final state dicts."""
    world = len(batches)
    replicas, optimizers, noise = [], [], []
    for rank in range(world):
        module = SharinGANModule(cfg)
        for name, network in module.networks().items():
            network.load_state_dict(initial[name])
        module.train()
        replicas.append(module)
        optimizers.append({name: torch.optim.Adam(getattr(module, name).parameters(), **adam_settings(cfg, name))
                           for name in ("critic", "generator", "task_network")})
        torch.manual_seed(sample_seed(int(cfg.seed), 0 * world + rank, stream=1))
        noise.append(torch.get_rng_state())
    chunks = [split_batch(batch, replicas[0].chunks) for batch in batches]
    weights = replicas[0].weights

    def averaged_step(name: str, loss_of) -> None:
        gradients = []
        for rank, module in enumerate(replicas):
            torch.set_rng_state(noise[rank])
            loss = loss_of(rank, module)
            noise[rank] = torch.get_rng_state()
            parameters = list(getattr(module, name).parameters())
            gradients.append(torch.autograd.grad(loss, parameters))
        mean = [torch.stack(per_rank).mean(0) for per_rank in zip(*gradients)]
        for rank, module in enumerate(replicas):
            for parameter, gradient in zip(getattr(module, name).parameters(), mean):
                parameter.grad = gradient.clone()
            optimizers[rank][name].step()

    shared = []
    with torch.no_grad():
        for rank, module in enumerate(replicas):
            first = chunks[rank][0]
            shared.append((module.generator(first["synthetic"]["image"]), module.generator(first["real"]["image"])))
    for _ in range(replicas[0].critic_steps):
        averaged_step("critic", lambda rank, module: critic_loss(module.critic, *shared[rank],
                                                                  weights.gradient_penalty)[0])
    for index in range(replicas[0].generator_steps):
        def generator_loss(rank, module, index=index):
            part = chunks[rank][min(1 + index, len(chunks[rank]) - 1)]
            x_synthetic, x_real = part["synthetic"]["image"], part["real"]["image"]
            with frozen(module.critic, module.task_network):
                synthetic, real = module.generator(x_synthetic), module.generator(x_real)
                loss = (weights.adversarial * generator_adversarial_loss(module.critic, synthetic, real)
                        + weights.task * module.task_objective(synthetic, real, part)[0])
                if module.use_reconstruction:
                    loss = loss + weights.reconstruction * (reconstruction_loss(synthetic, x_synthetic)
                                                            + reconstruction_loss(real, x_real))
            return loss
        averaged_step("generator", generator_loss)

    def task_loss(rank, module):
        part = chunks[rank][-1]
        with torch.no_grad():
            synthetic, real = module.generator(part["synthetic"]["image"]), module.generator(part["real"]["image"])
        return module.task_objective(synthetic, real, part)[0]
    assert replicas[0].task_steps == 1
    averaged_step("task_network", task_loss)
    return [{name: network.state_dict() for name, network in module.networks().items()} for module in replicas]


def is_buffer(key: str) -> bool:
    return "running_" in key or "num_batches_tracked" in key


def check_against_reference(tiny: Path, overrides: list[str], tmp_path: Path) -> None:
    starts, ends, root = run_ddp(tiny, overrides, tmp_path)
    cfg = load_config(tiny, [*overrides, "logging.image_every=0"])

    # the ranks started from the same weights and read disjoint samples: rank r = samples r, r + 2, ... of the
    # single-device stream (one batch of 2 x the per-rank size)
    for name, state in starts[0]["initial"].items():
        assert_same(starts[1]["initial"][name], state, f"initial {name}")
    datamodule = load_task(str(cfg.task)).build_datamodule(cfg, "train")
    datamodule.setup()
    per_rank = int(starts[0]["batch"]["synthetic"]["image"].shape[0])
    stream = next(iter(resumable_loader(datamodule.dataset, per_rank * WORLD, cfg)))
    for rank in range(WORLD):
        assert_same(starts[rank]["batch"], select(stream, rank, WORLD), f"rank {rank} batch")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the DDP processes (OMP_NUM_THREADS=1): same reduction order
    try:
        reference = reference_iteration(cfg, starts[0]["initial"], [start["batch"] for start in starts])
    finally:
        torch.set_num_threads(previous_threads)

    moved = 0.0
    for name, state in ends[0]["final"].items():
        for key, value in state.items():
            for rank in range(WORLD):
                theirs = ends[rank]["final"][name][key]
                expected = reference[rank][name][key] if is_buffer(key) else reference[0][name][key]
                if is_buffer(key) and key.endswith("num_batches_tracked"):
                    assert int(theirs) == int(expected), f"rank {rank} {name}.{key}"
                    continue
                torch.testing.assert_close(theirs, expected, atol=TOLERANCE, rtol=0,
                                           msg=lambda m, r=rank, n=name, k=key: f"rank {r} {n}.{k}: {m}")
                if not is_buffer(key):
                    assert torch.equal(theirs, value), f"{name}.{key} differs between ranks"
            if not is_buffer(key):
                moved = max(moved, float((value - starts[0]["initial"][name][key]).abs().max()))
    assert moved > 10 * TOLERANCE  # the iteration did change the weights: the comparison is not vacuous
    runs = list((root / "chapter2" / "ddp" / "train").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "networks_last.pt").is_file()  # one folder, rank 0's


@pytest.mark.slow
def test_depth_iteration_under_ddp_equals_averaged_single_process(tmp_path):
    overrides = write_depth_fixtures(tmp_path / "data")
    check_against_reference(DEPTH_TINY, overrides, tmp_path)


@pytest.mark.slow
def test_faces_iteration_under_ddp_equals_averaged_single_process(tmp_path):
    from sharingan.data.celeba import write_celeba_fixture
    from sharingan.data.sfsnet_synthetic import write_sfsnet_synthetic_fixture

    root = tmp_path / "data"
    write_sfsnet_synthetic_fixture(root / "synthetic", 12, image_size=64)
    write_celeba_fixture(root / "celeba", counts=(12, 2, 2))
    overrides = [f"data.synthetic_root={root / 'synthetic'}", f"data.celeba_root={root / 'celeba'}",
                 "data.photoface_root=null"]
    cfg = load_config(FACES_TINY, overrides)
    checkpoint = root / "pretrain_task" / "checkpoints" / "networks_last.pt"
    save_networks(checkpoint, cfg, {"task_network": load_task("normals").build_networks(cfg)["task_network"]},
                  "pretrain_task")
    check_against_reference(FACES_TINY, [*overrides, f"init.task_network={checkpoint}"], tmp_path)


def test_sync_batchnorm_is_refused_for_the_end_to_end_stage(tmp_path):
    overrides = write_depth_fixtures(tmp_path / "data")
    cfg = load_config(DEPTH_TINY, [*overrides, "+trainer.sync_batchnorm=true"])
    with pytest.raises(ValueError, match="trainer.sync_batchnorm=true is refused"):
        run_stage(cfg, "train", tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # refused before anything is written
