"""LightningCLI as digitlab's parser: one subcommand's options, models by registry name, a run's own config
found beside its checkpoint, the checkpoint's hyperparameters checked before they join the config, and parse
errors as one paragraph.

It parses and stops there (`instantiate_classes` builds nothing): `digitlab.training.run` builds the run from
what was parsed and runs it. LightningCLI is used without its subcommands (``run=False``): `digitlab.cli`
already chose the subcommand, and the options each subcommand adds are added here.
"""

from __future__ import annotations

import importlib
import os
import random
import sys
from argparse import ArgumentError
from typing import Any, Optional

from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from digitlab.config.model_names import YAML_MODE, register_yaml_loader, rewrite_model_args
from digitlab.config.named_files import check_named_files
from digitlab.config.parse_errors import explain
from digitlab.data import MNISTDataModule
from digitlab.errors import UserError
from digitlab.models import DigitModel
from digitlab.models.registry import discover_models
from digitlab.runs import checkpoints
from digitlab.runs.folders import with_run_config
from digitlab.runs.restarts import restart_resume
from digitlab.training.callbacks import PredictionWriter
from digitlab.training.checks import check_config, nonfinite_option

SUBCOMMANDS = ("fit", "validate", "test", "predict")
EPILOG = (
    "Run `digitlab models` to list the models, `digitlab report` to compare the runs in lightning_logs, "
    "`digitlab SUBCOMMAND --help` for a subcommand's options."
)


class DigitLabCLI(LightningCLI):
    """The parsed config of `digitlab SUBCOMMAND ARGS` (`config`), with the checkpoint that ``--ckpt_path``
    names read and checked (`checkpoint`, None without one). Models are chosen by registry name, class name or
    class path.

    Args:
        subcommand: fit, validate, test or predict.
        args: The arguments after the subcommand's name.
    """

    def __init__(self, subcommand: str, args: list[str]) -> None:
        if subcommand not in SUBCOMMANDS:
            raise ValueError(f"not a run subcommand: {subcommand}")
        discover_models()  # plugins must be imported before the parser lists DigitModel's subclasses
        register_yaml_loader()
        self.run_subcommand = subcommand
        self.checkpoint: Optional[dict[str, Any]] = None
        self.method_arguments: list[str] = []  # the options passed on to Trainer.<subcommand>
        super().__init__(
            DigitModel,
            MNISTDataModule,
            subclass_mode_model=True,
            # Each model owns its optimizer argument; a global --optimizer would silently override it.
            auto_configure_optimizers=False,
            save_config_callback=None,  # the run path adds its own, which writes into the run folder only
            run=False,
            args=args,
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("parser_mode", YAML_MODE)
        kwargs.setdefault("prog", f"digitlab {self.run_subcommand}")
        kwargs.setdefault("epilog", EPILOG)
        kwargs.setdefault("exit_on_error", False)  # parse errors reach `parse`, which explains them
        kwargs.setdefault("allow_abbrev", False)  # `--trainer.max_epoch` is a typo to refuse, not a prefix
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        subcommand = self.run_subcommand
        # What LightningCLI's own subcommand parsers add: Trainer.<subcommand>'s options (ckpt_path, ...).
        self.method_arguments = parser.add_method_arguments(Trainer, subcommand,
                                                            skip=LightningCLI.subcommands()[subcommand])
        # Checkpoints load weights-only (no code runs on load); `--weights_only false` is the explicit opt-out.
        parser.set_defaults(weights_only=True)
        # Every subcommand takes the options of the others' configs, so that a run's config.yaml works with
        # all of them (`digitlab test --config lightning_logs/version_0/config.yaml`); unused ones are ignored.
        ignored = "" if subcommand == "fit" else " (Used by `fit` only.)"
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fitting, evaluate the best checkpoint (or the final weights) on the test set." + ignored,
        )
        parser.add_argument(
            "--last_checkpoint_every_n_steps",
            type=int,
            default=0,
            help="Also write last.ckpt every N training steps, not only after every epoch, so that a run killed "
            "halfway through an epoch (a lost node, an elastic restart) loses at most N steps. 0: after every "
            "epoch only." + ignored,
        )
        parser.add_argument(
            "--pictures",
            type=bool,
            default=True,
            help="Log TensorBoard pictures: class examples and means, confusion matrices, worst mistakes (and "
            "per-class test accuracies)." + (" (Not used by `predict`.)" if subcommand == "predict" else ""),
        )
        if subcommand == "predict":  # the table of predictions, and `--predictions.csv FILE`
            parser.add_lightning_class_args(PredictionWriter, "predictions")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self.config = self.parse(list(args))
        self.merge_checkpoint_hyperparameters()

    def parse(self, args: list[str]) -> Namespace:
        """`args` parsed and checked as `digitlab SUBCOMMAND args` would be, by this parser (a sweep parses
        many trials' arguments with one parser)."""
        args = with_run_config(self.run_subcommand, rewrite_model_args(args))
        check_named_files(args)
        try:
            config = self.parser.parse_args(args)
        except (ArgumentError, UnicodeDecodeError) as error:  # the latter: a config file that is not text
            why = nonfinite_option(args, self.run_subcommand) or explain(error, self.parser, self.run_subcommand, args)
            raise UserError(why) from None
        check_config(config)
        if config.get("seed_everything") is True:
            # Lightning would seed 0 every time ("No seed found"): a random seed, written into config.yaml so
            # that the run replays. The other processes of a DDP run inherit rank 0's through PL_GLOBAL_SEED.
            inherited = os.environ.get("PL_GLOBAL_SEED") if rank_zero_only.rank != 0 else None
            config.seed_everything = int(inherited or random.SystemRandom().randrange(2**32))
        return config

    def merge_checkpoint_hyperparameters(self) -> None:
        """Resolve ``--ckpt_path`` (`last` included), read the checkpoint once, refuse another model or foreign
        class paths, then merge what is left into the config. LightningCLI would merge a checkpoint's
        hyperparameters unchecked, and jsonargparse imports every class path it meets."""
        config = self.config
        ckpt_path = config.get("ckpt_path")
        if self.run_subcommand == "fit":
            ckpt_path = restart_resume(ckpt_path, config.trainer)
        config.ckpt_path = checkpoints.resolve(ckpt_path, config.trainer)
        if not config.ckpt_path:
            return
        self.checkpoint = checkpoints.load(config.ckpt_path, config.get("weights_only"))
        checkpoints.check_restorable(config.ckpt_path, self.checkpoint)
        if self.run_subcommand == "fit" and "optimizer_states" not in self.checkpoint:
            raise UserError(
                f"--ckpt_path {config.ckpt_path} holds weights only (saved with save_weights_only), so training "
                "cannot resume from it. Use it with validate, test or predict, or resume from a full checkpoint."
            )
        if self.run_subcommand == "fit":
            refuse_other_settings(ckpt_path or config.ckpt_path, config.ckpt_path,
                                  self.parser.dump(config, skip_none=False, skip_check=True))
        model_class = configured_model_class(config.model)
        hyperparameters = checkpoints.model_hyperparameters(config.ckpt_path, self.checkpoint, model_class,
                                                            trusted=config.get("weights_only") is False)
        if hyperparameters:
            try:
                self.config = self.parser.parse_object({"model": hyperparameters}, config)
            except (ArgumentError, SystemExit) as error:
                raise UserError(f"--ckpt_path {config.ckpt_path}: its hyperparameters do not fit "
                                f"{model_class.__name__}: {str(error)[:500]}") from None
        init_args = self.config.model.get("init_args")
        plain = {key: value for key, value in (vars(init_args) if init_args is not None else {}).items()
                 if isinstance(value, (bool, int, float, str, type(None)))}
        checkpoints.check_fits_before_building(config.ckpt_path, self.checkpoint, model_class, plain)
        if self.run_subcommand != "fit" and rank_zero_only.rank == 0:
            print(checkpoints.describe(config.ckpt_path, self.checkpoint, checkpoints.model_name(
                self.config.model.class_path)), file=sys.stderr)

    def instantiate_classes(self) -> None:
        """Nothing: `digitlab.training.run.build_run` builds the run from the parsed config."""


