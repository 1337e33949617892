"""Model plugins: packages with real distribution metadata (a ``*.dist-info`` folder), put on the path at
test time, found through the entry-point group ``digitlab.models``. The CLI tests run the `digitlab` command
as a user does; the in-process tests run discovery again on a copy of the registry."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import yaml

from conftest import REPO, assert_user_error, run_digitlab
from digitlab.models import registry
from digitlab.cli import format_argument, main
from digitlab.models.arguments import init_arguments
from digitlab.errors import DuplicateModelError, PluginWarning, UserError
from digitlab.models import DigitModel
from digitlab.models.lenet import LeNet5
from test_cli import QUIET, SYNTHETIC

EXAMPLE = REPO / "examples" / "plugin"

GOOD = '''
from torch import nn

from digitlab.models import DigitModel


class PlugNet(DigitModel):
    """A two-layer perceptron from a test plugin.

    Args:
        width: Hidden units of the test plugin's perceptron.
    """

    def __init__(self, width: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        print(f"PlugNet built with width={width}")
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, self.num_classes))

    def forward(self, x):
        return self.net(x)
'''

TWIN = '''
from dlplug_good import PlugNet


class Twin(PlugNet):
    """Another model that wants the name plugnet."""
'''


def write_distribution(site: Path, name: str, entry_points: dict[str, str], modules: dict | None = None) -> Path:
    """Modules and a ``NAME-1.0.dist-info`` folder (METADATA, entry_points.txt) in `site`, as pip leaves them."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}")
    return site


