"""Scan orchestration: the ``scanner`` CLI, Ray Tune + Optuna sweeps, MLflow tracking, SLURM and resume."""
