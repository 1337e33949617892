"""On CUDA GPUs: the data sets on the device, bf16-mixed, torch.compile, and DDP over every GPU with exact image
counts. Marked `gpu`, so skipped where CUDA is not available; `pytest -m gpu` (benchmarks/gpu_check.sh) runs
only these."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from conftest import REPO, run_digitlab, write_mnist_like
from digitlab.data import MNISTDataModule
from digitlab.models.lenet import LeNet5
from test_ddp import run_worker
from trainer_utils import quiet_trainer

pytestmark = pytest.mark.gpu

SMALL = ["--data.verify", "false", "--data.download", "false", "--data.val_split", "40", "--data.batch_size", "32",
         "--trainer.max_epochs", "4", "--model.init_args.lr_scheduler.init_args.T_max", "4",
         "--trainer.enable_progress_bar", "false"]


class BatchDevices(Callback):
    def __init__(self) -> None:
        self.seen: set[tuple[str, torch.dtype]] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.add((batch[0].device.type, batch[0].dtype))


def test_the_data_sets_live_on_the_gpu_and_batches_arrive_there_as_floats(synthetic_mnist):
    data = MNISTDataModule(str(synthetic_mnist), val_split=40, batch_size=32, verify=False, download=False)
    devices = BatchDevices()
    trainer = quiet_trainer(accelerator="gpu", devices=1, max_epochs=10, callbacks=[devices])
    model = LeNet5()
    trainer.fit(model, datamodule=data)
    assert data.train_set.images.device.type == "cuda" and data.val_set.images.device.type == "cuda"
    assert devices.seen == {("cuda", torch.float32)}
    (metrics,) = trainer.test(model, datamodule=data, verbose=False)
    assert metrics["test/images"] == 50 and metrics["test/acc"] >= 0.9


@pytest.mark.parametrize("options", [
    ("--trainer.precision", "bf16-mixed"),
    ("--model.init_args.compile", "true"),
    ("--trainer.precision", "bf16-mixed", "--model.init_args.compile", "true"),
], ids=["bf16", "compile", "bf16-and-compile"])
def test_the_gpu_overlay_with_bf16_or_compile_learns_and_saves_plain_float32_weights(tmp_path, synthetic_mnist,
                                                                                      options):
    result = run_digitlab("fit", "--config", str(REPO / "configs/lenet5_fast.yaml"),
                          "--config", str(REPO / "configs/trainer/gpu.yaml"), "--data.data_dir", str(synthetic_mnist),
                          *SMALL, *options, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split("Test accuracy:")[1].split()[0]) >= 0.9
    state = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    expected = LeNet5().state_dict()
    assert state.keys() == expected.keys()  # compiled or not, the same names (no `_orig_mod.`)
    assert all(state[k].dtype == expected[k].dtype == torch.float32 for k in expected)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 or more GPUs")
def test_ddp_on_every_gpu_counts_every_image_exactly_once(tmp_path):
    data = write_mnist_like(tmp_path / "uneven", train=199, test=53)  # multiples of neither 2 nor 3
    devices = torch.cuda.device_count()
    args = ("--model", "centroid", "--fit", "--val_split", "41", "--eval_batch_size", "16")
    single = run_worker(tmp_path, data, 1, *args, accelerator="gpu")[0]
    for rank in run_worker(tmp_path, data, devices, *args, accelerator="gpu"):
        assert torch.equal(rank["state"]["means"], single["state"]["means"])
        assert rank["state"]["counts"].sum() == 199 - 41
        assert rank["metrics"]["val/images"] == 41 and rank["metrics"]["test/images"] == 53
        assert rank["metrics"]["test/acc"] == single["metrics"]["test/acc"]
