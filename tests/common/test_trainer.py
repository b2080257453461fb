"""The trainer builder wires logging, checkpoints and the progress bar into the run folder."""

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from common.trainer import build_trainer


class _Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_index):
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), targets)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_index):
        inputs, targets = batch
        self.log("val/score", -torch.nn.functional.mse_loss(self.layer(inputs), targets))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_build_trainer_writes_checkpoints_and_tensorboard(tmp_path):
    data = TensorDataset(torch.randn(8, 2), torch.randn(8, 1))
    cfg = OmegaConf.create({"accelerator": "cpu", "devices": 1, "max_steps": 4, "log_every_n_steps": 1,
                            "enable_model_summary": False, "val_check_interval": 2})
    trainer = build_trainer(cfg, tmp_path, monitor="val/score", mode="max")
    trainer.fit(_Regression(), DataLoader(data, batch_size=2), DataLoader(data, batch_size=4))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert trainer.global_step == 4
