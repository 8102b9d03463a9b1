"""The sweep's search space, read back from the parent run's ``space.yaml`` artifact (read with yaml: reports import
no search_spaces, torch or ray, and from trainables only its torch-free contract, physics and file helpers). Two
things the logged params cannot say on their own:

- which conditional params were inactive in a trial (``focal_gamma`` when the loss is ``ce``): stores written before
  a trial's params became what it ran hold the full resolved config, so an inactive param shows its default there,
  which must not be read as a chosen value;
- which ranges were sampled log-uniform (the scatter plots use a log axis for them).

Without a ``space.yaml`` (an older sweep, a store written by hand) both fall back to what the params alone give.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from typing import Any

import yaml


@dataclass
class SpaceInfo:
    when: dict[str, dict[str, list[Any]]] = field(default_factory=dict)  # param -> {parent: values that enable it}
    log: set[str] = field(default_factory=set)  # params sampled log-uniform

    def inactive(self, params: dict[str, str]) -> set[str]:
        """The params whose ``when`` condition is false for a trial with these (string) MLflow params."""
        return {name for name in self.when if not self.is_active(name, params, ())}

    def is_active(self, name: str, params: dict[str, str], seen: tuple) -> bool:
        """Active when every parent is itself active and took one of the allowed values (search_spaces' rule)."""
        if name in seen:  # a cycle cannot pass the loader; guard anyway rather than recurse forever
            return True
        for parent, allowed in self.when.get(name, {}).items():
            if parent not in params or not self.is_active(parent, params, seen + (name,)):
                return False
            if not any(same_value(params[parent], v) for v in allowed):
                return False
        return True


def same_value(logged: str, yaml_value: Any) -> bool:
    """A logged MLflow param (always a string) against a YAML value: ``"0.99"`` == 0.99, ``"True"`` == true."""
    if isinstance(yaml_value, bool):
        return logged.strip().lower() == str(yaml_value).lower()
    if str(yaml_value) == logged:
        return True
    try:
        return math.isclose(float(logged), float(yaml_value), rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
        return False


def space_info(raw: Any) -> SpaceInfo:
    """From the parsed YAML: the ``space`` section's ``when`` conditions and ``log: true`` ranges."""
    space = raw.get("space") if isinstance(raw, dict) else None
    info = SpaceInfo()
    if not isinstance(space, dict):
        return info
    for name, spec in space.items():
        if not isinstance(spec, dict):
            continue
        when = spec.get("when")
        if isinstance(when, dict) and when:
            info.when[str(name)] = {str(p): list(v) if isinstance(v, (list, tuple)) else [v] for p, v in when.items()}
        if spec.get("log") is True:
            info.log.add(str(name))
    return info


def fetch_space_info(client, parent_run_id: str | None) -> SpaceInfo | None:
    """The parent run's ``space.yaml``, parsed; None when the run has none (or it does not parse)."""

    if parent_run_id is None:
        return None
    try:
        if "space.yaml" not in {f.path for f in client.list_artifacts(parent_run_id)}:
            return None
        with tempfile.TemporaryDirectory(prefix="scanner-report-space-") as tmp:
            with open(client.download_artifacts(parent_run_id, "space.yaml", tmp), encoding="utf-8") as f:
                raw = yaml.safe_load(f)
    except Exception:  # no such file, bad YAML, an artifact store that cannot serve it: keep the params as logged
        return None
    return space_info(raw)
