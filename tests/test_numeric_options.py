"""Every numeric option of every subcommand refuses NaN, infinities and out-of-range values up front: exit code
2, one paragraph naming the option, no traceback, nothing written. The options are read from the parsers
themselves (`digitlab.cli.SUBCOMMANDS`' argparse parsers, the signatures behind the Lightning subcommands'
config), so a new option cannot escape `digitlab.config.option_checks.OPTIONS`."""

from __future__ import annotations

import importlib
import inspect
import math
import typing
from pathlib import Path

import pytest

from conftest import assert_user_error
from digitlab.cli import SUBCOMMANDS
from digitlab.config.option_checks import OPTIONS, RUN, CheckedNumber, OptionParser
from digitlab.config.parse_errors import known_keys
from digitlab.errors import UserError
from digitlab.training.compat import parser_actions

NOT_FINITE = ("nan", "inf", "-inf")
LIGHTNING_SUBCOMMANDS = [name for name, command in SUBCOMMANDS.items() if command.whole_argv]


def argparse_parser(name: str) -> OptionParser:
    module, _, function = SUBCOMMANDS[name].parser.partition(":")
    return getattr(importlib.import_module(module), function)()


def out_of_range(limits) -> list[str]:
    values = [] if limits.low is None else [str(limits.low - 1 if limits.low_inclusive else limits.low)]
    return values + ([] if limits.high is None else [str(limits.high + 1)])


def argparse_cases() -> list[tuple[str, str, str]]:
    cases = []
    for name, command in SUBCOMMANDS.items():
        if command.whole_argv:
            continue
        for action in parser_actions(argparse_parser(name)):
            if isinstance(action.type, CheckedNumber):
                option = action.option_strings[0]
                cases += [(name, option, value) for value in (*NOT_FINITE, *out_of_range(action.type.range))]
    return cases


