"""`scanner data synth | inspect | import-images`: make, check and convert HDF5 event files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scanner.cli.common import OneLineParser, example_help

IMPORT_LAYOUT = """\
folder layout (the DUNE CVN tutorial style):
  DIR/<class_name>/<event_id>_<view>.png     e.g. DIR/nueCC/ev0042_xz.png + DIR/nueCC/ev0042_yz.png
  class names = the sub-folder names, sorted (label = their index); views = the _<view> suffixes, sorted;
  every event needs every view, all of one size; 8-bit grayscale -> uint8, 16-bit/colour -> float32.
  A seeded `split` (70/15/15) and `event_id` (<class>/<event_id>) are written too.
"""


def register(sub, parent):
    p = sub.add_parser("data", help="make, check and convert HDF5 event files",
                       description="Make (synth), check (inspect) and convert (import-images) HDF5 event files.",
                       **example_help("scanner data synth --out lartpc.h5 --events 5000"))
    verbs = p.add_subparsers(dest="data_verb", metavar="DATA_VERB", parser_class=OneLineParser)
    verbs.required = True
    _register_synth(verbs, parent)
    _register_inspect(verbs, parent)
    _register_import(verbs, parent)


def _register_synth(verbs, parent):
    s = verbs.add_parser("synth", parents=[parent], help="write a synthetic two-view LArTPC data set",
                         description="Synthetic neutrino events in a liquid-argon TPC: x-z and y-z views, labels "
                                     "(NC, nueCC, numuCC[, nutauCC]), lepton-direction targets and truth.",
                         **example_help("scanner data synth --out lartpc.h5 --events 5000 --size 128 --seed 0\n"
                                      "  scanner data synth --out noisy.h5 --events 5000 --size 128 --seed 0 "
                                      "--noise 0.2 --dead-wires 0.05"))
    s.add_argument("--out", required=True, type=Path, help="the HDF5 file to write")
    s.add_argument("--events", type=int, default=5000, help="number of events (default 5000: a few-minute sweep)")
    s.add_argument("--size", type=int, default=128, help="pixels per side of each view (default 128)")
    s.add_argument("--seed", type=int, default=0, help="same seed and arguments -> same file (default 0)")
    s.add_argument("--classes", default="nc,nue,numu", help="comma list of nc, nue, numu, nutau (default nc,nue,numu)")
    knobs = s.add_argument_group("detector (systematics: the same seed gives the same events, differently detected)")
    knobs.add_argument("--noise", type=float, default=0.1, metavar="MIP",
                       help="electronic noise RMS, in MIP per pixel (default 0.1)")
    knobs.add_argument("--dead-wires", type=float, default=0.02, metavar="FRACTION",
                       help="fraction of dead wire columns per view (default 0.02; more keeps the nominal ones)")
    knobs.add_argument("--threshold", type=float, default=0.3, metavar="MIP",
                       help="zero-suppression threshold, in MIP per pixel (default 0.3)")
    knobs.add_argument("--diffusion", type=float, default=1.0, metavar="FACTOR",
                       help="factor on the transverse diffusion of the drifting charge (default 1.0)")
    knobs.add_argument("--energy-scale", type=float, default=1.0, metavar="FACTOR",
                       help="factor on the collected charge, a calibration shift (default 1.0)")
    s.set_defaults(handler=_synth)


def _register_inspect(verbs, parent):
    s = verbs.add_parser("inspect", parents=[parent], help="summarise a file, scan for NaN/inf, draw events",
                         description="Shapes, dtype, classes and counts, split sizes, value ranges, a targets "
                                     "summary, a full NaN/inf scan, and optionally a PNG event display.",
                         **example_help("scanner data inspect lartpc.h5 --display events.png"))
    s.add_argument("file", type=Path, help="the HDF5 events file")
    s.add_argument("--display", type=Path, help="write a PNG with a few events per class, views side by side")
    s.set_defaults(handler=_inspect)


def _register_import(verbs, parent):
    s = verbs.add_parser("import-images", parents=[parent], help="convert folders of per-view PNGs to HDF5",
                         description="Convert folders of two-view PNG images (one folder per class) to the HDF5 "
                                     "schema.\n\n" + IMPORT_LAYOUT,
                         epilog="example:\n  scanner data import-images pngs/ --out events.h5",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("dir", type=Path, help="the folder with one sub-folder per class")
    s.add_argument("--out", required=True, type=Path, help="the HDF5 file to write")
    s.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split (default 0)")
    s.set_defaults(handler=_import)


def _synth(args) -> int:
    # the data tools load torch and h5py: not for --help
    from trainables.data.synth import CLI_FLAGS, Detector, write_synthetic

    detector = Detector(noise_mips=args.noise, dead_wire_fraction=args.dead_wires, threshold_mips=args.threshold,
                        diffusion=args.diffusion, energy_scale=args.energy_scale)
    out = write_synthetic(args.out, events=args.events, size=args.size, seed=args.seed, classes=args.classes,
                          detector=detector)
    changed = " ".join(f"--{CLI_FLAGS[k]} {v:g}" for k, v in detector.changed().items())
    what = f"; detector variant: {changed}" if changed else ""
    print(f"wrote {out} ({args.events} events, 2x{args.size}x{args.size}{what}); next: scanner data inspect {out}")
    return 0


def _inspect(args) -> int:
    # the data tools load torch and h5py: not for --help
    from trainables.data.inspect import inspect_file

    for line in inspect_file(args.file, display=args.display):
        print(line)
    return 0


def _import(args) -> int:
    # the data tools load torch and h5py: not for --help
    from trainables.data.import_images import import_images

    out = import_images(args.dir, args.out, seed=args.seed)
    print(f"wrote {out}; next: scanner data inspect {out} --display events.png", file=sys.stdout)
    return 0
