"""What the manual promises about a run — its TensorBoard tags, hp_metric, hyperparameters, pictures and checkpoint
files — checked against real runs, so that README and docs/ stay true of the code."""

import re

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import REPO, write_mnist_like
from tensorboard_events import hparams, hparams_sessions, scalars

README = (REPO / "README.md").read_text()
RUNS_PAGE = (REPO / "docs" / "training-and-runs.md").read_text()  # the tag list, hp_metric, checkpoint files
PICTURES_PAGE = (REPO / "docs" / "pictures-and-reports.md").read_text()  # the pictures table
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


def documented_tags() -> set[str]:
    listed = re.search(r"<!-- tags:.*?-->(.*?)<!-- /tags -->", RUNS_PAGE, re.S).group(1)
    tags = set(re.findall(r"`([a-z_/0-9]+)`", listed))
    if "test/acc_class_0" in tags:  # written as `test/acc_class_0` … `test/acc_class_9`
        tags |= {f"test/acc_class_{k}" for k in range(10)}
    return tags


def test_the_manual_lists_exactly_the_scalar_tags_a_run_logs(runs):
    assert documented_tags() == set(scalars(runs / "version_0"))


def test_the_manual_pictures_table_matches_the_run(runs):
    table = PICTURES_PAGE[PICTURES_PAGE.index("| tag | what it shows | when |"):]
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
    sessions = hparams_sessions(runs / "version_0")
    experiments = [s.experiment for s in sessions if s.HasField("experiment")]
    starts = [s.session_start_info for s in sessions if s.HasField("session_start_info")]
    assert len(experiments) == 1 and len(starts) == 1  # written once, not again by the test after fit
    assert {m.name.tag for m in experiments[0].metric_infos} == {"hp_metric", "val/acc_best", "test/acc"}
    shown = hparams(runs / "version_0")
    # The few that tell runs apart; optimizer internals, paths and switches stay in config.yaml.
    assert shown["model"] == "lenet5" and shown["optimizer"] == "Adam" and shown["lr"] > 0, shown
    assert {"batch_size", "epochs", "seed"} <= shown.keys() and len(shown) <= 12, shown
    assert not {"_instantiator", "data_dir", "download", "eval_batch_size", "compile", "betas"} & shown.keys()


def test_checkpoint_files_are_those_the_manual_names(runs):
    assert "`best-epoch=NN.ckpt`" in RUNS_PAGE and "gets `last.ckpt` only" in RUNS_PAGE
    lenet = sorted(p.name for p in (runs / "version_0" / "checkpoints").iterdir())
    assert len(lenet) == 2 and "last.ckpt" in lenet and re.fullmatch(r"best-epoch=\d\d\.ckpt", min(lenet))
    assert sorted(p.name for p in (runs / "version_1" / "checkpoints").iterdir()) == ["last.ckpt"]


# -- README is a reference: short, every subcommand with an example, links that lead somewhere ------------------


def test_the_readme_stays_a_reference():
    assert len(README.splitlines()) <= 350


def test_the_readme_has_an_example_of_every_subcommand():
    from digitlab.cli import SUBCOMMANDS

    examples = "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S))
    missing = [name for name in SUBCOMMANDS if not re.search(rf"^digitlab {name}\b", examples, re.M)]
    assert not missing, f"README has no example of: {missing}"


def test_the_readme_and_the_manual_name_only_configs_and_pages_that_exist():
    texts = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in (REPO / "docs").glob("*.md")}}
    for name, text in texts.items():
        for config in re.findall(r"[\w./]*\bconfigs/[\w/]+\.yaml\b", text):
            known = (REPO / config).is_file() or (REPO / "examples" / "plugin" / config).is_file()
            assert known or config.startswith("configs/mynet"), f"{name}: {config}"
    for page in re.findall(r"\]\((docs/[\w-]+\.md)", README):
        assert (REPO / page).is_file(), page


def test_the_readme_lists_every_config_and_package_folder():
    layout = README[README.index("## Layout"):]
    configs = README[README.index("## Configs"):README.index("## Layout")]
    for path in sorted((REPO / "configs").iterdir()):
        assert f"  {path.name}" in configs, f"README's Configs section does not list configs/{path.name}"
    for path in sorted((REPO / "digitlab").iterdir()):
        if path.is_dir() and (path / "__init__.py").is_file():
            assert f"  {path.name}/" in layout, f"README's Layout section does not describe digitlab/{path.name}/"
