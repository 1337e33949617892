"""`digitlab report` on real runs of the three built-in models, checked against their event files."""

import csv
import gzip
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import assert_user_error, digitlab_here, run_digitlab, write_mnist_like
from digitlab.errors import SkippedFileWarning
from digitlab.models.centroid import NearestCentroid
from digitlab.models.lenet import LeNet5
from digitlab.models.mlp import ScratchMLP
from digitlab.report.command import report_command
from digitlab.report.plot import val_acc_figure
from digitlab.report.reading import load_runs
from digitlab.report.table import sort_runs
from tensorboard_events import scalars

MODELS = {"centroid": NearestCentroid, "mlp": ScratchMLP, "lenet5": LeNet5}
LR = {"NearestCentroid": "", "ScratchMLP": "0.05", "LeNet5": "0.001"}  # the models' defaults


def files(folder: Path) -> dict[Path, float]:
    return {path: path.stat().st_mtime for path in folder.rglob("*")}


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    """lightning_logs/version_0..2: one epoch of centroid, mlp and lenet5 on synthetic data."""
    data = write_mnist_like(tmp_path_factory.mktemp("data"))
    cwd = tmp_path_factory.mktemp("runs")
    for name in MODELS:
        result = digitlab_here(
            "fit", "--model", name, "--data.data_dir", str(data), "--data.verify", "false", "--data.val_split",
            "40", "--data.batch_size", "32", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
            "--pictures", "false", cwd=cwd,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "lightning_logs"


def test_csv_holds_the_values_of_the_event_files(logs, digitlab_main):
    before = files(logs)
    result = digitlab_main("report", str(logs), "--format", "csv", cwd=logs.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["version"] for row in rows] and {row["version"] for row in rows} == {
        "version_0", "version_1", "version_2"}
    for row in rows:
        logged = scalars(logs / row["version"])
        model = {cls.__name__: cls for cls in MODELS.values()}[row["model"]]
        assert float(row["test_acc"]) == logged["test/acc"][-1]
        assert float(row["best_val_acc"]) == max(logged["val/acc"]) == logged["val/acc_best"][-1]
        assert row["lr"] == LR[row["model"]]
        assert row["batch_size"] == "32" and row["epochs"] == "1"
        assert int(row["params"]) == sum(value.numel() for value in model().state_dict().values())
        assert 0 < float(row["wall_time_s"]) < 600
    accuracies = [float(row["test_acc"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # best first by default
    assert files(logs) == before  # the runs are read, never written


def test_table_markdown_and_plot(logs, capsys, tmp_path):
    report_command([str(logs), "--sort", "version"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["version", "kind", "checkpoint", "model"]
    assert "test/acc" in table[0] and "params" in table[0]
    assert [line.split()[:4] for line in table[1:]] == [
        ["version_0", "fit", "—", "NearestCentroid"], ["version_1", "fit", "—", "ScratchMLP"],
        ["version_2", "fit", "—", "LeNet5"]]
    assert "60,074" in table[3]  # LeNet-5's parameter count

    report_command([str(logs / "version_2"), "--format", "markdown", "--plot", str(tmp_path / "val.png")])
    output = capsys.readouterr()
    lines = output.out.splitlines()
    assert lines[0].startswith("| version | kind | checkpoint | model |")
    assert lines[1].startswith("| --- | --- | --- | --- | ---: |")
    assert lines[2].startswith("| version_2 | fit | — | LeNet5 | 0.001 | 32 | 1 |") and len(lines) == 3
    assert (tmp_path / "val.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "val.png" in output.err


@pytest.mark.slow  # a new interpreter, to see what `report` imports
def test_report_does_without_lightning(logs):
    """`digitlab report` starts in a fraction of the other commands' time: Lightning takes seconds to import."""
    heavy = {"lightning", "pytorch_lightning", "torchmetrics", "torchvision", "matplotlib"}
    code = f"import sys; from digitlab.cli import main; main(sys.argv[1:]); print(sorted({heavy!r} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code, "report", str(logs)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_a_folder_without_runs_is_a_user_error(tmp_path, make, digitlab_main):
    folder = tmp_path / "logs"
    if make == "empty":
        (folder / "version_0").mkdir(parents=True)
    result = digitlab_main("report", str(folder), cwd=tmp_path)
    assert_user_error(result, str(folder), "lightning_logs" if make == "missing" else "No runs")


@pytest.fixture
def copied_logs(logs, tmp_path) -> Path:
    """A copy of the three runs, to damage."""
    return Path(shutil.copytree(logs, tmp_path / "lightning_logs"))


def report_csv(digitlab_main, logs: Path, *args: str):
    result = digitlab_main("report", str(logs), "--format", "csv", "--sort", "version", *args, cwd=logs.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return {row["version"]: row for row in csv.DictReader(io.StringIO(result.stdout))}


@pytest.mark.parametrize(
    "content, why",
    [
        (b"model: [lenet5\ndata: {batch_size: 3\n", "not a readable config (it is not valid YAML (line 2, column 5): while parsing"),
        (b"model: !!python/object/apply:os.system [echo hacked]\n", "not a readable config (it is not valid YAML (line 1, column 8): could not determine"),
        (b"- model\n- data\n", "the config is ['model', 'data'], not a mapping of settings"),
        (b"model: 3\n", "its model section is 3, not a mapping of settings"),
        (b"model: digitlab.models.lenet.LeNet5\ndata: [1]\n", "its data section is [1], not a mapping of settings"),
        (b"model:\n  init_args:\n    lr: fast\n", "its lr is not a number: 'fast'"),
        (gzip.compress(b"model: lenet5\n"), "not a readable config (it is not UTF-8 text (byte 0x8b"),
    ],
    ids=["not YAML", "python tag", "a list", "model: 3", "data: [1]", "lr: fast", "binary"],
)
def test_a_config_that_is_not_one_blanks_its_run_columns_with_a_warning(copied_logs, digitlab_main, content, why):
    config = copied_logs / "version_1" / "config.yaml"
    config.write_bytes(content)
    with pytest.warns(SkippedFileWarning) as warned:
        rows = report_csv(digitlab_main, copied_logs)
    [message] = [str(warning.message) for warning in warned if warning.category is SkippedFileWarning]
    assert message.startswith(f"{config}: {why}") and message.endswith("; its model, lr and batch size are left blank")
    assert [rows["version_1"][key] for key in ("model", "lr", "batch_size")] == ["", "", ""]
    assert rows["version_1"]["test_acc"] and rows["version_1"]["params"]  # the rest of the run is reported
    assert [rows[version]["model"] for version in ("version_0", "version_2")] == ["NearestCentroid", "LeNet5"]


def test_a_learning_rate_that_yaml_reads_as_text_is_a_number(copied_logs, digitlab_main):
    config = copied_logs / "version_2" / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.001", "lr: 1e-3"))
    assert "lr: 1e-3" in config.read_text()
    assert report_csv(digitlab_main, copied_logs, "--sort", "lr")["version_2"]["lr"] == "0.001"


@pytest.mark.console_script
def test_fifos_named_like_run_files_are_not_read(copied_logs):
    os.mkfifo(copied_logs / "version_0" / "events.out.tfevents.0.fifo")
    os.mkfifo(copied_logs / "version_0" / "checkpoints" / "waiting.ckpt")
    os.mkfifo(copied_logs / "version_1" / "config.yaml.fifo")
    result = run_digitlab("report", str(copied_logs), cwd=copied_logs.parent, timeout=120)  # a read would hang
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) == 4 and "60,074" in result.stdout


@pytest.mark.parametrize(
    "name, named",
    [("taken.png", "already exists"), ("plots", "is a folder"), ("curves.bmp", "'.bmp' is not an image format"),
     ("curves", "the name has no extension")],
)
def test_a_plot_that_cannot_be_a_new_image_is_refused(logs, tmp_path, digitlab_main, name, named):
    (tmp_path / "taken.png").write_bytes(b"the user's own picture")
    (tmp_path / "plots").mkdir()
    result = digitlab_main("report", str(logs), "--plot", name, cwd=tmp_path)
    assert_user_error(result, f"--plot {name}", named)
    if "extension" in named or "format" in named:
        assert ".png, " in result.stderr and ".svg, " in result.stderr  # the formats matplotlib writes
    assert result.stdout == ""  # refused before any run is read
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plots", "taken.png"]
    assert (tmp_path / "taken.png").read_bytes() == b"the user's own picture" and not list((tmp_path / "plots").iterdir())


def in_groups(rows: list[dict]) -> bool:
    """Whether each evaluation row (version_N/test_K) comes right after its run or that run's other evaluations."""
    runs = [row["version"].split("/")[0] for row in rows]
    return all(row["version"].count("/") == 0 or runs[i - 1] == runs[i] for i, row in enumerate(rows))


def test_evaluations_are_rows_of_their_own_below_the_run_they_evaluate(copied_logs, digitlab_main):
    for subcommand, run in (("test", "version_2"), ("validate", "version_1"), ("predict", "version_0")):
        result = digitlab_main(subcommand, "--ckpt_path", str(copied_logs / run / "checkpoints" / "last.ckpt"),
                               "--trainer.enable_progress_bar", "false", cwd=copied_logs.parent)
        assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(io.StringIO(digitlab_main("report", str(copied_logs), "--format", "csv",
                                                          cwd=copied_logs.parent).stdout)))
    assert len(rows) == 5 and in_groups(rows)  # a predict logs nothing: no row, no folder
    assert not list(copied_logs.glob("version_0/predict_*"))
    by_version = {row["version"]: row for row in rows}
    for version in ("version_0", "version_1", "version_2"):
        assert by_version[version]["kind"] == "fit" and by_version[version]["checkpoint"] == ""

    tested = by_version["version_2/test_0"]
    assert (tested["kind"], tested["checkpoint"], tested["model"]) == ("test", "last.ckpt", "LeNet5")
    assert float(tested["test_acc"]) == scalars(copied_logs / "version_2" / "test_0")["test/acc"][-1]
    assert tested["best_val_acc"] == "" and tested["epochs"] == "1" and tested["params"] == "60074"

    validated = by_version["version_1/validate_0"]
    assert [validated[key] for key in ("kind", "checkpoint", "model")] == ["validate", "last.ckpt", "ScratchMLP"]
    assert float(validated["best_val_acc"]) == scalars(copied_logs / "version_1" / "validate_0")["val/acc"][-1]
    assert validated["test_acc"] == ""

    (copied_logs / "version_0" / "predict_0").mkdir()  # as earlier versions logged a predict: still no row
    (copied_logs / "version_0" / "predict_0" / "events.out.tfevents.1.host").write_bytes(b"")
    table = digitlab_main("report", str(copied_logs), "--sort", "version", cwd=copied_logs.parent).stdout
    assert [line.split()[:3] for line in table.splitlines()[1:]] == [
        ["version_0", "fit", "—"],
        ["version_1", "fit", "—"], ["version_1/validate_0", "validate", "last.ckpt"],
        ["version_2", "fit", "—"], ["version_2/test_0", "test", "last.ckpt"]]

    figure = val_acc_figure(sort_runs(load_runs([copied_logs]), "test_acc"), Path("val.png"))
    assert sorted(line.get_label() for line in figure.axes[0].get_lines()) == [  # validate_0 is no lone dot
        "version_0 (NearestCentroid)", "version_1 (ScratchMLP)", "version_2 (LeNet5)"]


def test_a_run_logged_by_the_csv_logger_alone_is_reported_like_the_others(tmp_path, digitlab_main):
    data = write_mnist_like(tmp_path / "data")
    config = tmp_path / "csv_logger.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"logger": {
        "class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "."}}}}))
    result = digitlab_main("fit", "--config", str(config), "--model", "mlp", "--data.data_dir", str(data),
                           "--data.verify", "false", "--data.val_split", "40", "--data.batch_size", "32",
                           "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    result = digitlab_main("test", "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(run.rglob("events.out.tfevents.*"))

    result = digitlab_main("report", "--format", "csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    fitted, tested = csv.DictReader(io.StringIO(result.stdout))
    logged = list(csv.DictReader((run / "metrics.csv").open()))
    val_acc = [float(row["val/acc"]) for row in logged if row["val/acc"]]
    assert len(val_acc) == 2 and float(fitted["best_val_acc"]) == max(val_acc)
    assert float(fitted["test_acc"]) == float([row["test/acc"] for row in logged if row["test/acc"]][-1])
    assert [fitted[key] for key in ("version", "kind", "model", "lr")] == ["version_0", "fit", "ScratchMLP", "0.05"]
    assert fitted["batch_size"] == "32" and fitted["epochs"] == "2" and fitted["params"] == "55050"
    assert 0 < float(fitted["wall_time_s"]) < 600
    [evaluation] = csv.DictReader((run / "test_0" / "metrics.csv").open())
    assert (tested["version"], tested["kind"], tested["checkpoint"]) == ("version_0/test_0", "test", "last.ckpt")
    assert float(tested["test_acc"]) == float(evaluation["test/acc"])

    figure = val_acc_figure(load_runs([tmp_path / "lightning_logs"]), Path("val.png"))
    [line] = figure.axes[0].get_lines()
    assert list(line.get_xdata()) == [0, 1] and list(line.get_ydata()) == val_acc  # epochs as Lightning counts
