"""Reports read MLflow only: ranking, Pareto front, importance, plots, HTML/Markdown/CSV."""
