"""configs/debug/*.yaml: each runs with each shipped model config and leaves nothing behind; overfit learns."""

from pathlib import Path

import pytest
import yaml

from conftest import REPO, write_mnist_like
from lightning.pytorch import Callback

from digitlab.training import run

MODEL_CONFIGS = sorted(path.name for path in (REPO / "configs").glob("*.yaml"))
DEBUG_CONFIGS = sorted(path.name for path in (REPO / "configs" / "debug").glob("*.yaml"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("data"), train=100, test=20)


@pytest.fixture
def final_metrics(monkeypatch) -> dict[str, float]:
    """The trainer's metrics when fitting ends (`train/acc` is the last epoch's), read as the fit finishes."""
    metrics: dict[str, float] = {}

    class RecordWhenFitEnds(Callback):
        def on_fit_end(self, trainer, pl_module) -> None:
            metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})

    default_callbacks = run.default_callbacks
    monkeypatch.setattr(run, "default_callbacks", lambda: [*default_callbacks(), RecordWhenFitEnds()])
    return metrics


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns) for path in folder.rglob("*")}


def test_every_model_config_is_checked():
    assert {"centroid.yaml", "lenet5.yaml", "mlp.yaml"} <= set(MODEL_CONFIGS)
    assert DEBUG_CONFIGS == ["fast.yaml", "overfit.yaml", "profile.yaml"]


@pytest.mark.parametrize("model_config", MODEL_CONFIGS)
@pytest.mark.parametrize("debug_config", DEBUG_CONFIGS)
def test_a_debug_config_leaves_nothing_behind(tmp_path, data, digitlab_main, final_metrics, model_config,
                                              debug_config):
    work = tmp_path / "work"
    work.mkdir()
    data_before = snapshot(data)
    val_split = yaml.safe_load((REPO / "configs" / model_config).read_text())["data"]["val_split"]
    small_split = ["--data.val_split", "20"] if isinstance(val_split, int) and val_split > 20 else []
    result = digitlab_main(
        "fit", "--config", str(REPO / "configs" / model_config),
        "--config", str(REPO / "configs" / "debug" / debug_config),
        "--data.data_dir", str(data), "--data.verify", "false", "--data.download", "false", *small_split,
        "--trainer.enable_progress_bar", "false", cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(work.iterdir()) == []  # no run folder, checkpoint, config.yaml or profiler file
    assert snapshot(data) == data_before
    if debug_config == "profile.yaml":
        assert "FIT Profiler Report" in result.stderr + result.stdout
    # The centroid model logs no train/acc; mlp_seed's recipe (gradient descent at lr 1e-5) needs far more epochs.
    if debug_config == "overfit.yaml" and model_config not in ("centroid.yaml", "mlp_seed.yaml"):
        assert final_metrics["train/acc"] >= 0.95, final_metrics

