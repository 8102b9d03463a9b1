"""The sweep driver's small pieces, without Ray: who leads (the report's tie rule), the progress line, when every
trial fails alike, and the last line of a sweep."""

from __future__ import annotations

from scanner.sweep.driver import error_text, last_line, same_failure
from scanner.sweep.finals import summary_line
from scanner.sweep.progress import ProgressLine
from scanner.sweep.standings import counts, leader, ranked_trials
from scanner.sweep.states import TrialState


def state(i: int, status: str = "completed", value: float | None = None, failure: str | None = None,
          replica_of: str | None = None) -> TrialState:
    return TrialState(f"id{i}", i, i == 0, f"t{i:02d} m", status=status, best_value=value, failure=failure,
                      replica_of=replica_of)


def test_ties_go_to_the_earlier_trial_and_replicas_never_rank():
    states = [state(3, value=0.8), state(1, value=0.8), state(2, value=0.7), state(4, value=0.9, replica_of="id1"),
              state(5, "failed", value=0.95)]
    assert [s.index for s in ranked_trials(states, "max")] == [1, 3, 2]
    assert [s.index for s in ranked_trials(states, "min")] == [2, 1, 3]
    assert leader(states, "max").index == 1
    assert counts(states) == {"running": 0, "completed": 3, "stopped_early": 0, "failed": 1}


def test_progress_line_counts_replicas_apart(capsys):
    line = ProgressLine("val/accuracy", "max")
    line.replicas = 2
    line.update([state(0, value=0.5), state(1, "running"), state(2, replica_of="id0"), state(3, "running", replica_of="id0")])
    out = capsys.readouterr().out
    assert "running 1 | done 1 |" in out and "best val/accuracy=0.5 (t00)" in out and "replicas 1/2" in out


def test_the_same_failure_of_the_first_trials_stops_the_sweep():
    why = "Traceback...\n  File x\nImportError: cannot import name 'baseline_config'"
    first = [state(i, "failed", failure=why) for i in range(3)]
    assert same_failure(first) == "ImportError: cannot import name 'baseline_config'"
    assert same_failure(first[:2]) is None  # too few to tell
    assert same_failure(first[:2] + [state(2, "failed", failure="ValueError: other")]) is None
    assert same_failure(first[:2] + [state(2, "completed", value=0.3)]) is None
    assert last_line("a\n\nb\n") == "b" and last_line(None) == ""


def test_a_failure_keeps_the_traceback_lines_that_say_why_not_its_column_markers(tmp_path):
    error_file = tmp_path / "error.txt"
    error_file.write_text('Traceback (most recent call last):\n  File "x.py", line 3, in copy\n'
                          '    return f.write(view)\n           ^^^^^^^^^^^^^\n'
                          "OSError: [Errno 28] No space left on device\n")
    assert error_text(str(error_file)).splitlines() == [
        '  File "x.py", line 3, in copy', "    return f.write(view)", "OSError: [Errno 28] No space left on device"]


def test_the_last_line_names_the_leader_its_value_and_the_report():
    states = [state(0, value=0.61), state(1, value=0.74), state(2, "stopped_early", value=0.5),
              state(3, "failed", failure="x")]
    line = summary_line("s", states, leader(states, "max"), "val/accuracy", "/r/index.html", "sqlite:///m.db")
    assert line.startswith("sweep s: 4 trials (1 stopped early, 1 failed)")
    assert "best t01 m with val/accuracy = 0.74" in line and "report /r/index.html" in line


def test_a_sweep_where_every_trial_fails_names_no_best():
    failed = [state(i, "failed", failure="x") for i in range(3)]
    line = summary_line("s", failed, leader(failed, "max"), "val/accuracy", None, "sqlite:///m.db")
    assert "3 failed" in line and "no trial reached a value" in line and "best t" not in line
    assert "scanner report s" in line
