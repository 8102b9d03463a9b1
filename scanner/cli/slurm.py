"""``scanner slurm SPACE.yaml --nodes N --gpus-per-node G``: an sbatch script that runs the sweep on a Ray cluster."""

from __future__ import annotations

from pathlib import Path

from scanner.cli.common import example_help
from scanner.slurm import sbatch_script
from search_spaces import check_resources, load_space
from trainables.errors import BadInput
from trainables.files import atomic_write_text


def register(sub, parent) -> None:
    p = sub.add_parser(
        "slurm",
        parents=[parent],
        help="write an sbatch script: a Ray cluster over the allocation, then scanner run against it",
        description="Write an sbatch script (Ray's SLURM pattern) that runs this sweep across N nodes.",
        **example_help("scanner slurm search_spaces/lartpc_3class.yaml --nodes 4 --gpus-per-node 4 --out scan.sbatch"),
    )
    p.add_argument("space", help="search-space YAML")
    p.add_argument("--nodes", type=int, required=True, help="nodes in the allocation (1 head + N-1 workers)")
    p.add_argument("--gpus-per-node", type=int, required=True, help="GPUs per node (0 for CPU nodes)")
    p.add_argument("--cpus-per-node", type=int, help="CPUs per node (default: all of the node)")
    p.add_argument("--partition", help="SLURM partition")
    p.add_argument("--time", help="time limit, e.g. 12:00:00")
    p.add_argument("--out", help="write the script here (default: print it)")
    p.set_defaults(handler=slurm_command)


def slurm_command(args) -> int:
    if args.nodes < 1 or args.gpus_per_node < 0:
        raise BadInput(f"--nodes {args.nodes} --gpus-per-node {args.gpus_per_node}: need >= 1 node and >= 0 GPUs")
    space = load_space(args.space, require_data=False)  # the data may live only on the cluster's file system
    # per node: a trial's CPUs and GPUs come from one node (Ray never splits a trial's bundle across nodes)
    check_resources(space, float(args.cpus_per_node or 10**6), float(args.gpus_per_node))
    text = sbatch_script(Path(args.space), space.name, args.nodes, args.gpus_per_node, args.partition, args.time,
                         args.cpus_per_node, args.tracking_uri)
    if not args.out:
        print(text, end="")
        return 0
    out = atomic_write_text(Path(args.out), text, executable=True)
    print(f"wrote {out}; submit it with: sbatch {out}")
    return 0
