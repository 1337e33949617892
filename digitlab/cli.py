"""The `digitlab` command: LightningCLI with registry names, test-after-fit, and clear user errors."""

from __future__ import annotations

import sys
from typing import Any, Optional

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from digitlab.data import MNISTDataModule
from digitlab.errors import UserError
from digitlab.model_names import YAML_MODE, register_yaml_loader, rewrite_model_args
from digitlab.models import DigitModel
from digitlab.registry import discover_models, model_entries

EPILOG = "Run `digitlab models` to list the models, `digitlab SUBCOMMAND --help` for a subcommand's options."


class DigitLabCLI(LightningCLI):
    """`digitlab fit|validate|test|predict`, with models chosen by registry name, class name or class path."""

    def __init__(self, args: Optional[list[str]] = None, **kwargs: Any) -> None:
        discover_models()  # plugins must be imported before the parser lists DigitModel's subclasses
        register_yaml_loader()
        super().__init__(
            DigitModel,
            MNISTDataModule,
            subclass_mode_model=True,
            # Each model owns its optimizer argument; a global --optimizer would silently override it.
            auto_configure_optimizers=False,
            args=args,
            **kwargs,
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("parser_mode", YAML_MODE)
        kwargs.setdefault("epilog", EPILOG)
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if args is not None and not isinstance(args, list):  # a dict or Namespace: no names to rewrite
            return super().parse_arguments(parser, args)
        self.config = parser.parse_args(rewrite_model_args(sys.argv[1:] if args is None else args))

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "fit":
            parser.add_argument(
                "--test_after_fit",
                type=bool,
                default=True,
                help="After fitting, evaluate the best checkpoint (or the final weights) on the test set.",
            )
        return parser

    def after_fit(self) -> None:
        if not self.config.fit.test_after_fit or self.trainer.interrupted:
            return
        checkpoint = self.trainer.checkpoint_callback
        ckpt_path = "best" if checkpoint is not None and checkpoint.best_model_path else None
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=ckpt_path)
        self.after_test()

    def after_test(self) -> None:
        accuracy = self.trainer.callback_metrics.get("test/acc")
        if accuracy is not None and self.trainer.is_global_zero:
            print(f"Test accuracy: {accuracy.item():.4f}")


def print_models() -> None:
    entries = model_entries()
    rows = [(e.name, e.class_path, e.source, e.description) for e in entries]
    widths = [max(len(row[i]) for row in rows + [("name", "class path", "source", "")]) for i in range(3)]
    print(f"{'name':<{widths[0]}}  {'class path':<{widths[1]}}  {'source':<{widths[2]}}  description")
    for name, path, source, description in rows:
        print(f"{name:<{widths[0]}}  {path:<{widths[1]}}  {source:<{widths[2]}}  {description}")


def main(argv: Optional[list[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args[:1] == ["models"]:
            print_models()
            return
        DigitLabCLI(args=argv)
    except UserError as error:
        print(f"digitlab: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
