"""``scanner slurm``: the script's content (Ray's SLURM pattern) and that bash can parse it."""

from __future__ import annotations

import re
import subprocess

from scanner import cli


def _space(tmp_path, gpu=0):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: clu\ntask: classification\ndata: {path: nowhere.h5}\nobjective: {metric: val/accuracy, mode: max}\n"
        f"resources: {{cpu: 1, gpu: {gpu}, concurrent: 4}}\nfixed: {{model: small_cnn_tiny}}\n"
        "space:\n  lr: {float: [1.0e-4, 1.0e-2], log: true}\n"
    )
    return path


def test_script_follows_rays_slurm_pattern(tmp_path, capsys):
    out = tmp_path / "scan.sbatch"
    code = cli.main(["slurm", str(_space(tmp_path, gpu=0.5)), "--nodes", "3", "--gpus-per-node", "2",
                     "--partition", "gpu", "--time", "04:00:00", "--out", str(out),
                     "--tracking-uri", "http://mlflow.example:5000"])
    assert code == 0 and "sbatch" in capsys.readouterr().out
    text = out.read_text()
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))
    assert directives["nodes"] == "3" and directives["gpus-per-task"] == "2"
    assert directives["partition"] == "gpu" and directives["time"] == "04:00:00"
    head = [ln for ln in text.splitlines() if "ray start --head" in ln]
    assert len(head) == 1 and "--block" in head[0] and head[0].rstrip().endswith("&") and "--port=$port" in head[0]
    workers = [ln for ln in text.splitlines() if "ray start --address" in ln]
    assert len(workers) == 1 and "--num-gpus=2" in workers[0]
    assert text.index("ray start --head") < text.index("ray start --address") < text.index("scanner run")
    assert text.index("export RAY_worker_niceness=") < text.index("ray start --head")  # trials not at nice 15
    run = [ln for ln in text.splitlines() if ln.startswith("scanner run")][0]
    assert str(tmp_path / "s.yaml") in run and '--address "$address"' in run and "http://mlflow.example:5000" in run
    assert subprocess.run(["bash", "-n", str(out)]).returncode == 0


def test_gpus_asked_of_cpu_nodes_is_bad_input(tmp_path, capsys):
    code = cli.main(["slurm", str(_space(tmp_path, gpu=1)), "--nodes", "2", "--gpus-per-node", "0"])
    assert code == 2 and "resources.gpu" in capsys.readouterr().err
