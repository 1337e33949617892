"""Which checkpoint `--ckpt_path` means, and whether it fits the configured model — before any run starts."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

from digitlab.config.import_names import foreign_names, refusal
from digitlab.errors import UserError
from digitlab.runs import layout
from digitlab.models.arguments import init_arguments

LIGHTNING_KEYWORDS = ("hpc", "registry")  # Lightning's: they need state a new process does not have


def resolve(ckpt_path: Optional[str], trainer_config: Any) -> Optional[str]:
    """`ckpt_path` as a file path: ``last`` becomes the newest run's ``last.ckpt``, ``best`` its best checkpoint
    by the monitored metric, a run folder (or ``version_N``) that run's best (its last without one); a missing
    file fails."""
    if ckpt_path is None:
        return None
    if ckpt_path in LIGHTNING_KEYWORDS:
        raise UserError(
            f"--ckpt_path {ckpt_path}: digitlab takes the path of a checkpoint file, a run folder, or `last` (the "
            "newest run's last.ckpt) or `best` (its best checkpoint by the monitored metric)."
        )
    ckpt_path = named(ckpt_path, layout.logs_root(trainer_config))
    path = Path(ckpt_path)
    if path.is_dir():
        found = sorted(path.glob("**/*.ckpt"))
        hint = f" It holds {len(found)} checkpoint(s), e.g. {found[0]}." if found else ""
        raise UserError(f"--ckpt_path {ckpt_path} is a folder, not a checkpoint file or a run folder.{hint} Give "
                        "the path of one checkpoint file, or `--ckpt_path last` for the newest last.ckpt.")
    if path.exists() and not path.is_file():  # a FIFO would block the reader, a device would never end
        raise UserError(f"--ckpt_path {ckpt_path} is not a checkpoint: it is not a regular file. Give the path of "
                        "a .ckpt file from a run's checkpoints/ folder.")
    if not path.is_file():
        raise UserError(
            f"--ckpt_path {ckpt_path}: no such file. Checkpoints are in {layout.LOGS_FOLDER}/{layout.RUN_PREFIX}N/"
            f"{layout.CHECKPOINTS}/; "
            "`--ckpt_path last` picks the newest last.ckpt, `--ckpt_path best` the newest run's best checkpoint."
        )
    return ckpt_path


def named(ckpt_path: str, root: Path) -> str:
    """The checkpoint file a word or a run names (``last``, ``best``, a run folder, ``version_N`` of the runs
    under `root`); any other `ckpt_path` as given."""
    if ckpt_path == "last":
        return str(layout.newest_last_checkpoint(root))
    if ckpt_path == "best":
        return str(best_checkpoint(layout.newest_run(root, "best")))
    run = layout.named_run(ckpt_path, root)
    if run is None:
        return ckpt_path
    last = run / layout.CHECKPOINTS / layout.LAST_CHECKPOINT
    if not last.is_file() or monitored(_load_quietly(last)) is not None or layout.best_files(run):
        return str(best_checkpoint(run, f"--ckpt_path {ckpt_path}"))
    return str(last)


def best_checkpoint(run: Path, asked: str = "--ckpt_path best") -> Path:
    """The best checkpoint of `run` by its monitored metric: the ``best_model_path`` that Lightning's
    ModelCheckpoint keeps in the run's last.ckpt (after a resume it may lie in the earlier run's folder), else
    the run's one ``best-*.ckpt`` file. A run with no monitored checkpoint is a `UserError`."""
    last = run / layout.CHECKPOINTS / layout.LAST_CHECKPOINT
    state = monitored(_load_quietly(last)) if last.is_file() else None
    if state is not None:
        # Lightning keeps the path as the fit gave it (relative to its working folder, perhaps another one):
        # it is looked up among the runs beside this one first (the run's own folder or, after a resume, the
        # earlier run's), wherever the runs were moved.
        saved = Path(state["best_model_path"])
        beside = run.parent / saved.parent.parent.name / layout.CHECKPOINTS / saved.name
        for candidate in (beside, *([saved] if saved.is_absolute() else [])):
            if candidate.is_file():
                return candidate
    files = layout.best_files(run)
    if len(files) == 1:
        return files[0]
    if files:
        raise UserError(
            f"{asked}: the run {run} holds {len(files)} best-*.ckpt files and its last.ckpt does not say which is "
            f"the best ({', '.join(f.name for f in files[:4])}). Give the path of one of them."
        )
    raise UserError(
        f"{asked}: the run {run} has no best checkpoint: it was trained without a ModelCheckpoint that monitors a "
        "metric (configs/lenet5.yaml's monitors val/acc), or its best file was removed. Use `--ckpt_path last` "
        "for its newest weights, or give the path of a checkpoint file."
    )


