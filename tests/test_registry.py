"""The registry: case-insensitive names, loud duplicates, helpful unknown names, rewriting to class paths."""

import pytest

from digitlab.models import registry
from digitlab.errors import DuplicateModelError, UnknownModelError
from digitlab.config.model_names import rewrite_model_args, rewrite_model_config
from digitlab.models import DigitModel
from digitlab.models.lenet import LeNet5


@pytest.fixture
def clean_registry(monkeypatch):
    """A registry holding only what the test registers (the built-ins are restored afterwards)."""
    monkeypatch.setattr(registry, "_registry", {})
    monkeypatch.setattr(registry, "_discovered", True)


def test_builtin_models_are_discovered():
    assert "lenet5" in registry.list_models()
    assert registry.get_model_class("lenet5") is LeNet5


def test_names_are_case_insensitive_and_class_names_work():
    assert registry.get_model_class("LeNet5") is LeNet5
    assert registry.get_model_class("LENET5") is LeNet5


def test_unknown_name_lists_known_names_and_the_closest(clean_registry):
    @registry.register_model("lenet5")
    class A(DigitModel):
        def forward(self, x):
            return x

    @registry.register_model("mlp")
    class B(DigitModel):
        def forward(self, x):
            return x

    with pytest.raises(UnknownModelError) as error:
        registry.get_model_class("lenet6")
    assert "Did you mean 'lenet5'?" in str(error.value)
    assert "lenet5, mlp" in str(error.value)


def test_duplicate_name_names_both_classes(clean_registry):
    @registry.register_model("Net")
    class First(DigitModel):
        def forward(self, x):
            return x

    with pytest.raises(DuplicateModelError) as error:

        @registry.register_model("net")
        class Second(DigitModel):
            def forward(self, x):
                return x

    assert "First" in str(error.value) and "Second" in str(error.value)


def test_list_models_filters_by_pattern(clean_registry):
    for name in ("lenet5", "lenet5_wide", "mlp"):
        registry.register_model(name)(type(name, (DigitModel,), {"forward": lambda self, x: x}))
    assert registry.list_models() == ["lenet5", "lenet5_wide", "mlp"]
    assert registry.list_models("lenet*") == ["lenet5", "lenet5_wide"]


def test_the_abstract_base_cannot_be_instantiated():
    with pytest.raises(TypeError):
        DigitModel()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["fit", "--model", "lenet5"], ["fit", "--model", "digitlab.models.lenet.LeNet5"]),
        (["fit", "--model=LeNet5"], ["fit", "--model=digitlab.models.lenet.LeNet5"]),
        (["fit", "--model.help", "lenet5"], ["fit", "--model.help", "digitlab.models.lenet.LeNet5"]),
        (["fit", "--model", "pkg.mod.Net"], ["fit", "--model", "pkg.mod.Net"]),
        (["fit", "--data.model", "lenet5"], ["fit", "--data.model", "lenet5"]),
    ],
)
def test_command_line_names_become_class_paths(args, expected):
    assert rewrite_model_args(args) == expected


def test_config_names_become_class_paths():
    assert rewrite_model_config({"model": "lenet5"})["model"] == "digitlab.models.lenet.LeNet5"
    config = rewrite_model_config({"model": {"class_path": "lenet5", "init_args": {"num_classes": 10}}})
    assert config["model"] == {"class_path": "digitlab.models.lenet.LeNet5", "init_args": {"num_classes": 10}}
    with pytest.raises(UnknownModelError, match="lenet5"):
        rewrite_model_config({"model": "lenet6"})
