"""The GPU paths proven on a real GPU in a few minutes: every step and every telemetry figure checked against what
the driver (NVML) reports, one PASS/FAIL line per check at the end (docs/gpu.md explains each one).

    make gpu-check
    .venv/bin/python benchmarks/gpu_check.py [--workdir DIR] [--keep]

In order: (1) ``scanner train`` of resnet18 on 2x128x128 synthetic events with AMP, and the same on CPU for the
throughput figure; (2) a 4-trial sweep with ``gpu: 0.5``, two at a time; (3) a sweep where one trial's batch cannot
fit (another process holds the rest of the GPU), which must end FAILED with its reason while the others finish;
(4) ``scanner export`` of the best trial, when the CLI has that verb. Exit status 1 when a check fails. On a
machine without CUDA it prints one line and exits 0, so CI can call it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

GIB = float(2**30)
BUDGET_S = 300.0  # the whole check on one GPU
EVENTS = 4000  # 2x128x128: one epoch of resnet18 takes seconds on a GPU; the train split is the OOM batch
CPU_EVENTS = 300  # the CPU throughput figure needs a few batches, not an epoch of 4000
SWEEP, OOM_SWEEP = "gpucheck", "gpucheck-oom"
LR = "  lr: {float: [1.0e-4, 1.0e-2], log: true}\n"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Checks:
    """PASS/FAIL lines, printed together at the end."""

    results: list[tuple[bool, str, str]] = field(default_factory=list)

    def add(self, ok: bool, name: str, detail: str) -> bool:
        self.results.append((bool(ok), name, detail))
        print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
        return bool(ok)

    def summary(self) -> int:
        print("\ngpu-check results")
        for ok, name, detail in self.results:
            print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        failed = sum(not ok for ok, _, _ in self.results)
        print(f"{len(self.results) - failed} passed, {failed} failed")
        return 1 if failed else 0


def cuda_missing() -> str | None:
    import torch  # heavy: only after the arguments are read

    if torch.cuda.is_available():
        return None
    return (f"gpu-check: no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
            "nothing to check")


def scanner(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "scanner", *args], cwd=cwd, env=env or child_env(), text=True,
                          capture_output=True, timeout=timeout)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1", RAY_USAGE_STATS_ENABLED="0")
    env.update(extra)
    return env


def ran(checks: Checks, name: str, proc: subprocess.CompletedProcess, expect: int = 0) -> bool:
    """A command's exit status as a check; on failure, its last lines say why."""
    tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
    ok = proc.returncode == expect
    return checks.add(ok, name, f"exit {proc.returncode}" + ("" if ok else f"; {tail}"))


def space_text(name: str, data: Path, resources: str, space: str, budget: str) -> str:
    """A space file: resnet18 (AMP is the CUDA default), baseline batch 64, the given resources/space/budget."""
    return (f"name: {name}\ntask: classification\ndata: {{path: {data}}}\n"
            f"objective: {{metric: val/accuracy, mode: max}}\nbudget: {{{budget}}}\nresources: {{{resources}}}\n"
            f"fixed: {{model: resnet18, num_workers: 2}}\nbaseline: {{batch_size: 64, lr: 1.0e-3}}\n"
            f"space:\n{space}")


# --------------------------------------------------------------------------------------------- the driver's view


@dataclass
class Driver:
    """What NVML says about the GPU, read without creating a CUDA context in this process."""

    total_gb: float
    power_limit_w: float | None
    name: str


def driver_view() -> Driver:
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(first_physical_index())
    try:
        limit = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
    except pynvml.NVMLError:
        limit = None
    view = Driver(pynvml.nvmlDeviceGetMemoryInfo(handle).total / GIB, limit, str(pynvml.nvmlDeviceGetName(handle)))
    pynvml.nvmlShutdown()
    return view


def first_physical_index() -> int:
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",") if v.strip()]
    return int(visible[0]) if visible and visible[0].isdigit() else 0


