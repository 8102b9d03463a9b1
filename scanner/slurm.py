"""An sbatch script for a Ray cluster over a SLURM allocation, following Ray's documented pattern.

Head on the first node (``ray start --head --block &``), one worker per other node via ``srun``, then
``scanner run SPACE --address <head ip>:<port>`` on the head. See docs.ray.io, "Deploying on Slurm".
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from trainables.errors import BadInput

RAY_PORT = 6379  # Ray's default GCS port
HEAD_WAIT_S = 20  # Ray's guide waits for the head before starting workers
WORKER_WAIT_S = 5  # and a little for each worker to join

# What SLURM accepts, written unquoted into `#SBATCH` lines: one line each, no space, nothing a shell would read.
PARTITION = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*")  # a partition, or a comma list of them
TIME_LIMIT = re.compile(r"\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}|UNLIMITED|INFINITE")  # sbatch's --time formats
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # as a sweep's `name:`
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a newline or any control character: not even inside quotes


def _check(flag: str, value: str, pattern: re.Pattern, allowed: str) -> None:
    if not pattern.fullmatch(value):
        raise BadInput(f"{flag} {value!r}: not a value SLURM takes ({allowed}); fix {flag}")


def _check_quoted(flag: str, value: str) -> None:
    """Paths and URIs are shell-quoted in the script, so any printable character is safe; a newline is not."""
    if CONTROL.search(value):
        raise BadInput(f"{flag} {value!r}: holds a newline or control character, which would break the sbatch "
                       f"script; fix {flag}")


def check_script_values(name: str, partition: str | None, time_limit: str | None, paths: dict[str, str],
                        tracking_uri: str | None) -> None:
    """Every value written into the script, before anything is written: one line naming the value (BadInput)."""
    _check("the sweep name", name, JOB_NAME, "letters, digits, '.', '_', '-'")
    if partition is not None:
        _check("--partition", partition, PARTITION, "letters, digits, '.', '_', '-', comma-separated")
    if time_limit is not None:
        _check("--time", time_limit, TIME_LIMIT, "minutes, [days-]hours:minutes:seconds, or UNLIMITED")
    for flag, path in paths.items():
        _check_quoted(flag, path)
    if tracking_uri is not None:
        _check_quoted("--tracking-uri", tracking_uri)


def sbatch_script(space_path: Path, name: str, nodes: int, gpus_per_node: int, partition: str | None = None,
                  time_limit: str | None = None, cpus_per_node: int | None = None, tracking_uri: str | None = None,
                  workdir: Path | None = None) -> str:
    """The script's text; BadInput when a value would not survive being written into it."""
    workdir = (workdir or Path.cwd()).resolve()
    check_script_values(name, partition, time_limit, {"the space file": str(Path(space_path).resolve()),
                                                      "the working folder": str(workdir)}, tracking_uri)
    space = shlex.quote(str(Path(space_path).resolve()))
    lines = ["#!/bin/bash", f"#SBATCH --job-name=scan-{name}", f"#SBATCH --nodes={nodes}",
             "#SBATCH --exclusive", "#SBATCH --ntasks-per-node=1"]
    if gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-task={gpus_per_node}")
    if cpus_per_node:
        lines.append(f"#SBATCH --cpus-per-task={cpus_per_node}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if time_limit:
        lines.append(f"#SBATCH --time={time_limit}")
    lines.append(f"#SBATCH --output=scan-{name}-%j.log")
    cpus = '"${SLURM_CPUS_PER_TASK:-$(nproc)}"'
    tracking = f" --tracking-uri {shlex.quote(tracking_uri)}" if tracking_uri else ""
    lines += [
        "",
        "set -euo pipefail",
        f"cd {shlex.quote(str(workdir))}  # scans/ and mlflow.db live here",
        'export RAY_USAGE_STATS_ENABLED=0',
        'export RAY_worker_niceness=${RAY_worker_niceness:-0}  # trials at normal priority, not Ray\'s nice 15',
        "",
        'nodes=$(scontrol show hostnames "$SLURM_JOB_NODELIST")',
        "nodes_array=($nodes)",
        "head_node=${nodes_array[0]}",
        'head_ip=$(srun --nodes=1 --ntasks=1 -w "$head_node" hostname --ip-address | awk \'{print $1}\')',
        f"port={RAY_PORT}",
        'address="$head_ip:$port"',
        'echo "Ray head: $address"',
        "",
        'srun --nodes=1 --ntasks=1 -w "$head_node" \\',
        f'    ray start --head --node-ip-address="$head_ip" --port=$port --num-cpus={cpus} '
        f'--num-gpus={gpus_per_node} --include-dashboard=false --block &',
        f"sleep {HEAD_WAIT_S}",
        "",
        "worker_num=$((SLURM_JOB_NUM_NODES - 1))",
        'for ((i = 1; i <= worker_num; i++)); do',
        '    node_i=${nodes_array[$i]}',
        '    srun --nodes=1 --ntasks=1 -w "$node_i" \\',
        f'        ray start --address "$address" --num-cpus={cpus} --num-gpus={gpus_per_node} --block &',
        f"    sleep {WORKER_WAIT_S}",
        "done",
        "",
        f'scanner run {space} --address "$address"{tracking}',
        "",
    ]
    return "\n".join(lines)
