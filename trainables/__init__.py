"""Learning one trial: data, models, losses, schedules, EMA, metrics, telemetry and the loop. No Ray, no MLflow."""
