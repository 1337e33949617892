"""Claimed writes: after a command says it wrote a file, the file is there with what was promised; otherwise it
says it wrote nothing. Every writer (export, predict's CSV, report's plot, the sweep's best.yaml) meets every
destination that cannot take a new file — a symbolic link (dangling or not), a folder, a read-only folder, a
place under a file, /proc and /sys — and one that changes while the work runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml

from checkpoint_files import write_checkpoint
from conftest import assert_user_error, write_mnist_like
from digitlab.deploy.export import ExportNotWritten, new_file
from digitlab.errors import PredictionsNotWritten, UserError
from digitlab.models.lenet import LeNet5
from digitlab.report.plot import PlotNotWritten, check_plot_path, plot_val_acc
from digitlab.report.run import Run
from digitlab.sweep.results import BEST, write_results
from digitlab.training.callbacks.predictions import PredictionWriter, write_csv
from filesystems import tmpfs

PLACES = ["dangling link", "link to a file", "folder", "read-only folder", "under a file"]
OWN = b"the user's own file\n"


@contextlib.contextmanager
def destination(place: str, root: Path, name: str):
    """A path named `name` of the kind `place`, under `root`; yields it and what must stay as it was."""
    pointed = root / "pointed"
    notes = root / "notes.txt"
    notes.write_bytes(OWN)
    with contextlib.ExitStack() as stack:
        if place == "dangling link":
            path = root / name
            path.symlink_to(pointed)
        elif place == "link to a file":
            pointed.write_bytes(OWN)
            path = root / name
            path.symlink_to(pointed)
        elif place == "folder":
            path = root / name
            path.mkdir()
        elif place == "read-only folder":
            path = stack.enter_context(tmpfs(root / "locked", "ro")) / name
        else:
            path = notes / name
        yield path
        left = sorted(p.name for p in root.iterdir())
    assert notes.read_bytes() == OWN
    assert (pointed.read_bytes() == OWN) if place == "link to a file" else not os.path.lexists(pointed)
    if place in ("dangling link", "link to a file"):
        assert path.is_symlink()
    if place == "folder":
        assert path.is_dir() and not list(path.iterdir())
    assert not [name for name in left if name.startswith(".")]  # no temporary file left behind


# export -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("claimed-export")
    return write_checkpoint(folder / "lenet5.ckpt", "digitlab.models.lenet.LeNet5", LeNet5().state_dict())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_mnist_like(tmp_path_factory.mktemp("claimed-data"), train=20, test=20)


def export(digitlab_main, checkpoint: Path, data_dir: Path, output: str, cwd: Path):
    return digitlab_main("export", "--ckpt_path", str(checkpoint), "--format", "torchscript", "--output", output,
                         "--data.data_dir", str(data_dir), "--data.verify", "false", cwd=cwd)


def test_export_writes_what_it_announces(checkpoint, data_dir, tmp_path, digitlab_main):
    result = export(digitlab_main, checkpoint, data_dir, "model.pt", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Wrote model.pt" in result.stdout and (tmp_path / "model.pt").stat().st_size > 0


@pytest.mark.parametrize("place", PLACES)
def test_export_refuses_a_destination_up_front_and_claims_nothing(place, checkpoint, data_dir, tmp_path,
                                                                  digitlab_main):
    named = {"dangling link": "symbolic link", "link to a file": "symbolic link", "folder": "is a folder",
             "read-only folder": "read-only", "under a file": "notes.txt is a file, not a folder"}[place]
    with destination(place, tmp_path, "model.pt") as output:
        result = export(digitlab_main, checkpoint, data_dir, str(output), tmp_path)
    assert_user_error(result, f"--output {output}", named, "Nothing was written")
    assert "Wrote" not in result.stdout and "Checked" not in result.stdout
    if place == "folder":
        assert "never overwrites" not in result.stderr  # a folder is named as one, not as a file kept


@pytest.mark.parametrize("output", ["/proc/model.pt", "/proc/self/model.pt", "/sys/model.pt",
                                    "/sys/kernel/digitlab/model.pt"])
def test_export_under_proc_or_sys_is_refused_in_one_paragraph(output, checkpoint, data_dir, tmp_path,
                                                              digitlab_main):
    result = export(digitlab_main, checkpoint, data_dir, output, tmp_path)
    assert_user_error(result, f"--output {output}", "does not accept new files", "Nothing was written")
    assert "Wrote" not in result.stdout and not os.path.lexists(output)


@pytest.mark.parametrize("change", ["a dangling link", "a link to a file", "a file", "the folder a file"])
def test_a_destination_that_changes_during_the_export_fails_late_and_claims_nothing(change, tmp_path):
    target = tmp_path / "out" / "model.pt"
    (tmp_path / "elsewhere").write_bytes(OWN)
    with pytest.raises(ExportNotWritten) as refused:
        with new_file(target) as temporary:
            temporary.write_bytes(b"exported")
            if change == "a dangling link":
                target.symlink_to(tmp_path / "nowhere")
            elif change == "a link to a file":
                target.symlink_to(tmp_path / "elsewhere")
            elif change == "a file":
                target.write_bytes(OWN)
            else:
                temporary.unlink()
                target.parent.rmdir()
                target.parent.write_bytes(OWN)
    assert refused.value.exit_code == 1 and "Nothing was written" in str(refused.value)
    assert (tmp_path / "elsewhere").read_bytes() == OWN and not (tmp_path / "nowhere").exists()
    assert not [p for p in tmp_path.rglob(".*")]


# predict's CSV ----------------------------------------------------------------------------------------------

ROWS = [{"file": "a.png", "predicted": 3, "probability": "0.9000"}]


def test_the_csv_is_written_as_announced(tmp_path):
    PredictionWriter(csv=str(tmp_path / "p.csv"))  # accepted up front
    write_csv(tmp_path / "p.csv", ROWS)
    assert (tmp_path / "p.csv").read_text().splitlines() == ["file,predicted,probability", "a.png,3,0.9000"]


@pytest.mark.parametrize("place", PLACES)
def test_the_csv_destination_is_refused_before_predicting(place, tmp_path):
    with destination(place, tmp_path, "p.csv") as path:
        with pytest.raises(UserError, match=f"predictions.csv={path} .*(symbolic link|folder|read-only)"):
            PredictionWriter(csv=str(path))
        with pytest.raises(PredictionsNotWritten, match="could not be written"):  # and at the end, if it changed
            write_csv(path, ROWS)


# report --plot ----------------------------------------------------------------------------------------------

RUNS = [Run(version="version_0", model="lenet5", val_acc_curve=[(1, 0.5), (2, 0.7)])]


def test_the_plot_is_written_as_announced(tmp_path):
    plot_val_acc(RUNS, tmp_path / "val.png")
    assert (tmp_path / "val.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("place", PLACES)
def test_the_plot_destination_is_refused_before_reading_runs(place, tmp_path):
    with destination(place, tmp_path, "val.png") as path:
        with pytest.raises(UserError, match=f"--plot {path} .*(symbolic link|folder|read-only)") as refused:
            check_plot_path(path)
        assert refused.value.exit_code == 2
        with pytest.raises(UserError):
            plot_val_acc(RUNS, path)


@pytest.mark.parametrize("change", ["a dangling link", "a link to a file", "a read-only folder"])
def test_a_plot_whose_destination_changes_while_drawing_fails_late(change, tmp_path, monkeypatch):
    from digitlab.report import plot

    (tmp_path / "elsewhere").write_bytes(OWN)
    with tmpfs(tmp_path / "plots") as folder:
        path = folder / "val.png"
        draw = plot.val_acc_figure

        def draw_then_change(runs, where):
            figure = draw(runs, where)
            if change == "a read-only folder":
                subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            else:
                path.symlink_to(tmp_path / ("nowhere" if change == "a dangling link" else "elsewhere"))
            return figure

        monkeypatch.setattr(plot, "val_acc_figure", draw_then_change)
        with pytest.raises(PlotNotWritten, match="Nothing was written") as failed:
            plot_val_acc(RUNS, path)
        assert failed.value.exit_code == 1
        assert not path.is_file() or path.is_symlink()
        assert sorted(p.name for p in folder.iterdir()) == ([] if change == "a read-only folder" else ["val.png"])
    assert (tmp_path / "elsewhere").read_bytes() == OWN and not (tmp_path / "nowhere").exists()


# the sweep's best.yaml ---------------------------------------------------------------------------------------


@pytest.fixture
def study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="claims", direction="maximize")
    trial = study.ask()
    trial.set_user_attr("config", yaml.safe_dump({"model": {"class_path": "digitlab.models.lenet.LeNet5"}}))
    study.tell(trial, 0.9)
    return study


def test_best_yaml_is_written_as_announced(study, tmp_path):
    lines = write_results(study, tmp_path, "val/acc", True)
    assert f"{tmp_path / BEST}: trial 0's config" in lines[0]
    assert yaml.safe_load((tmp_path / BEST).read_text())["model"]["class_path"] == "digitlab.models.lenet.LeNet5"


@pytest.mark.parametrize("place", PLACES)
def test_best_yaml_that_cannot_be_written_is_said_not_written(place, study, tmp_path):
    with destination(place, tmp_path, BEST) as best:
        lines = write_results(study, best.parent, "val/acc", True)
    assert lines[0].startswith(f"{best}: not written, "), lines
    for line in lines[1:]:  # the pictures: whatever is announced is there
        assert ": not " in line or Path(line).is_file(), line
