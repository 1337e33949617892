"""`digitlab lr_find [--min_lr X] [--max_lr X] [--num_training N] FIT_ARGS...`: Lightning's learning-rate range
test (`Tuner.lr_find`) on the run that `digitlab fit FIT_ARGS` would train, with its plot in a run folder.

The run is built by the one run path (`parse_run`, `build_run`) in a folder of its own,
``lightning_logs/lr_find/version_N``: its config.yaml, the plot as ``lr_find.png`` and as the TensorBoard
picture ``lr_find/loss_vs_lr``. The model's weights are left as they were; no checkpoint is kept.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.tuner import Tuner

from digitlab.config.option_checks import OptionParser
from digitlab.errors import UserError
from digitlab.models import DigitModel
from digitlab.runs import layout
from digitlab.runs.folders import claim
from digitlab.training.checks import LIGHTNING_ERRORS, lightning_refusal
from digitlab.training.run import CleanupOnFailure, build_run, model_name, parse_run, quiet_lightning_notices
from digitlab.utils.atomic import atomic_write

PLOT = "lr_find.png"
TAG = "lr_find/loss_vs_lr"


def lr_find_command(args: list[str]) -> None:
    options, fit_args = lr_find_parser().parse_known_args(args)
    if options.min_lr >= options.max_lr:
        raise UserError(f"--min_lr {options.min_lr:g} is not below --max_lr {options.max_lr:g}: the range test "
                        "raises the learning rate from the first to the second. Give a smaller --min_lr.")
    quiet_lightning_notices()
    parsed = parse_run("fit", fit_args)
    logs_root = layout.logs_root(parsed.config.trainer)
    made_logs_root = not logs_root.exists()
    folder = claim(logs_root / layout.LR_FIND)
    try:
        with CleanupOnFailure(folder):  # the run path's own clean-up, for the folder claimed here
            run = build_run(parsed, folder=folder)
            refuse_unsupported(run.model, model_name(parsed.config.model))
            try:
                finder = Tuner(run.trainer).lr_find(run.model, datamodule=run.datamodule, min_lr=options.min_lr,
                                                    max_lr=options.max_lr, num_training=options.num_training,
                                                    update_attr=False)
            except LIGHTNING_ERRORS as error:
                raise lightning_refusal(error, "fit") or error
    except BaseException:
        if made_logs_root:
            _remove_if_empty(logs_root)
        raise
    if run.trainer.is_global_zero and finder is not None:
        report(finder, run.trainer.loggers, folder, fit_args, option_for_lr(parsed.config.model))


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # refuses a folder that holds anything
    except OSError:
        pass


def refuse_unsupported(model: DigitModel, name: Optional[str]) -> None:
    """One paragraph for a model Lightning's finder cannot drive: it needs one optimizer, stepped by Lightning."""
    if model.automatic_optimization:
        return
    raise UserError(
        f"lr_find cannot tune the model '{name}': the learning-rate range test raises the learning rate of an "
        "optimizer that Lightning steps after every training batch (automatic optimization), and this model "
        "trains by its own step (manual optimization) - the centroid averages images and learns no rate, the "
        "scratch MLP applies its own update. For the MLP, compare a few values of --model.init_args.lr with "
        "`digitlab sweep --config configs/mlp.yaml --sweep configs/sweeps/mlp.yaml` instead."
    )


def option_for_lr(model_config: Any) -> str:
    """The `digitlab fit` option that sets the learning rate the finder varied."""
    init_args = model_config.get("init_args") or {}
    if "lr" in init_args:
        return "--model.init_args.lr"
    return "--model.init_args.optimizer.init_args.lr"


def report(finder: Any, loggers: list, folder: Path, fit_args: list[str], option: str) -> None:
    """Print the suggestion and how to use it; write the plot as a PNG and a TensorBoard picture."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    suggestion = finder.suggestion()
    figure = finder.plot(suggest=True)
    figure.axes[0].set_title("digitlab lr_find: training loss (smoothed) against the learning rate")
    atomic_write(folder / PLOT, lambda stream: figure.savefig(stream, format="png", dpi=100), overwrite=False)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(TAG, _png_chw(figure), 0, dataformats="CHW")
            logger.experiment.flush()
    print(f"lr_find: {len(finder.results['lr'])} training steps, learning rate from {finder.lr_min:g} to "
          f"{finder.lr_max:g}; plot in {folder / PLOT} (TensorBoard: {TAG})")
    if suggestion is None:
        print("lr_find: no suggestion: too few finite losses. Raise --num_training, or lower --max_lr.")
        return
    print(f"Suggested learning rate: {suggestion:.3g} (where the loss fell fastest)")
    print(f"Use it: digitlab fit {' '.join(fit_args)} {option} {suggestion:.3g}")


def _png_chw(figure: Any) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pixels = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def lr_find_parser() -> OptionParser:
    parser = OptionParser(
        "lr_find",  # no option prefixes: every other option belongs to the run config, never guess at one
        description="Lightning's learning-rate range test on the run `digitlab fit` would train with the other "
        "options (--config FILE, --data.data_dir DIR, ...; see `digitlab fit --help`): a short training whose "
        "learning rate rises from --min_lr to --max_lr, then the suggested rate. The plot goes to "
        "lightning_logs/lr_find/version_N/lr_find.png and TensorBoard; the model's weights are not kept.",
        epilog="Models trained by manual optimization (centroid, mlp) are refused, with the reason.",
    )
    parser.add_argument("--min_lr", type=float, default=1e-6, help="the first learning rate tried (default 1e-6)")
    parser.add_argument("--max_lr", type=float, default=1.0, help="the last learning rate tried (default 1)")
    parser.add_argument("--num_training", type=int, default=100,
                        help="training steps, one learning rate each (default 100); stops early if the loss "
                        "diverges")
    return parser