# Where and how the data files are read, not what is learned: a resumed run may read them from elsewhere.
NOT_SETTINGS = frozenset({"data.data_dir", "data.download", "data.verify", "data.num_workers", "data.pin_memory"})


def refuse_other_settings(asked: str, ckpt_path: str, dumped: str) -> None:
    """Refuse to resume the run of `ckpt_path` with model or data settings other than its own (its config.yaml):
    the resumed run would mix the checkpoint's settings with the config's. `dumped`: this fit's parsed config,
    as config.yaml holds it."""
    from digitlab.config.bounded_yaml import UnreadableYaml, load_yaml_file, load_yaml_text
    from digitlab.runs import layout

    run = layout.run_folder_of(ckpt_path)
    if run is None or not (run / layout.RUN_CONFIG).is_file():
        return
    try:
        saved = load_yaml_file(run / layout.RUN_CONFIG, "run config")
        current = load_yaml_text(dumped, "this fit's config")
    except UnreadableYaml:
        return
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return
    theirs, ours = _flat(saved, ("model", "data")), _flat(current, ("model", "data"))
    differing = [key for key in sorted(theirs.keys() | ours.keys())
                 if key not in NOT_SETTINGS and theirs.get(key) != ours.get(key)]
    if differing:
        shown = "; ".join(f"{key}: {_short(theirs.get(key))} in the run, {_short(ours.get(key))} here"
                          for key in differing[:6])
        more = f" and {len(differing) - 6} more" if len(differing) > 6 else ""
        raise UserError(
            f"--ckpt_path {asked} would resume the run {run} ({ckpt_path}) with other model or data settings than "
            f"it was trained with: {shown}{more}. A resumed run keeps its own settings, never a mix. Resume it with "
            f"its own config (`digitlab fit --config {run / layout.RUN_CONFIG} --ckpt_path {ckpt_path}`), or leave "
            "--ckpt_path out to start a new run with these settings."
        )


def _flat(config: dict, sections: tuple[str, ...]) -> dict[str, Any]:
    """The values of `sections` of a config, by dotted key (``model.init_args.optimizer.init_args.lr``)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        else:
            flat[prefix] = value

    for section in sections:
        walk(section, config.get(section))
    return flat


def _short(value: Any) -> str:
    text = "unset" if value is None else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def configured_model_class(model_config: Any) -> type:
    """The configured model's class (the config, not a checkpoint, names it: importing it is the user's choice)."""
    module, _, name = model_config.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)
