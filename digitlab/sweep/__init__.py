"""`digitlab sweep`: hyperparameter sweeps on Optuna, every trial an ordinary `digitlab fit` run.

One idea per module: `sweep_file` (the sweep file: search space, objective, sampler, pruner), `run_config`
(the run config the trials share, checked before anything runs), `storage` (where the study lives, and how
workers take turns to claim trials), `pruning` (the callback that reports to Optuna), `trial` (one trial as
a run), `command` (the command's loop), `results` (best config and pictures), `report` (the trials table of
`digitlab report`). Nothing here is imported by `digitlab --help` or `digitlab report` until it is used.
"""
