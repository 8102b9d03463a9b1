"""Sweep fixtures: a session Ray, MLflow stores/servers, the one shared tiny sweep."""