def plugins_on(*paths: Path) -> dict[str, str]:
    """Environment for a subprocess that sees the plugins in `paths` (conftest's default turns them off)."""
    return {"DIGITLAB_DISABLE_PLUGINS": "0", "PYTHONPATH": os.pathsep.join(map(str, paths))}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A folder holding the distribution 'digitlab-goodplug', whose entry point `plugnet` is `PlugNet`."""
    return write_distribution(tmp_path / "site", "digitlab-goodplug", {"plugnet": "dlplug_good:PlugNet"},
                              {"dlplug_good": GOOD})


def add_broken_distribution(site: Path) -> None:
    write_distribution(
        site, "digitlab-brokenplug", {"crashy": "dlplug_crashy:Net", "plain": "dlplug_plain:NotAModel"},
        {"dlplug_crashy": "raise RuntimeError('boom at import')\n", "dlplug_plain": "class NotAModel:\n    pass\n"},
    )


# -- the `digitlab` command ------------------------------------------------------------------------


@pytest.mark.console_script
def test_models_lists_a_plugin_with_its_package(tmp_path, site):
    result = run_digitlab("models", cwd=tmp_path, env=plugins_on(site))
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("plugnet "))
    assert line.split() == ["plugnet", "dlplug_good.PlugNet", "digitlab-goodplug", *"A two-layer perceptron from a "
                            "test plugin.".split()]
    assert "built-in" in next(line for line in result.stdout.splitlines() if line.startswith("lenet5 "))
    assert "width" not in result.stdout  # init arguments only with --verbose
    assert "warning" not in result.stderr


@pytest.mark.console_script
def test_models_verbose_shows_init_arguments_with_defaults(tmp_path, site):
    result = run_digitlab("models", "--verbose", cwd=tmp_path, env=plugins_on(site))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()

    def arguments_of(name: str) -> list[str]:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{name} ")) + 1
        end = next(i for i in range(start, len(lines)) if not lines[i].startswith("    "))
        return [line.strip() for line in lines[start:end]]

    assert arguments_of("plugnet") == [
        "width: int = 8",
        "optimizer: OptimizerCallable = torch.optim.adam.Adam",
        "lr_scheduler: Optional[LRSchedulerCallable] = None",
        "num_classes: int = 10",
        "compile: bool = False",
    ]
    # LeNet5 has one argument of its own, then the base class's through **kwargs
    assert arguments_of("lenet5") == ["standardize: bool = False", *arguments_of("plugnet")[1:]]


@pytest.mark.console_script
def test_fit_trains_a_plugin_model_by_its_name(tmp_path, site, synthetic_mnist):
    result = run_digitlab(
        "fit", "--model", "plugnet", "--model.width", "6", "--data.data_dir", str(synthetic_mnist), *SYNTHETIC,
        *QUIET, "--trainer.fast_dev_run", "true", cwd=tmp_path, env=plugins_on(site),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PlugNet built with width=6" in result.stdout
    assert "Test accuracy:" in result.stdout


@pytest.mark.console_script
def test_model_help_describes_a_plugins_arguments(tmp_path, site):
    result = run_digitlab("fit", "--model.help", "plugnet", cwd=tmp_path, env=plugins_on(site))
    assert result.returncode == 0, result.stderr
    assert "--model.width" in result.stdout and "Hidden units of the test plugin" in result.stdout
    assert "--model.num_classes" in result.stdout  # DigitModel's, through **kwargs


@pytest.mark.console_script
def test_yaml_config_names_a_plugin_model(tmp_path, site):
    config = tmp_path / "plugin.yaml"
    config.write_text("model:\n  class_path: plugnet\n  init_args:\n    width: 5\n")
    result = run_digitlab("fit", "--config", str(config), "--print_config", cwd=tmp_path, env=plugins_on(site))
    assert result.returncode == 0, result.stderr
    model = yaml.safe_load(result.stdout)["model"]
    assert model["class_path"] == "dlplug_good.PlugNet"
    assert model["init_args"]["width"] == 5


@pytest.mark.console_script
def test_a_broken_plugin_is_one_warning_and_the_rest_works(tmp_path, site):
    add_broken_distribution(site)
    result = run_digitlab("fit", "--help", cwd=tmp_path, env=plugins_on(site))
    assert result.returncode == 0, result.stderr
    assert "dlplug_good.PlugNet" in result.stdout  # a known subclass of DigitModel: discovered before parsing
    assert "Traceback" not in result.stderr
    warnings_ = [line for line in result.stderr.splitlines() if line.startswith("digitlab: warning:")]
    assert len(warnings_) == 2, result.stderr  # once each: discovery runs once per process
    crashy, plain = sorted(warnings_)
    for fragment in ("'crashy'", "dlplug_crashy:Net", "'digitlab-brokenplug'", "RuntimeError: boom at import"):
        assert fragment in crashy
    for fragment in ("'plain'", "'digitlab-brokenplug'", "NotAModel is not a subclass of digitlab.models.DigitModel"):
        assert fragment in plain


@pytest.mark.console_script
def test_two_packages_claiming_one_name_is_an_error_naming_both(tmp_path, site):
    write_distribution(site, "digitlab-twin", {"plugnet": "dlplug_twin:Twin"}, {"dlplug_twin": TWIN})
    result = run_digitlab("models", cwd=tmp_path, env=plugins_on(site))
    assert_user_error(result, "'plugnet'", "dlplug_good.PlugNet", "dlplug_twin.Twin", "'digitlab-goodplug'",
                      "'digitlab-twin'")


@pytest.mark.console_script
def test_disable_switch_skips_all_plugins(tmp_path, site):
    add_broken_distribution(site)
    result = run_digitlab("models", cwd=tmp_path, env={**plugins_on(site), "DIGITLAB_DISABLE_PLUGINS": "1"})
    assert result.returncode == 0, result.stderr
    assert "lenet5" in result.stdout
    assert "plugnet" not in result.stdout and "warning" not in result.stderr


# -- the example plugin in examples/plugin ---------------------------------------------------------


@pytest.fixture
def example_site(tmp_path: Path) -> list[Path]:
    """examples/plugin's package and, in a temporary folder, the metadata `pip install` writes from its
    pyproject.toml (name and entry points)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    entry_points = project["entry-points"][registry.ENTRY_POINT_GROUP]
    return [EXAMPLE, write_distribution(tmp_path / "metadata", project["name"], entry_points)]


