"""Under torchrun or SLURM every launched process of `ldznet.train` must pick the same run folder (README
"Several GPUs and nodes"): the name comes from the launcher's job id, not from each process's clock."""

import pytest

from ldznet.train import TIMESTAMP_VARIABLE, shared_timestamp

LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "SLURM_JOB_ID", "SLURM_NTASKS",
                      "SLURM_RESTART_COUNT", "LOCAL_RANK", TIMESTAMP_VARIABLE)


@pytest.fixture
def clean_environment(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def as_process(monkeypatch, **variables) -> str:
    """`shared_timestamp()` as a freshly launched process with these variables would compute it."""
    monkeypatch.delenv(TIMESTAMP_VARIABLE, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return shared_timestamp()


def test_torchrun_processes_on_every_node_agree(clean_environment):
    monkeypatch = clean_environment
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job42")
    names = {as_process(monkeypatch, LOCAL_RANK=str(rank % 2)) for rank in range(4)}  # 2 nodes x 2 processes
    assert names == {"torchrun-job42-0"}


def test_a_torchrun_restart_writes_a_new_folder(clean_environment):
    monkeypatch = clean_environment
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job42")
    first = as_process(monkeypatch)
    again = as_process(monkeypatch, TORCHELASTIC_RESTART_COUNT="1")
    assert first != again


def test_slurm_tasks_agree_and_a_single_task_keeps_the_clock(clean_environment):
    monkeypatch = clean_environment
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    assert as_process(monkeypatch) == as_process(monkeypatch, LOCAL_RANK="3") == "slurm-777-0"
    single = as_process(monkeypatch, SLURM_NTASKS="1")  # an interactive allocation: one process, a timestamp
    assert not single.startswith("slurm-")


def test_lightning_launcher_children_reuse_the_parent_timestamp(clean_environment):
    monkeypatch = clean_environment
    parent = shared_timestamp()  # publishes it in the environment the children inherit
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert shared_timestamp() == parent
