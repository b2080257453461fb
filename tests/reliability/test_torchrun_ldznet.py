"""`python -m ldznet.train` launched by `torchrun --nproc-per-node 2` on the CPU (Lightning's TorchElastic
environment, gloo; the README's "Several GPUs and nodes" recipe): it finishes, both processes write into ONE run
folder named from the launcher's run id (`torchrun-<TORCHELASTIC_RUN_ID>-<restart>`), with one `last.ckpt` and
one exported `segmenter.pt`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from common.checkpoints import load_torch
from common.config import REPO_ROOT
from common.testing import write_tiny_stable_diffusion
from ldznet.checkpoints import load_segmenter
from tests.helpers.toy_phrasecut import write_toy_phrasecut


@pytest.mark.slow
def test_torchrun_ldznet_two_processes_one_run_folder_named_from_the_run_id(tmp_path):
    sd = write_tiny_stable_diffusion(tmp_path / "tiny_sd", seed=2)
    phrasecut = write_toy_phrasecut(tmp_path / "VGPhraseCut_v0", samples_per_split=4, size=64)
    with socket.socket() as probe:  # a free port for the c10d rendezvous on this machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_JOB_ID",
                 "TORCHELASTIC_RUN_ID", "LDZNET_RUN_TIMESTAMP", "LDZNET_RESUME_PATH"):
        env.pop(name, None)
    # an explicit rendezvous id (on a cluster: --rdzv-id JOB_ID) becomes TORCHELASTIC_RUN_ID;
    # 8 samples at global batch 1 x 2 processes = 4 optimiser steps
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "job42",
               "-m", "ldznet.train", str(REPO_ROOT / "experiments" / "chapter3" / "tiny.yaml"), "model.variant=ldznet",
               f"model.stable_diffusion.path={sd}", f"data.train.root={phrasecut}", f"data.val.root={phrasecut}",
               "data.val_limit=2", "data.batch_size=1", "trainer.devices=2", "schedule.train_samples=8",
               "log_images_every=0", "experiment=launch"]
    started = time.perf_counter()
    process = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    print(f"torchrun ldznet.train: {time.perf_counter() - started:.1f} s")
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-4000:]
    assert process.stdout.count("training plan: global batch 2 (1 per device x 2 devices") == 1  # rank 0 only

    (run,) = list((tmp_path / "runs" / "chapter3" / "launch").iterdir())  # one run folder for both processes
    assert run.name == "torchrun-job42-0"
    assert sorted(path.name for path in run.iterdir() if path.is_file()) == [
        "config.yaml", "env.json", "metrics.json", "segmenter.pt"]
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    checkpoint = load_torch(run / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 4 and checkpoint["ldznet_train_state"]["world_size"] == 2
    assert checkpoint["ldznet_train_state"]["next_sample_number"] == 8  # both ranks' samples counted
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["global_step"] == 4 and summary["training_plan"]["devices"] == 2
    load_segmenter(run / "segmenter.pt", variant="ldznet")  # the export loads
