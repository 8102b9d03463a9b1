"""A sweep's life (``lifecycle``) and its parts: setup, the Tune tuner with its searcher and scheduler, the trial
worker, the driver that feeds MLflow, settling, the finals. docs/architecture.md draws it."""