CONTEXT_PROBE = """
import json, os, torch, pynvml
x = torch.randn(64, 2, 128, 128, device="cuda")
y = torch.nn.Conv2d(2, 64, 3).cuda()(x).flatten(1) @ torch.randn(64 * 126 * 126, 8, device="cuda")
torch.cuda.synchronize()
pynvml.nvmlInit()
handle = pynvml.nvmlDeviceGetHandleByUUID("GPU-" + str(torch.cuda.get_device_properties(0).uuid))
own = [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid == os.getpid()]
print(json.dumps({"process": own[0] if own and own[0] is not None else None, "reserved": torch.cuda.memory_reserved()}))
"""


def cuda_context_gb(checks: Checks) -> float:
    """The memory NVML counts for a process beyond torch's reserved bytes (context, cuDNN/cuBLAS handles)."""
    out = subprocess.run([sys.executable, "-c", CONTEXT_PROBE], env=child_env(), capture_output=True, text=True,
                         timeout=120)
    reading = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else {}
    if reading.get("process") is None:
        checks.add(False, "CUDA context measured", "NVML does not list this PID (a container?): 1.0 GiB assumed")
        return 1.0
    context = (reading["process"] - reading["reserved"]) / GIB
    checks.add(0 < context < 4, "CUDA context measured", f"{context:.2f} GiB beyond the allocator's reserve")
    return context


# --------------------------------------------------------------------------------------------- reading the runs


