"""`digitlab report [LOG_DIR ...] [--format table|markdown|csv] [--sort KEY] [--plot FILE.png]`.

Other packages add folders the report cannot read by itself through `FolderKind` (the sweep adds its sweep
folders: `digitlab.sweep.report`); the report imports none of them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from digitlab.config.option_checks import OptionParser
from digitlab.report.columns import KEYS
from digitlab.report.plot import check_plot_path, plot_val_acc
from digitlab.report.reading import load_runs
from digitlab.report.table import format_runs, sort_runs
from digitlab.utils.tables import STYLES

FORMATS = [*STYLES, "csv"]


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder reported its own way rather than as a folder of runs."""

    described: str  # how LOG_DIR's help names it
    holds: Callable[[Path], bool]  # whether a folder is one
    report: Callable[[Path, str], str]  # the folder's report in a format of `FORMATS`


def report_command(args: list[str], folder_kinds: Sequence[FolderKind] = ()) -> None:
    """Print the report of the LOG_DIRs in `args`; a folder of one of `folder_kinds` is reported its own way."""
    options = report_parser(folder_kinds).parse_args(args)
    if options.plot is not None:
        check_plot_path(options.plot)  # before any run is read

    folders = [Path(log_dir) for log_dir in options.log_dirs]
    runs_folders = []
    for folder in folders:
        kind = next((kind for kind in folder_kinds if kind.holds(folder)), None)
        if kind is None:
            runs_folders.append(folder)
        else:
            sys.stdout.write(kind.report(folder, options.format))
    if not runs_folders:  # every folder was reported its own way
        return
    runs = sort_runs(load_runs(runs_folders), options.sort)
    sys.stdout.write(format_runs(runs, options.format))
    if options.plot is not None:
        plot_val_acc(runs, options.plot)
        print(f"Validation accuracy curves: {options.plot}", file=sys.stderr)


def report_parser(folder_kinds: Sequence[FolderKind] = ()) -> OptionParser:
    parser = OptionParser(
        "report",
        description="Compare runs: one row per run (a folder with TensorBoard event files or a metrics.csv) under "
        "each LOG_DIR, from its config.yaml, event files (or metrics.csv) and newest checkpoint, and one row per "
        "evaluation of a run (validate, test, predict: a folder such as version_0/test_0), right below its run, "
        "with the checkpoint it evaluated. Nothing is written into the runs.",
    )
    described = ["a folder of runs", "one run's folder", *(kind.described for kind in folder_kinds)]
    parser.add_argument("log_dirs", nargs="*", default=["lightning_logs"], metavar="LOG_DIR",
                        help=f"{', '.join(described[:-1])}, or {described[-1]} (default: lightning_logs)")
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="plain table (default), markdown table, or CSV with raw values (wall time in seconds)")
    parser.add_argument("--sort", choices=KEYS, default="test_acc",
                        help="column to sort by (default: test_acc); accuracies best first, others ascending; "
                        "evaluations stay below their run")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="also draw the training runs' validation accuracy curves on one chart into this new "
                        "image file (.png, .svg, .pdf, ...; an existing file is never overwritten)")
    return parser
