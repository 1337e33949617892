"""The same config and seed on CPU, run twice: bit-identical weights and test metrics, for the models trained by
gradient descent (the centroid's exact equality across runs and process counts: tests/test_two_nodes.py)."""

import pytest
import torch

from conftest import run_digitlab


@pytest.mark.parametrize("model", ["mlp", "lenet5"])
@pytest.mark.console_script
def test_two_runs_are_bit_identical(tmp_path, synthetic_mnist, model):
    outputs, states = [], []
    for run in ("first", "second"):
        folder = tmp_path / run
        folder.mkdir()
        result = run_digitlab(
            "fit", "--model", model, "--seed_everything", "123", "--trainer.deterministic", "true",
            "--data.data_dir", str(synthetic_mnist), "--data.verify", "false", "--data.val_split", "40",
            "--data.batch_size", "16", "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
            cwd=folder,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result.stdout[result.stdout.index("Test accuracy"):])  # accuracy, loss, each class
        [checkpoint] = folder.glob("lightning_logs/version_0/checkpoints/*.ckpt")
        states.append(torch.load(checkpoint, weights_only=True)["state_dict"])
    assert outputs[0] == outputs[1]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
