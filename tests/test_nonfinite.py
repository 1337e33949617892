"""A loss that turns NaN stops the run with a message naming epoch and step; the last good checkpoint stays."""

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import assert_user_error
from digitlab.training.callbacks import StopOnNonFiniteLoss
from digitlab.data import MNISTDataModule
from digitlab.errors import TrainingDiverged
from digitlab.models.lenet import LeNet5
from trainer_utils import quiet_trainer


class DivergesAtStep(LeNet5):
    def __init__(self, step: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.diverge_at = step

    def loss(self, logits, targets):
        loss = super().loss(logits, targets)
        return loss * float("nan") if self.global_step >= self.diverge_at else loss


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, synthetic_mnist):
    data = MNISTDataModule(str(synthetic_mnist), download=False, verify=False, val_split=0, batch_size=50)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = quiet_trainer(max_epochs=5, log_every_n_steps=1, enable_checkpointing=True,
                            callbacks=[checkpoint, StopOnNonFiniteLoss()])
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step 6"):
        trainer.fit(DivergesAtStep(step=5), datamodule=data)  # 4 steps an epoch: NaN from the 6th step on
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(weight).all() for weight in last["state_dict"].values())


def test_the_command_reports_divergence_without_a_traceback(tmp_path, synthetic_mnist, digitlab_main):
    result = digitlab_main(
        "fit", "--model", "mlp", "--model.lr", "1e6", "--model.momentum", "0.9", "--data.data_dir",
        str(synthetic_mnist), "--data.verify", "false", "--data.val_split", "0", "--trainer.max_epochs", "3",
        "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false", cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "training loss became" in result.stderr and "at epoch" in result.stderr and "step" in result.stderr
    for checkpoint in tmp_path.glob("lightning_logs/version_0/checkpoints/*.ckpt"):  # only good ones
        state = torch.load(checkpoint, weights_only=True)["state_dict"]
        assert all(torch.isfinite(weight).all() for weight in state.values()), checkpoint.name