def assert_nothing_written(folder: Path, before: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == before, "the command wrote something"


def test_every_argparse_subcommand_has_an_option_parser():
    for name, command in SUBCOMMANDS.items():
        if not command.whole_argv:
            parser = argparse_parser(name)
            assert isinstance(parser, OptionParser) and not parser.allow_abbrev, name
            unchecked = [a.dest for a in parser_actions(parser) if a.type in (int, float)]
            assert not unchecked, f"{name}: {unchecked} are not checked"


def test_a_numeric_option_without_a_range_cannot_be_added():
    parser = OptionParser("serve")
    with pytest.raises(LookupError, match="--new_limit"):
        parser.add_argument("--new_limit", type=float)


def test_the_table_names_only_options_that_exist():
    argparse_keys = {(name, action.dest) for name, command in SUBCOMMANDS.items() if not command.whole_argv
                     for action in parser_actions(argparse_parser(name))}
    stale = [key for key in OPTIONS if key[0] != RUN and key not in argparse_keys]
    assert not stale


@pytest.mark.parametrize("name, option, value", argparse_cases())
def test_argparse_options_refuse_numbers_that_cannot_work(name, option, value, tmp_path, digitlab_main):
    result = digitlab_main(name, f"{option}={value}", cwd=tmp_path)  # "-inf" alone would read as an option
    assert_user_error(result, f"{option} {float(value) if value in NOT_FINITE else value}", "is not valid")
    assert result.stderr.count("\n") == 1, result.stderr  # one paragraph
    assert_nothing_written(tmp_path, set())


@pytest.mark.parametrize("name, option, value", [("serve", "--max_batch", "4"), ("serve", "--time", "3"),
                                                 ("export", "--form", "onnx"), ("sweep", "--trial", "3"),
                                                 ("report", "--sor", "lr"), ("models", "--verb", "")])
def test_argparse_options_are_never_prefix_matched(name, option, value, tmp_path, digitlab_main):
    args = [option, value] if value else [option]
    required = {"serve": ["--ckpt_path", "x.ckpt"], "export": ["--ckpt_path", "x.ckpt"],
                "sweep": ["--sweep", "x.yaml"]}.get(name, [])
    if name == "sweep":  # the sweep hands unknown options to the run config, which refuses them
        required = ["--sweep", str(Path(__file__).parents[1] / "configs/sweeps/lenet5.yaml")]
    result = digitlab_main(name, *required, *args, cwd=tmp_path)
    assert_user_error(result, option.partition("=")[0])
    assert result.stderr.count("\n") == 1, result.stderr


# -- the Lightning subcommands: every float of the config finite, the counts digitlab knows in range -------


def numeric(annotation) -> bool:
    kinds = [kind for kind in typing.get_args(annotation) or [annotation] if kind is not type(None)]
    return bool(kinds) and all(kind in (int, float) for kind in kinds)


def numeric_config_keys() -> list[str]:
    from lightning.pytorch import Trainer

    from digitlab.data import MNISTDataModule

    keys = ["seed_everything"]
    for section, cls in (("trainer", Trainer), ("data", MNISTDataModule)):
        hints = typing.get_type_hints(cls.__init__)
        keys += [f"{section}.{name}" for name in inspect.signature(cls).parameters if numeric(hints.get(name))]
    return keys


@pytest.fixture(scope="module")
def parsers(tmp_path_factory):
    from digitlab.training.lightning_cli import DigitLabCLI

    base = ["--model", "lenet5", "--data.data_dir", str(tmp_path_factory.mktemp("data")), "--data.download", "false"]
    return base, {name: DigitLabCLI(name, base) for name in LIGHTNING_SUBCOMMANDS}


def refusal(cli, args: list[str]) -> str:
    with pytest.raises(UserError) as refused:
        cli.parse(args)
    assert refused.value.exit_code == 2 and "\n" not in str(refused.value)
    return str(refused.value)


def test_the_config_has_numeric_options_and_the_table_names_only_config_keys(parsers):
    base, clis = parsers
    keys = known_keys(clis["fit"].parser)
    assert len([key for key in numeric_config_keys() if key in keys]) > 15
    assert not [key for command, key in OPTIONS if command == RUN and key not in keys]


@pytest.mark.parametrize("subcommand", LIGHTNING_SUBCOMMANDS)
@pytest.mark.parametrize("value", [*NOT_FINITE, ".nan", "-.inf", "1e400"])
def test_config_numbers_refuse_nan_and_infinities(subcommand, value, parsers):
    base, clis = parsers
    keys = [key for key in numeric_config_keys() if key in known_keys(clis[subcommand].parser)]
    for key in keys:
        for args in ([f"--{key}", value], [f"--{key}={value}"]):
            message = refusal(clis[subcommand], base + args)
            assert key in message and ("NaN and infinities" in message), (key, message)


@pytest.mark.parametrize("key, limits", [(key, limits) for (command, key), limits in OPTIONS.items()
                                         if command == RUN])
def test_config_numbers_out_of_range(key, limits, parsers):
    base, clis = parsers
    for value in out_of_range(limits):
        message = refusal(clis["fit"], base + [f"--{key}", value])
        assert f"{key}={value}" in message.replace(".0 ", " ") and "is not valid: expected" in message, message
    within = limits.low if limits.low_inclusive else limits.low + 1
    clis["fit"].parse(base + [f"--{key}", str(within)])


def test_a_float_inside_a_class_of_the_config(parsers, tmp_path):
    base, clis = parsers
    lr = "--model.init_args.optimizer.init_args.lr"
    assert "lr nan is not valid" in refusal(clis["fit"], base + [lr, "nan"])
    config = tmp_path / "nan.yaml"
    config.write_text("model:\n  class_path: lenet5\n  init_args:\n    optimizer:\n      class_path: torch.optim.SGD\n"
                      "      init_args: {lr: 0.1, momentum: .inf}\n")
    message = refusal(clis["fit"], base + ["--config", str(config)])
    assert "model.init_args.optimizer.init_args.momentum=inf is not valid" in message
    callbacks = tmp_path / "callbacks.yaml"
    callbacks.write_text("trainer:\n  callbacks:\n  - class_path: lightning.pytorch.callbacks.EarlyStopping\n"
                         "    init_args: {monitor: val/loss, min_delta: .nan}\n")
    assert "min_delta=nan" in refusal(clis["fit"], base + ["--config", str(callbacks)])


def test_finite_values_still_parse(parsers):
    base, clis = parsers
    config = clis["fit"].parse(base + ["--trainer.gradient_clip_val", "0.5", "--data.val_split", "0.1",
                                       "--model.init_args.optimizer.init_args.lr", "1e-3"])
    assert math.isclose(config.trainer.gradient_clip_val, 0.5)


@pytest.mark.parametrize("args, fragment", [
    (["--trainer.max_epoch", "3"], "Did you mean 'trainer.max_epochs'"),
    (["--trainer.max_epoch=3"], "Did you mean 'trainer.max_epochs'"),
    (["--data.batch", "3"], "Did you mean 'data.batch_size'"),
    (["--model.init_args.optimizer.init_args.lr", "nan"], "--model.init_args.optimizer.init_args.lr nan"),
    (["--data.seed", str(10**21)], "data.seed=1000000000000000000000 is not valid"),
])
@pytest.mark.parametrize("subcommand", LIGHTNING_SUBCOMMANDS)
def test_through_the_command(subcommand, args, fragment, tmp_path, digitlab_main):
    result = digitlab_main(subcommand, "--model", "lenet5", "--data.data_dir", str(tmp_path / "nowhere"),
                           "--data.download", "false", *args, cwd=tmp_path)
    assert_user_error(result, fragment)
    assert result.stderr.count("\n") == 1, result.stderr
    assert_nothing_written(tmp_path, set())
