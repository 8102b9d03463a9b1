"""Sweep overhead: wall time vs the same configs trained in a plain sequential loop in one process, with a breakdown.

    .venv/bin/python benchmarks/bench_sweep_overhead.py [--trials 7] [--epochs 3] [--events 6000] [--size 32]
                                                         [--mode serial|parallel] [--no-reuse]

Both sides train the same TrialConfigs (the sweep's baseline + Optuna's random suggestions, replayed from the study),
FIFO, all epochs. The machine's cores are shared fairly:
  serial    the sweep runs 1 trial at a time on all cores (resources.cpu = cores, torch threads = cores);
            the plain loop uses torch threads = cores. The ratio is then Ray/Tune/MLflow overhead only.
  parallel  the sweep runs `cores` trials at once, 1 thread each (the usual way to sweep on a CPU box);
            the plain loop still uses all cores in one process. The ratio then also says whether
            trial-level parallelism beats intra-op threads for this model.
The plain loop runs in a fresh process (not in the driver that just ran Ray and MLflow).
The breakdown times the sweep's phases (prepare, Ray start, Tune fit, finals, report) and, from Tune's result.json,
the time inside each trial, so what Ray costs between trials (actor start, torch import, scheduling) shows apart.
Prints the ratio (target <= 1.10) and the load average, since other jobs on the machine skew one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _header import print_header  # benchmarks/ is on sys.path when a script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACE = """\
name: bench
task: classification
data: {{path: bench.h5}}
objective: {{metric: val/accuracy, mode: max}}
budget: {{trials: {trials}, max_epochs: {epochs}, scheduler: fifo, sampler: random, seed: 0, final_top: 0}}
resources: {{cpu: {cpu}, gpu: 0, concurrent: {concurrent}}}
fixed: {{batch_size: 64, num_workers: 0, model: small_cnn}}
baseline: {{lr: 1.0e-3}}
space:
  lr: {{float: [3.0e-4, 3.0e-3], log: true}}
"""

PHASES = {}  # phase -> seconds, filled by the wrappers below
ACTIVE: set[str] = set()  # phases being timed right now


def timed(module, name: str, phase: str) -> None:
    """Wrap ``module.name`` so its wall time adds to PHASES[phase] (the sweep looks these up at call time)."""
    inner = getattr(module, name)

    def wrapper(*args, **kwargs):
        if phase in ACTIVE:  # close() calls flush(): count the outer call only
            return inner(*args, **kwargs)
        ACTIVE.add(phase)
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            ACTIVE.discard(phase)
            PHASES[phase] = PHASES.get(phase, 0.0) + time.perf_counter() - t0

    setattr(module, name, wrapper)


# Phases that run beside others (threads): shown, but not added up with the serial ones.
CONCURRENT = {"  Ray start (main thread)", "  MLflow set-up + imports (thread)", "  Ray shutdown (thread, beside finals)"}


def instrument(reuse: bool) -> None:
    from ray import tune

    import scanner.sweep.finals as finals
    import scanner.sweep.lifecycle as lifecycle
    import scanner.tracking

    timed(lifecycle, "prepare", "prepare (load, open data, checks)")
    timed(lifecycle, "start", "start: Ray + MLflow set-up")
    timed(lifecycle, "ray_init", "  Ray start (main thread)")
    timed(lifecycle, "open_tracking", "  MLflow set-up + imports (thread)")
    timed(lifecycle, "settle", "settle (records, leftovers, Optuna)")
    timed(finals, "run_finals", "finals (baseline on test)")
    timed(finals, "build_report", "report")
    timed(finals, "study_summary", "Optuna study summary")
    timed(lifecycle, "stop_ray", "  Ray shutdown (thread, beside finals)")
    timed(scanner.tracking.MlflowWriter, "flush", "MLflow writer flush/close")
    timed(scanner.tracking.MlflowWriter, "close", "MLflow writer flush/close")
    new_tuner = lifecycle.new_tuner

    def tuner_with_timed_fit(*args, **kwargs):
        tuner = new_tuner(*args, **kwargs)
        fit = tuner.fit

        def timed_fit():
            t0, cpu0, ray0 = time.perf_counter(), _own_cpu(), _ray_process_cpu()
            try:
                return fit()
            finally:
                PHASES["Tune fit (all trials)"] = time.perf_counter() - t0
                CPU["driver (Tune loop, callback, MLflow writer)"] = _own_cpu() - cpu0
                CPU["Ray's own processes (GCS, raylet, agents)"] = _ray_process_cpu() - ray0

        tuner.fit = timed_fit
        return tuner

    lifecycle.new_tuner = tuner_with_timed_fit
    if not reuse:  # the comparison point: a fresh actor (process + torch import) per trial
        config = tune.TuneConfig

        def no_reuse(**kwargs):
            return config(**{**kwargs, "reuse_actors": False})

        tune.TuneConfig = no_reuse


CPU: dict[str, float] = {}  # CPU seconds spent beside the trials while Tune ran them: what competes with training


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _ray_process_cpu() -> float:
    """CPU seconds of Ray's own processes (GCS, raylet, agents, monitors), before they stop; trial actors excluded."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if "ImplicitFunc" not in " ".join(child.cmdline()):
                t = child.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def trial_times(folder: Path) -> list[dict]:
    """Per trial, from Tune's result.json: time inside the trial, and the training part of it (perf/epoch_s)."""
    out = []
    for path in sorted(folder.glob("scans/bench/ray/tune/*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            out.append({"inside_s": rows[-1]["time_total_s"], "train_s": sum(r["perf/epoch_s"] for r in rows),
                        "first_iter_s": rows[0]["time_this_iter_s"], "epochs": len(rows)})
    return out