def monitored(checkpoint: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The state of the first ModelCheckpoint in `checkpoint` that monitors a metric and has saved its best
    (Lightning's ``monitor``, ``best_model_path``, ``best_model_score``), or None."""
    callbacks = (checkpoint or {}).get("callbacks")
    for state in (callbacks.values() if isinstance(callbacks, dict) else ()):
        if isinstance(state, dict) and state.get("monitor") and isinstance(state.get("best_model_path"), str) \
                and state["best_model_path"]:
            return state
    return None


def _load_quietly(path: Path) -> Optional[dict[str, Any]]:
    """`path` read weights-only, or None when it cannot be (the command reports it when it reads the file)."""
    try:
        return load(str(path), weights_only=True, opt_out=False)
    except UserError:
        return None


def facts(ckpt_path: str, checkpoint: dict[str, Any], model: str) -> dict[str, Any]:
    """What a command says about the checkpoint it uses: the file (relative to the working folder when it is
    under it), the model, the epoch it was saved in (counted from 0, as in file names; None if unrecorded) and
    its run folder's name (None outside a run)."""
    path = Path(ckpt_path)
    try:
        shown = path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = path
    run = layout.run_folder_of(ckpt_path)
    epoch = checkpoint.get("epoch")
    return {"checkpoint": str(shown), "model": model, "epoch": epoch if isinstance(epoch, int) else None,
            "run": run.name if run else None}


def describe(ckpt_path: str, checkpoint: dict[str, Any], model: str) -> str:
    """One line naming the checkpoint a command uses: its file, model, epoch and run."""
    return sentence(facts(ckpt_path, checkpoint, model))


def sentence(about: dict[str, Any]) -> str:
    """`facts` as the line commands print."""
    said = [about["model"]] + ([f"epoch {about['epoch']}"] if about.get("epoch") is not None else []) + \
        ([f"run {about['run']}"] if about.get("run") else [])
    return f"digitlab: using {about['checkpoint']} ({', '.join(said)})"


def model_name(class_path: Any) -> str:
    """The registry name of a model class path (the class's own name when it is not registered)."""
    from digitlab.models.registry import model_entries

    names = {entry.class_path: entry.name for entry in model_entries()}
    text = str(class_path or "unknown model")
    return names.get(text, text.rsplit(".", 1)[-1])


def load(ckpt_path: str, weights_only: Optional[bool], opt_out: bool = True) -> dict[str, Any]:
    """Read a Lightning checkpoint, weights-only unless `weights_only` is False; refuse anything else.
    `opt_out`: whether the command offers ``--weights_only false`` (said in the refusal)."""
    _check_archive(ckpt_path)
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=weights_only is not False, mmap=True)
    except pickle.UnpicklingError as error:
        fix = ("Only if you trust where it comes from, add `--weights_only false`." if opt_out else
               "This command loads weights only: use a checkpoint written by `digitlab fit`.")
        raise UserError(
            f"--ckpt_path {ckpt_path}: weights-only loading refuses it ({str(error).splitlines()[0]}). It holds "
            f"Python objects that run code when loaded. {fix}"
        ) from None
    except Exception:  # torch's words are about its own file formats, not the user's mistake
        raise _not_a_checkpoint(ckpt_path, "its archive is damaged or incomplete") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"--ckpt_path {ckpt_path} is not a Lightning checkpoint (it has no state_dict).")
    return checkpoint


def _check_archive(ckpt_path: str) -> None:
    """Refuse what torch.save cannot have written (it writes zip archives) before torch reads it."""
    try:
        if os.stat(ckpt_path).st_size == 0:
            raise _not_a_checkpoint(ckpt_path, "it is empty")
        if not zipfile.is_zipfile(ckpt_path):
            raise _not_a_checkpoint(ckpt_path, "it is not the zip archive that torch.save writes")
    except OSError as error:
        raise _not_a_checkpoint(ckpt_path, f"it cannot be read ({error.strerror})") from None


def _not_a_checkpoint(ckpt_path: str, why: str) -> UserError:
    return UserError(f"--ckpt_path {ckpt_path} is not a readable checkpoint: {why}. Give a .ckpt file written by "
                     "`digitlab fit` (a run's checkpoints/ folder holds them).")


def hyperparameters(ckpt_path: str, checkpoint: dict[str, Any], key: str = "hyper_parameters") -> dict[str, Any]:
    """The checkpoint's `key` (hyperparameters: names and values), ``{}`` when it has none."""
    value = checkpoint.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
        kind = "keyed by other things than names" if isinstance(value, dict) else f"a {type(value).__name__}"
        raise UserError(
            f"--ckpt_path {ckpt_path}: its {key} is {kind}, not a mapping of names to values, so "
            "it was not written by `digitlab fit` or was altered since. Use a checkpoint from a run's checkpoints/ "
            "folder."
        )
    return dict(value)


def check_finite(ckpt_path: str, state_dict: dict[str, Any]) -> None:
    """Refuse weights that hold NaN or infinities: every prediction made with them would be meaningless."""
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if not bool(torch.isfinite(value).all()):
                raise UserError(
                    f"--ckpt_path {ckpt_path}: its tensor '{name}' holds NaN or infinite values, so the model "
                    "cannot predict anything meaningful. The training that wrote it diverged, or the file was "
                    "damaged: use an earlier checkpoint of the run, or train again with a lower learning rate."
                )