@pytest.mark.console_script
def test_the_example_plugin_trains_from_its_config(tmp_path, example_site, synthetic_mnist):
    result = run_digitlab(
        "fit", "--config", str(EXAMPLE / "configs" / "tinycnn.yaml"), "--data.data_dir", str(synthetic_mnist),
        *SYNTHETIC, *QUIET, "--trainer.max_epochs", "1", cwd=tmp_path, env=plugins_on(*example_site),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy:" in result.stdout
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "digitlab_tinycnn.model.TinyCNN"
    assert saved["model"]["init_args"]["channels"] == 8


@pytest.mark.slow  # pytest in a new process, on the example plugin's own tests
def test_the_example_plugins_own_tests_pass(tmp_path, example_site):
    env = {k: v for k, v in os.environ.items() if k != "DIGITLAB_DATA_DIR"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(EXAMPLE / "tests"), "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path, env={**env, **plugins_on(*example_site)}, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "passed" in result.stdout and "skipped" not in result.stdout


# -- discovery in this process ---------------------------------------------------------------------


@pytest.fixture
def install(monkeypatch, tmp_path):
    """`install(name, entry_points, modules)` puts a distribution on sys.path; then `discover_models()` runs
    discovery again on a copy of the registry (built-ins kept), restored after the test."""
    registry.discover_models()
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.delenv(registry.DISABLE_PLUGINS_ENV, raising=False)
    site = tmp_path / "inprocess"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install_(name: str, entry_points: dict[str, str], modules: dict[str, str] | None = None) -> Path:
        write_distribution(site, name, entry_points, modules)
        importlib.invalidate_caches()
        return site

    yield install_
    for module in [name for name in sys.modules if "dlplug_" in name]:
        del sys.modules[module]


def discover_with_warnings() -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry.discover_models()
    return [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]


def registered_model(name: str, cls: str) -> str:
    """The source of a module that defines the model `cls` and registers it as `name` with `@register_model`."""
    return f'''
        from digitlab.models import DigitModel
        from digitlab.models.registry import register_model

        @register_model("{name}")
        class {cls}(DigitModel):
            """A model in a module of its own."""

            def forward(self, x):
                return x.flatten(1)[:, :10]
    '''


def test_a_plugin_class_that_also_registers_itself_is_not_its_own_duplicate(install):
    source = registered_model("SelfNet", "SelfNet")
    install("digitlab-selfnet", {"selfnet": "dlplug_selfnet:SelfNet"}, {"dlplug_selfnet": source})
    assert discover_with_warnings() == []
    entry = registry.get_model_entry("selfnet")
    assert (entry.class_path, entry.source) == ("dlplug_selfnet.SelfNet", "digitlab-selfnet")


def test_entry_points_to_anything_but_a_usable_model_are_skipped_with_a_warning(install):
    source = '''
        from digitlab.models import DigitModel

        class NotAModel:
            pass

        def build():
            pass

        class NoForward(DigitModel):
            pass
    '''
    entry_points = {"plain": "dlplug_odd:NotAModel", "func": "dlplug_odd:build", "abstract": "dlplug_odd:NoForward"}
    install("digitlab-odd", entry_points, {"dlplug_odd": source})
    messages = sorted(discover_with_warnings())
    assert len(messages) == 3, messages
    assert "'abstract'" in messages[0] and "NoForward is abstract: it does not implement forward" in messages[0]
    assert "'func'" in messages[1]
    assert "build is not a subclass of digitlab.models.DigitModel (it is a function)" in messages[1]
    assert "'plain'" in messages[2] and "NotAModel is not a subclass of digitlab.models.DigitModel" in messages[2]
    assert not {"plain", "func", "abstract"} & set(registry.list_models())


def test_a_plugin_that_fails_half_way_leaves_nothing_registered(install):
    source = registered_model("halfway", "Halfway") + "\n        raise ImportError('needs the package foo')\n"
    install("digitlab-halfway", {"halfway": "dlplug_halfway:Halfway"}, {"dlplug_halfway": source})
    (message,) = discover_with_warnings()
    assert "'halfway'" in message and "'digitlab-halfway'" in message
    assert "ImportError: needs the package foo" in message
    assert "halfway" not in registry.list_models()
    assert "lenet5" in registry.list_models()


def test_a_plugin_cannot_take_a_built_in_name(install):
    source = '''
        from digitlab.models.lenet import LeNet5

        class Clash(LeNet5):
            pass
    '''
    install("digitlab-clash", {"LeNet5": "dlplug_clash:Clash"}, {"dlplug_clash": source})
    with pytest.raises(DuplicateModelError) as error:
        registry.discover_models()
    message = str(error.value)
    assert "'lenet5'" in message
    assert "digitlab.models.lenet.LeNet5 from digitlab (built-in)" in message
    assert "dlplug_clash.Clash from the package 'digitlab-clash'" in message


def test_a_new_file_in_digitlab_models_is_all_an_in_tree_model_needs(install, monkeypatch, tmp_path):
    import digitlab.models

    folder = tmp_path / "more_models"
    folder.mkdir()
    (folder / "dlplug_newnet.py").write_text(textwrap.dedent(registered_model("newnet", "NewNet")))
    monkeypatch.setattr(digitlab.models, "__path__", [*digitlab.models.__path__, str(folder)])
    registry.discover_models()
    entry = registry.get_model_entry("newnet")
    assert (entry.class_path, entry.source) == ("digitlab.models.dlplug_newnet.NewNet", "built-in")


# -- init arguments (`digitlab models --verbose`) --------------------------------------------------


def test_init_arguments_follow_kwargs_up_to_digit_model():
    class Base(DigitModel):
        def __init__(self, width: int = 8, **kwargs) -> None:
            super().__init__(**kwargs)

    class Child(Base):
        def __init__(self, depth: int = 2, width: int = 16, **kwargs) -> None:
            super().__init__(width=width, **kwargs)

    class Closed(DigitModel):
        def __init__(self, size: int = 3) -> None:
            super().__init__(num_classes=10)

    assert [format_argument(p) for p in init_arguments(Child)][:2] == ["depth: int = 2", "width: int = 16"]
    assert [p.name for p in init_arguments(Child)] == ["depth", "width", "optimizer", "lr_scheduler", "num_classes",
                                                       "compile"]
    assert [p.name for p in init_arguments(LeNet5)] == ["standardize", "optimizer", "lr_scheduler", "num_classes",
                                                        "compile"]
    assert [format_argument(p) for p in init_arguments(Closed)] == ["size: int = 3"]


# -- the contract: a model rejects a bad value with UserError -------------------------------------


class Picky(DigitModel):
    """Rejects a size below 1 as docs/adding-a-model.md says; a size of -1 stands for a bug."""

    def __init__(self, size: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        if size == -1:
            raise RuntimeError("a bug in the model")
        if size < 1:
            raise UserError(f"model.size={size} is not valid: expected a positive integer.")

    def forward(self, x):
        return x.flatten(1)[:, :10]


def test_a_model_rejecting_a_value_is_a_user_error_not_a_traceback(capsys, monkeypatch):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() installs its own
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--model", f"{__name__}.Picky", "--model.size", "0"])  # jsonargparse wraps the error
    assert exit_.value.code == 2
    assert "digitlab: error: model.size=0 is not valid: expected a positive integer." in capsys.readouterr().err
    with pytest.raises(Exception) as bug:
        main(["fit", "--model", f"{__name__}.Picky", "--model.size", "-1"])
    assert not isinstance(bug.value, SystemExit)  # a bug keeps its traceback
