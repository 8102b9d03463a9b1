"""Search spaces as YAML, and the loader/validator that turns them into Optuna distributions."""
