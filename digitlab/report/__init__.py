"""`digitlab report [LOG_DIR ...]`: one table comparing the runs of a log folder, read from what each run saved.

A run is a folder holding TensorBoard event files or a CSV logger's ``metrics.csv`` (``lightning_logs/version_N/``).
An evaluation of a run's checkpoint (`digitlab validate|test|predict`) is a folder inside that run
(``version_N/test_0``): its row says what it is (``kind``), the ``checkpoint`` it evaluated (its config.yaml's
``ckpt_path``) and its own results, and it is listed right below its run. Per run or evaluation:

- model, lr, batch size: its ``config.yaml`` (``model.class_path``; ``model.init_args.lr`` or the optimizer's
  ``lr``; ``data.batch_size``, per process);
- best ``val/acc``, ``test/acc`` (the last one logged) and wall time: its event files, else its metrics.csv; the
  wall time runs from the first to the last event (for metrics.csv: from config.yaml's to metrics.csv's last
  write), so it covers fitting and the test after it, not start-up or data loading;
- epochs and parameters: its newest checkpoint (``last.ckpt`` if there is one; for an evaluation, the
  checkpoint it evaluated), loaded weights-only: the fit loop's count of finished epochs, and the number of
  values in the ``state_dict`` (parameters and buffers: the centroid model's class means count).

Nothing is written into the run folders. One bad run never stops the report: a config.yaml that is not a
readable config leaves that run's model, lr and batch size blank, with a one-line warning naming it, and only
regular files are read (a FIFO named like an event file would block). Torch is imported only to read
checkpoints; matplotlib only for ``--plot``.

One idea per module: `run` (what a row shows), `run_files` (which files of a run folder are read), `reading`
(runs from disk), `saved_config` and `metrics` (a run's config.yaml and logged values), `columns` (how each value
is shown), `table` (order and styles), `plot` (the validation accuracy picture), `command` (the command, and
the hook through which the sweep adds its folders: the sweep extends the report, never the reverse).
"""