def runs_of(uri: str, experiment: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [r for r in client.search_runs([found.experiment_id], max_results=1000) if "scan.trial_id" in r.data.tags]


def epochs_of(uri: str, run) -> list[dict[str, float]]:
    """Every epoch's metrics of a run (step = epoch)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    by_step: dict[int, dict[str, float]] = {}
    for key in run.data.metrics:
        if key.startswith(("sys/", "perf/")):
            for m in client.get_metric_history(run.info.run_id, key):
                by_step.setdefault(m.step, {})[key] = m.value
    return [by_step[s] for s in sorted(by_step)]


def check_epochs(checks: Checks, label: str, epochs: list[dict[str, float]], driver: Driver, context_gb: float,
                 batch_size: int) -> None:
    """The per-epoch telemetry of GPU runs against the driver's figures and against each other."""
    if not checks.add(bool(epochs), f"{label}: GPU epochs logged", f"{len(epochs)} epochs"):
        return
    bad = [e for e in epochs if not (e.get("sys/gpu_mem_allocated_gb", math.nan) <= e.get("sys/gpu_mem_reserved_gb",
           math.nan) <= e.get("sys/gpu_mem_peak_reserved_gb", math.nan) <= driver.total_gb)]
    checks.add(not bad, f"{label}: allocated <= reserved <= peak reserved <= device total",
               f"{fmt(epochs, 'sys/gpu_mem_allocated_gb')} <= {fmt(epochs, 'sys/gpu_mem_reserved_gb')} <= "
               f"{fmt(epochs, 'sys/gpu_mem_peak_reserved_gb')} <= {driver.total_gb:.1f} GiB")
    frag = [e["sys/gpu_fragmentation"] for e in epochs if "sys/gpu_fragmentation" in e]
    from trainables.telemetry import expandable_segments  # loads torch: only once CUDA is known to be here

    expandable = expandable_segments()  # the telemetry's own reading of both allocator variables
    checks.add(all(0 <= f <= 1 for f in frag) and (bool(frag) or expandable), f"{label}: fragmentation in [0, 1]",
               f"{fmt(epochs, 'sys/gpu_fragmentation')}" + (" (absent: expandable_segments)" if expandable else ""))
    for key in ("sys/gpu_util_pct", "sys/gpu_proc_util_pct"):
        values = [e[key] for e in epochs if key in e]
        checks.add(bool(values) and all(0 <= v <= 100 for v in values), f"{label}: {key} in [0, 100]",
                   fmt(epochs, key))
    power = [e["sys/gpu_power_w"] for e in epochs if "sys/gpu_power_w" in e]
    limit = driver.power_limit_w or math.inf
    checks.add(bool(power) and all(0 < p <= 1.1 * limit for p in power), f"{label}: power > 0 (and <= the limit)",
               f"{fmt(epochs, 'sys/gpu_power_w')} W, limit {driver.power_limit_w or 'unknown'} W")
    proc = [(e["sys/gpu_proc_mem_gb"], e["sys/gpu_mem_reserved_gb"], e["sys/gpu_mem_peak_reserved_gb"]) for e in epochs
            if "sys/gpu_proc_mem_gb" in e]
    checks.add(bool(proc) and all(r <= p <= peak + 1.25 * context_gb + 0.1 for p, r, peak in proc),
               f"{label}: process memory within reserved + CUDA context",
               f"{fmt(epochs, 'sys/gpu_proc_mem_gb')} GiB vs reserved {fmt(epochs, 'sys/gpu_mem_reserved_gb')} "
               f"+ context {context_gb:.2f}")
    steps = [(e["perf/step_ms_p50"], e["perf/step_ms_p95"], e["perf/samples_per_s"]) for e in epochs
             if "perf/step_ms_p50" in e]
    checks.add(bool(steps) and all(0 < p50 <= p95 and p50 / 1000 * sps / batch_size <= 1.2 for p50, p95, sps in steps),
               f"{label}: step times p50 <= p95, within the epoch's throughput",
               f"p50 {fmt(epochs, 'perf/step_ms_p50')} ms, p95 {fmt(epochs, 'perf/step_ms_p95')} ms")
    ooms = [e.get("sys/gpu_ooms", math.nan) for e in epochs]
    checks.add(all(o == 0 for o in ooms), f"{label}: no OOM counted, retries >= 0",
               f"ooms {fmt(epochs, 'sys/gpu_ooms')}, retries {fmt(epochs, 'sys/gpu_alloc_retries')}")


def fmt(epochs: list[dict[str, float]], key: str) -> str:
    values = [e[key] for e in epochs if key in e]
    if not values:
        return "absent"
    return f"{min(values):.3g}" if min(values) == max(values) else f"{min(values):.3g}..{max(values):.3g}"


# --------------------------------------------------------------------------------------------- the steps


def step_train(checks: Checks, work: Path, uri: str, driver: Driver, context_gb: float) -> dict[str, float]:
    """(1) scanner train with AMP on the GPU, and the same config on CPU for the throughput comparison."""
    data, small = work / "events.h5", work / "events_cpu.h5"
    for path, n in ((data, EVENTS), (small, CPU_EVENTS)):
        ran(checks, f"synth {path.name}", scanner(["data", "synth", "--out", str(path), "--events", str(n), "--size",
                                                   "128", "--seed", "0"], work))
    budget = "trials: 1, max_epochs: 1, final_top: 0"
    for name, path in (("gpucheck-train", data), ("gpucheck-cpu", small)):
        (work / f"{name}.yaml").write_text(space_text(name, path, "cpu: 1, gpu: 0", LR, budget))
    ran(checks, "(1) scanner train resnet18, AMP, GPU", scanner(["train", f"{work}/gpucheck-train.yaml",
                                                                 "--tracking-uri", uri], work))
    ran(checks, "(1) the same on CPU", scanner(["train", f"{work}/gpucheck-cpu.yaml", "--tracking-uri", uri], work,
                                               env=child_env(CUDA_VISIBLE_DEVICES="")))
    gpu_runs, cpu_runs = runs_of(uri, "gpucheck-train"), runs_of(uri, "gpucheck-cpu")
    if not gpu_runs or not cpu_runs:
        checks.add(False, "(1) runs in MLflow", f"{len(gpu_runs)} GPU, {len(cpu_runs)} CPU")
        return {}
    amp = gpu_runs[0].data.params.get("amp", "default (on for CUDA)")
    checks.add(str(amp).lower() not in ("false", "off"), "(1) AMP on", f"amp = {amp}")
    epochs = epochs_of(uri, gpu_runs[0])
    check_epochs(checks, "(1) train", epochs, driver, context_gb, batch_size=64)
    gpu_sps = gpu_runs[0].data.metrics.get("perf/samples_per_s", 0.0)
    cpu_sps = cpu_runs[0].data.metrics.get("perf/samples_per_s", math.inf)
    checks.add(gpu_sps > cpu_sps, "(1) GPU throughput above CPU",
               f"{gpu_sps:.0f} vs {cpu_sps:.0f} samples/s ({gpu_sps / cpu_sps:.1f}x)")
    cpu_gpu_keys = [k for k in cpu_runs[0].data.metrics if k.startswith("sys/gpu")]
    checks.add(not cpu_gpu_keys, "(1) no sys/gpu key on the CPU run", ", ".join(cpu_gpu_keys) or "none")
    return epochs[-1] if epochs else {}


def step_sweep(checks: Checks, work: Path, uri: str, driver: Driver, context_gb: float) -> None:
    """(2) 4 trials at gpu: 0.5, two at a time: they share the device, and the telemetry shows it."""
    (work / "barrier").mkdir(exist_ok=True)
    (work / f"{SWEEP}.yaml").write_text(space_text(
        SWEEP, work / "events.h5", "cpu: 2, gpu: 0.5, concurrent: 2", LR,
        "trials: 3, max_epochs: 2, scheduler: fifo, sampler: random, final_top: 1"))
    plan = scanner(["run", f"{work}/{SWEEP}.yaml", "--dry-run"], work)
    line = next((ln for ln in plan.stdout.splitlines() if ln.startswith("Resources:")), plan.stderr.strip()[-200:])
    checks.add("runs 2 trial(s) at once" in line, "(2) --dry-run: 2 at once", line)
    barrier = child_env(SCANNER_START_BARRIER=f"{work / 'barrier'}:2")  # the first two start together
    ran(checks, "(2) sweep of 4 trials at gpu: 0.5", scanner(["run", f"{work}/{SWEEP}.yaml", "--tracking-uri", uri,
                                                             "--quiet"], work, env=barrier))
    runs = runs_of(uri, SWEEP)
    checks.add(len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs), "(2) 4 trials finished",
               ", ".join(f"{r.data.tags.get('scan.trial_id')} {r.info.status}" for r in runs))
    all_epochs = [epochs_of(uri, r) for r in runs]
    check_epochs(checks, "(2) sweep", [e for ep in all_epochs for e in ep], driver, context_gb, batch_size=64)
    sharing = [e.get("sys/gpu_procs_sharing", 0) for ep in all_epochs for e in ep]
    checks.add(max(sharing, default=0) >= 2, "(2) two processes share the device while two trials overlap",
               f"sys/gpu_procs_sharing per epoch: {sorted(sharing)}")
    proc = [e["sys/gpu_proc_mem_gb"] for ep in all_epochs[:2] for e in ep[:1] if "sys/gpu_proc_mem_gb" in e]
    checks.add(sum(proc) <= driver.total_gb, "(2) the sharing processes fit the device",
               f"{' + '.join(f'{p:.2f}' for p in proc)} <= {driver.total_gb:.1f} GiB")