def run_plain(work: Path, threads: int) -> tuple[float, list[dict]]:
    import optuna
    import torch

    from scanner.sweep.trial import resolve_config
    from search_spaces import load_space
    from trainables.config import TrialSpec
    from trainables.loop import train_trial
    from trainables.reporting import MemoryReporter

    space = load_space(work / "bench.yaml")
    study = optuna.load_study(study_name="bench", storage=f"sqlite:///{work / 'scans' / 'optuna.db'}")
    configs = [{"_scan_baseline": True}] + [t.params for t in study.trials]
    torch.set_num_threads(threads)
    per_trial = []
    t0 = time.perf_counter()
    for config in configs:
        cfg = resolve_config(space, config)
        spec = TrialSpec(space.task, space.data, cfg, space.budget.max_epochs, space.objective.metric,
                         space.objective.mode, workdir=str(work))
        reporter, t1 = MemoryReporter(), time.perf_counter()
        train_trial(spec, reporter)
        per_trial.append({"inside_s": time.perf_counter() - t1,
                          "train_s": sum(m["perf/epoch_s"] for _, m in reporter.history)})
    return time.perf_counter() - t0, per_trial


def run_plain_fresh(work: Path, threads: int) -> tuple[float, list[dict]]:
    """The plain loop in a fresh process, as a user would run it: not in the driver that just ran Ray and MLflow."""
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--plain-only", str(work), "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["plain_s"], result["trials"]


def run_sweep_timed(work: Path) -> float:
    from scanner.sweep.lifecycle import run_sweep

    t0 = time.perf_counter()
    code = run_sweep(str(work / "bench.yaml"), f"sqlite:///{work / 'mlflow.db'}", quiet=True)
    if code != 0:
        raise SystemExit(f"the sweep exited {code}")
    return time.perf_counter() - t0


def report(args, cores: int, sweep_s: float, plain_s: float, sweep_trials, plain_trials, loads) -> None:
    n = len(plain_trials)
    inside = sum(t["inside_s"] for t in sweep_trials)
    fit = PHASES.get("Tune fit (all trials)", 0.0)
    print(f"sweep overhead mode={args.mode} reuse_actors={not args.no_reuse}: {n} trials x {args.epochs} epochs, "
          f"{args.events} events {args.size}x{args.size}, {cores} cores; load avg {loads}")
    print(f"  plain loop  {plain_s:7.1f} s  ({plain_s / n:.1f} s per trial, of which training "
          f"{sum(t['train_s'] for t in plain_trials) / n:.1f} s)")
    print(f"  sweep       {sweep_s:7.1f} s  ratio {sweep_s / plain_s:.3f} (target <= 1.10)")
    for phase, secs in PHASES.items():
        print(f"    {phase:32s} {secs:7.1f} s")
    other = sweep_s - sum(v for k, v in PHASES.items() if k not in CONCURRENT)
    print(f"    {'other (scan files, settle, leftovers)':32s} {other:7.1f} s")
    print(f"  inside trials (sum)   {inside:7.1f} s  training {sum(t['train_s'] for t in sweep_trials):.1f} s; "
          f"first epoch incl. build {sum(t['first_iter_s'] for t in sweep_trials) / max(1, len(sweep_trials)):.1f} s/trial")
    if CPU:
        print("  CPU seconds during the fit: " + "; ".join(f"{k} {v:.1f}" for k, v in CPU.items()))
    if args.mode == "serial":
        print(f"  between trials (fit - inside): {fit - inside:.1f} s = {(fit - inside) / n:.2f} s per trial "
              f"(actor start, scheduling, checkpoint bookkeeping)")
    core_phases = fit + PHASES.get("start: Ray + MLflow set-up", 0.0)
    print(f"  ratio without finals + report: {(sweep_s - PHASES.get('finals (baseline on test)', 0) - PHASES.get('report', 0)) / plain_s:.3f}; "
          f"Tune fit alone: {fit / plain_s:.3f}; start + fit: {core_phases / plain_s:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=7)  # + the baseline = 8 trials
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--events", type=int, default=6000)  # about 20 s of training per trial on 2 cores at 32x32
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--mode", choices=("serial", "parallel"), default="serial")
    ap.add_argument("--no-reuse", action="store_true", help="a new actor per trial (reuse_actors=False)")
    ap.add_argument("--plain-only", help=argparse.SUPPRESS)  # internal: the plain loop of a finished sweep's folder
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    print_header()
    if args.plain_only:
        os.chdir(args.plain_only)
        plain_s, trials = run_plain(Path(args.plain_only), args.threads)
        print(json.dumps({"plain_s": plain_s, "trials": trials}))
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import psutil

    from trainables.data import write_synthetic

    cores = psutil.cpu_count() or 1
    cpu, concurrent = (cores, 1) if args.mode == "serial" else (1, cores)
    work = Path(tempfile.mkdtemp(prefix="bench_p2_"))
    os.chdir(work)
    write_synthetic(work / "bench.h5", events=args.events, size=args.size, seed=0, progress=False)
    (work / "bench.yaml").write_text(SPACE.format(trials=args.trials, epochs=args.epochs, cpu=cpu,
                                                  concurrent=concurrent))
    instrument(reuse=not args.no_reuse)
    loads = [round(os.getloadavg()[0], 2)]
    sweep_s = run_sweep_timed(work)
    loads.append(round(os.getloadavg()[0], 2))
    plain_s, plain_trials = run_plain_fresh(work, threads=cores)
    loads.append(round(os.getloadavg()[0], 2))
    report(args, cores, sweep_s, plain_s, trial_times(work), plain_trials, loads)


if __name__ == "__main__":
    main()