def check_fits_before_building(ckpt_path: str, checkpoint: dict[str, Any], model_class: type,
                               arguments: dict[str, Any]) -> None:
    """`check_fits` against `model_class(**arguments)` as `meta_model` builds it, before the real model is built."""
    model = meta_model(model_class, arguments)
    if model is not None:
        check_fits(ckpt_path, checkpoint, model)


def meta_model(model_class: type, arguments: dict[str, Any]) -> Optional[torch.nn.Module]:
    """`model_class(**arguments)` on PyTorch's meta device, which allocates no memory, so that hyperparameters
    making a model far larger than a checkpoint's weights are refused before the real model is built; None for
    a model that cannot be built there (the real build then reports its own error)."""
    try:
        with torch.device("meta"):
            return model_class(**arguments)
    except UserError:
        raise
    except Exception:
        return None


def check_restorable(ckpt_path: str, checkpoint: dict[str, Any]) -> None:
    """Refuse a checkpoint that Lightning's Trainer cannot restore (one not written by a Trainer)."""
    if "pytorch-lightning_version" not in checkpoint:
        raise UserError(
            f"--ckpt_path {ckpt_path} holds a state_dict but is not a Lightning checkpoint (no "
            "pytorch-lightning_version): it was not written by a Lightning Trainer. Use a checkpoint from a run's "
            "checkpoints/ folder."
        )


def model_hyperparameters(ckpt_path: str, checkpoint: dict[str, Any], model_class: type, trusted: bool = False
                          ) -> dict[str, Any]:
    """The checkpoint's model hyperparameters, checked to be safe and to fit `model_class` (the configured
    model): ``{class_path, init_args}`` for the config, or ``{}`` when the checkpoint has none.

    A checkpoint is data, never code: LightningCLI would merge its hyperparameters into the config, and
    jsonargparse imports what a class path or a callable's name names, so a checkpoint could name any module to
    import or function to call. Here the model's class path must be the configured model's, and every name that
    could be an import must be an allowed class (`digitlab.config.import_names`), unless the user `trusted` the
    file (``--weights_only false``).
    """
    hparams = hyperparameters(ckpt_path, checkpoint)
    hparams.pop("_instantiator", None)
    saved_class = hparams.pop("_class_path", None)
    class_path = f"{model_class.__module__}.{model_class.__qualname__}"
    if saved_class is not None and saved_class != class_path:
        saved_class = str(saved_class)[:200]
        raise UserError(
            f"--ckpt_path {ckpt_path} holds a {saved_class} model, but the config asks for {class_path}. Use the "
            "config the checkpoint was trained with (its run folder has it as config.yaml), or another checkpoint."
        )
    for where, name in ([] if trusted else foreign_names(hparams, model_class)):
        raise refusal(f"--ckpt_path {ckpt_path}: its hyperparameters", where, name[:200],
                      "Use a checkpoint written by digitlab, or only if you trust where this file comes from, "
                      "add `--weights_only false`.")
    accepted = {parameter.name for parameter in init_arguments(model_class)}
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        raise UserError(
            f"--ckpt_path {ckpt_path} has the hyperparameter(s) {', '.join(unknown)}, which {model_class.__name__} "
            "does not take: it was written by another version of the model. Use a checkpoint of this version."
        )
    return {"class_path": class_path, "init_args": hparams} if hparams else {}


def check_fits(ckpt_path: str, checkpoint: dict[str, Any], model: torch.nn.Module) -> None:
    """Refuse a checkpoint whose weights do not have the names and shapes of `model`'s."""
    problems = fit_problems(checkpoint, model)
    if problems:
        raise UserError(
            f"--ckpt_path {ckpt_path} does not hold weights of the configured {type(model).__name__}: "
            f"{'; '.join(problems)}. Use the config the checkpoint was trained with (its run folder has it as "
            "config.yaml), or another checkpoint."
        )


def fit_problems(checkpoint: dict[str, Any], model: torch.nn.Module) -> list[str]:
    """How the checkpoint's weights differ from `model`'s in names and shapes (empty: they fit)."""
    saved = {key: tuple(value.shape) for key, value in checkpoint["state_dict"].items() if hasattr(value, "shape")}
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = []
    if missing := sorted(expected.keys() - saved.keys()):
        problems.append(f"missing {_few(missing)}")
    if unexpected := sorted(saved.keys() - expected.keys()):
        problems.append(f"unexpected {_few(unexpected)}")
    if resized := sorted(k for k in expected.keys() & saved.keys() if expected[k] != saved[k]):
        problems.append("other shapes for " + _few([f"{k} {saved[k]} (expected {expected[k]})" for k in resized]))
    return problems


def _few(items: list[str], shown: int = 3) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more
