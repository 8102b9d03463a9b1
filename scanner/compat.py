"""Private third-party APIs the scanner cannot avoid, each behind one small function that a test pins
(tests/scanner/test_registries.py::test_the_restore_hook_still_reaches_the_run_config): when a library changes, one
place breaks, loudly.
"""

from __future__ import annotations

from ray import tune
from ray.tune import Callback


def set_restored_callbacks(tuner: tune.Tuner, callbacks: list[Callback]) -> None:
    """Ray has no public way to pass callbacks to ``Tuner.restore``: the ones pickled in ``tuner.pkl`` come back
    (ours pickle as inert stubs: a live writer thread cannot be pickled). Replace them with live ones."""
    tuner._local_tuner.get_run_config().callbacks = callbacks