BALLAST = """
import sys, torch
free, total = torch.cuda.mem_get_info()
keep = int(float(sys.argv[1]) * 2**30)
block = torch.empty(max(0, free - keep), dtype=torch.uint8, device="cuda")
print("ready", free - keep, flush=True)
sys.stdin.read()
"""


def step_oom(checks: Checks, work: Path, uri: str, last_epoch: dict[str, float], context_gb: float) -> None:
    """(3) another process holds all but a few GiB; one trial's batch (the whole training split) cannot fit."""
    peak = last_epoch.get("sys/gpu_mem_peak_reserved_gb", 2.0)
    headroom = 2 * (context_gb + peak) + 1.0  # what the batch-64 trials need, twice, plus 1 GiB
    huge = int(EVENTS * 0.6)  # about the training split: the loader's one and only batch
    (work / f"{OOM_SWEEP}.yaml").write_text(space_text(
        OOM_SWEEP, work / "events.h5", "cpu: 2, gpu: 1, concurrent: 1", f"  batch_size: {{choice: [64, {huge}]}}\n",
        "trials: 2, max_epochs: 1, scheduler: fifo, sampler: grid, final_top: 0, max_failures: 0"))
    ballast = subprocess.Popen([sys.executable, "-c", BALLAST, str(headroom)], env=child_env(), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        ready = ballast.stdout.readline().split()
        checks.add(ready[:1] == ["ready"], "(3) another process holds the GPU",
                   f"{int(ready[1]) / GIB:.1f} GiB held, {headroom:.1f} GiB left" if len(ready) == 2 else "no answer")
        done = scanner(["run", f"{work}/{OOM_SWEEP}.yaml", "--tracking-uri", uri, "--quiet"], work)
    finally:
        ballast.stdin.close()
        ballast.wait(30)
    checks.add(done.returncode in (0, 1), "(3) the sweep ends", f"exit {done.returncode}")
    runs = runs_of(uri, OOM_SWEEP)
    failed = [r for r in runs if r.info.status == "FAILED"]
    others = [r for r in runs if r not in failed]
    reason = failed[0].data.tags.get("scan.failure", "") if failed else ""
    checks.add(len(failed) == 1 and failed[0].data.params.get("batch_size") == str(huge),
               "(3) the huge-batch trial ended FAILED", f"{len(failed)} failed of {len(runs)}")
    checks.add("out of memory" in reason.lower(), "(3) its reason says out of memory", reason[-200:] or "no reason")
    checks.add(len(others) == 2 and all(r.info.status == "FINISHED" for r in others), "(3) the others finished",
               ", ".join(f"batch {r.data.params.get('batch_size')} {r.info.status}" for r in others))


def step_export(checks: Checks, work: Path, uri: str) -> None:
    """(4) the best trial of the sweep to ONNX, when ``scanner export`` exists."""
    verbs = scanner(["--help"], work).stdout
    if " export " not in verbs:
        print("  (4) skipped: this scanner has no export verb")
        return
    out = work / "best.onnx"
    ran(checks, "(4) scanner export best-of:" + SWEEP, scanner(["export", f"best-of:{SWEEP}", "--out", str(out),
                                                               "--tracking-uri", uri], work))
    size = out.stat().st_size if out.exists() else 0
    checks.add(size > 0, "(4) the ONNX file", f"{out} {size} B")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="work here (default: a temporary folder, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (data, mlflow.db, scans/)")
    args = parser.parse_args(argv)
    missing = cuda_missing()
    if missing:
        print(missing)
        return 0
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="gpucheck_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    checks, begin = Checks(), time.monotonic()
    driver = driver_view()
    print(f"gpu-check on {driver.name}: {driver.total_gb:.1f} GiB, power limit {driver.power_limit_w} W; in {work}")
    try:
        context = cuda_context_gb(checks)
        last = step_train(checks, work, uri, driver, context)
        step_sweep(checks, work, uri, driver, context)
        step_oom(checks, work, uri, last, context)
        step_export(checks, work, uri)
    finally:
        elapsed = time.monotonic() - begin
        checks.add(elapsed <= BUDGET_S, "within 5 minutes", f"{elapsed:.0f} s")
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return checks.summary()


if __name__ == "__main__":
    sys.exit(main())
