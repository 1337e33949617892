"""What README promises about a run — its TensorBoard tags, hp_metric, hyperparameters, pictures and checkpoint
files — checked against real runs, so that the README stays true of the code."""

import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import REPO, write_mnist_like
from tensorboard_events import scalars

README = (REPO / "README.md").read_text()
SMALL = ["--data.verify", "false", "--data.val_split", "40", "--data.batch_size", "32", "--data.download", "false",
         "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 3-epoch fit of configs/lenet5.yaml (test after fit included) and a 1-epoch fit of centroid.yaml."""
    from digitlab.cli import main

    cwd = tmp_path_factory.mktemp("runs")
    data = write_mnist_like(cwd / "data", train=200, test=50)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setenv("DIGITLAB_DISABLE_PLUGINS", "1")
        for config, epochs in (("lenet5", "3"), ("centroid", "1")):
            main(["fit", "--config", str(REPO / "configs" / f"{config}.yaml"), "--data.data_dir", str(data), *SMALL,
                  "--trainer.max_epochs", epochs] + (["--data.val_split", "0"] if config == "centroid" else []))
    return cwd / "lightning_logs"


def readme_tags() -> set[str]:
    listed = re.search(r"<!-- tags:.*?-->(.*?)<!-- /tags -->", README, re.S).group(1)
    tags = set(re.findall(r"`([a-z_/0-9]+)`", listed))
    if "test/acc_class_0" in tags:  # written as `test/acc_class_0` … `test/acc_class_9`
        tags |= {f"test/acc_class_{k}" for k in range(10)}
    return tags


def test_the_readme_lists_exactly_the_scalar_tags_a_run_logs(runs):
    assert readme_tags() == set(scalars(runs / "version_0"))


def test_the_readme_pictures_table_matches_the_run(runs):
    table = README[README.index("| tag | what it shows | when |"):]
    listed = set(re.findall(r"^\| `([a-z_/]+)` \|", table[:table.index("\n\n")], re.M))
    logged = set()
    for events in (runs / "version_0").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"images": 1})
        accumulator.Reload()
        logged |= set(accumulator.Tags()["images"])
    assert listed == logged


def test_hp_metric_is_the_best_val_acc_then_the_test_acc_on_one_time_line(runs):
    run = runs / "version_0"
    steps, values = [], []
    for events in sorted(run.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if "hp_metric" in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars("hp_metric"):
                steps.append(event.step)
                values.append(event.value)
    logged = scalars(run)
    assert -1 not in values
    assert values == logged["val/acc_best"] + logged["test/acc"]  # three epochs, then the test
    assert steps == sorted(steps)  # the test's value comes after the fit's, not back at step 0


def test_the_hparams_tab_names_the_model_and_its_metrics(runs):
    sessions = []
    for events in (runs / "version_0").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        try:
            contents = accumulator.PluginTagToContent("hparams").values()
        except KeyError:  # this events file holds no hyperparameters
            continue
        for content in contents:
            sessions.append(plugin_data_pb2.HParamsPluginData.FromString(content))
    experiments = [s.experiment for s in sessions if s.HasField("experiment")]
    starts = [s.session_start_info for s in sessions if s.HasField("session_start_info")]
    assert len(experiments) == 1 and len(starts) == 1  # written once, not again by the test after fit
    assert {m.name.tag for m in experiments[0].metric_infos} == {"hp_metric", "val/acc_best", "test/acc"}
    hparams = starts[0].hparams
    assert hparams["model"].string_value == "lenet5" and "_instantiator" not in hparams


def test_checkpoint_files_are_those_the_readme_names(runs):
    assert "`best-epoch=NN.ckpt`" in README and "gets `last.ckpt` only" in README
    lenet = sorted(p.name for p in (runs / "version_0" / "checkpoints").iterdir())
    assert len(lenet) == 2 and "last.ckpt" in lenet and re.fullmatch(r"best-epoch=\d\d\.ckpt", min(lenet))
    assert sorted(p.name for p in (runs / "version_1" / "checkpoints").iterdir()) == ["last.ckpt"]
