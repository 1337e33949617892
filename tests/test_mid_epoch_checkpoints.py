"""``--last_checkpoint_every_n_steps``: last.ckpt also written every N training steps, and a run resumed from
such a mid-epoch checkpoint ends exactly as the uninterrupted run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from conftest import SMALL_RUN, write_mnist_like
from digitlab.errors import UserError
from digitlab.training.run import build_run, parse_run


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=200, test=40)  # 160 / 32: 5 steps an epoch


def args(data: Path, root: Path, *more: str) -> list[str]:
    return ["--model", "mlp", "--data.data_dir", str(data), *SMALL_RUN, "--seed_everything", "3",
            "--trainer.default_root_dir", str(root), "--trainer.max_epochs", "2", "--pictures", "false",
            "--test_after_fit", "false", *more]


class KeepLastAt(Callback):
    """Copies last.ckpt as it stands once `step` steps are done (before the next batch), and records the step of
    every checkpoint the run writes."""

    def __init__(self, step: int, copy: Path) -> None:
        self.step, self.copy, self.saved_at = step, copy, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            shutil.copyfile(Path(trainer.checkpoint_callback.dirpath) / "last.ckpt", self.copy)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved_at.append(trainer.global_step)


def weights(folder: Path) -> dict:
    return torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def test_last_is_written_every_n_steps_and_resumes_batch_exact(data, tmp_path, capsys):
    spy = KeepLastAt(6, tmp_path / "step6.ckpt")  # step 6: the second batch of the second epoch
    every = build_run(parse_run("fit", args(data, tmp_path, "--last_checkpoint_every_n_steps", "3")), callbacks=[spy])
    every.execute()
    assert spy.saved_at == [3, 5, 6, 9, 10]  # every 3 steps, and after every epoch (5 steps each)
    checkpoint = torch.load(spy.copy, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 6 and checkpoint["epoch"] == 1
    resumed = build_run(parse_run("fit", args(data, tmp_path, "--ckpt_path", str(spy.copy),
                                              "--trainer.enable_progress_bar", "true")))
    capsys.readouterr()
    resumed.execute()
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch 1 ")]
    assert float(line.split(" · ")[-1].removesuffix(" s")) < 600  # its part of the epoch, not the clock's origin
    ended, expected = weights(resumed.folder), weights(every.folder)
    assert ended.keys() == expected.keys()
    for name in expected:
        assert torch.equal(ended[name], expected[name]), name


def test_the_option_needs_a_last_checkpoint(data, tmp_path):
    with pytest.raises(UserError, match="writes no last.ckpt"):
        build_run(parse_run("fit", args(data, tmp_path, "--last_checkpoint_every_n_steps", "3",
                                        "--trainer.enable_checkpointing", "false")))
    with pytest.raises(UserError, match="last_checkpoint_every_n_steps"):
        parse_run("fit", args(data, tmp_path, "--last_checkpoint_every_n_steps", "-1"))
