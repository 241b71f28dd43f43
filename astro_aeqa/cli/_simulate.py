# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa simulate``: write simulated frames with their truth."""

import logging
from pathlib import Path

from astropy import units as u

__all__ = []

log = logging.getLogger(__name__)

# the default set: (file stem, background, level)
_DEFAULT_SET = [
    ("clean", None),
    ("cloud", "cloud"),
    ("moon", "moon"),
    ("shutter", "shutter"),
]


def register(subparsers):
    parser = subparsers.add_parser(
        "simulate",
        help="write simulated FITS frames with truth",
        description=(
            "Write simulated frames (PRIMARY image with WCS, TRUTH contamination map and CATALOG "
            "truth table) and print their paths. Without --background a small set is written: "
            "a clean, a cloudy, a moonlit and a shutter frame."
        ),
    )
    parser.add_argument(
        "--output-dir", default=".", help="directory of the FITS files (default: .)"
    )
    parser.add_argument(
        "--n-frames",
        type=int,
        default=None,
        help="write a sequence of N frames with drifting clouds",
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=2,
        metavar=("NY", "NX"),
        default=(1024, 1024),
        help="frame shape (default: 1024 1024)",
    )
    parser.add_argument(
        "--instrument",
        choices=["paper", "gwac"],
        default="paper",
        help="instrument preset (default: paper, the 2.5 m telescope of the paper)",
    )
    parser.add_argument(
        "--fwhm",
        type=float,
        default=None,
        metavar="ARCSEC",
        help="seeing FWHM in arcsec (default: the instrument's typical seeing)",
    )
    parser.add_argument(
        "--background",
        nargs="+",
        default=None,
        metavar="NAME",
        help="backgrounds of every frame: cloud moon shutter trail spikes",
    )
    parser.add_argument("--level", type=float, default=0.6, help="background level in [0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)
    return parser


def run(args):
    from ..simulation import GWAC_LIKE, PAPER_2P5M, simulate_image, simulate_sequence

    instrument = {"paper": PAPER_2P5M, "gwac": GWAC_LIKE}[args.instrument]
    fwhm = None if args.fwhm is None else args.fwhm * u.arcsec
    outdir = Path(args.output_dir)
    shape = tuple(args.shape)
    prefix = instrument.name.lower()
    jobs = []
    if args.n_frames is not None:
        if args.n_frames < 1:
            msg = f"--n-frames must be at least 1, got {args.n_frames}"
            raise ValueError(msg)
        background = args.background if args.background is not None else ["cloud"]
        frames = simulate_sequence(
            args.n_frames,
            shape=shape,
            instrument=instrument,
            fwhm=fwhm,
            seed=args.seed,
            background=background,
            level=args.level,
            progress_bar=args.progress_bar,
        )
        jobs = [(outdir / f"{prefix}_seq_{i:04d}.fits", frame) for i, frame in enumerate(frames)]
    else:
        if args.background is not None:
            plan = [("_".join(args.background), args.background)]
        else:
            plan = _DEFAULT_SET
        for i, (stem, background) in enumerate(plan):
            path = outdir / f"{prefix}_{stem}_s{args.seed}.fits"
            if path.exists() and not args.overwrite:
                msg = f"{path}: file exists; pass --overwrite to replace it"
                raise FileExistsError(msg)
            sim = simulate_image(
                shape,
                instrument=instrument,
                fwhm=fwhm,
                background=background,
                level=args.level,
                seed=args.seed + i,
            )
            jobs.append((path, sim))
    for path, _ in jobs:
        if path.exists() and not args.overwrite:
            msg = f"{path}: file exists; pass --overwrite to replace it"
            raise FileExistsError(msg)
    for path, sim in jobs:
        sim.write(path, overwrite=args.overwrite)
        log.debug("wrote %s", path)
        print(path)
    return 0
