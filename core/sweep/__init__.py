"""Sweeps: Optuna searches over the training settings, where every trial is an ordinary run.

`python -m core.sweep --data PATH --trials N` starts a worker: it asks the study (in `--storage`, a SQLite file
here or any database Optuna takes) for settings, trains them as a run in its own process exactly as the Train page
starts one, reports each epoch's validation accuracy so a bad trial stops early, and tells the study the run's
final accuracy. Workers pointed at one storage and one `--study`, each with its own runs folder (one training at a
time per folder), share its trials. `space` says what can be searched and how; `worker` runs the trials.
"""
