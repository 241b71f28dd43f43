# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa skymap``: the score maps of many masked frames on one celestial grid."""

import logging
import os
from pathlib import Path

from astropy import units as u

from ..exceptions import InputDataError
from ..io import check_output_path
from ._inputs import expand_inputs

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers):
    parser = subparsers.add_parser(
        "skymap",
        help="combine the AEQA_SCORE maps of masked frames into one sky quality map",
        description=(
            "Reproject the AEQA_SCORE patch score maps of FILE (outputs of `aeqa mask`, "
            "<stem>_aeqa.fits) onto the optimal celestial grid that covers them, combine them "
            "where frames overlap, and write the map as FITS (scores, WCS, and a MASK of the "
            "pixels no frame covers) and optionally as a PNG. Needs reproject."
        ),
    )
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="outputs of `aeqa mask`: files, directories, glob patterns (quote them) or @LIST",
    )
    parser.add_argument("--output", required=True, metavar="FILE.fits", help="the FITS map")
    parser.add_argument("--png", default=None, metavar="FILE.png", help="also plot the map")
    parser.add_argument(
        "--combine",
        choices=["mean", "max"],
        default="mean",
        help="how overlapping frames combine: the mean score (default) or the worst",
    )
    parser.add_argument(
        "--resolution",
        type=float,
        default=None,
        metavar="ARCSEC",
        help="map pixel size in arcsec (default: the finest input, one patch)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.set_defaults(func=run)
    return parser


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def run(args):
    from ..skymap import plot_sky_quality_map, sky_quality_map, write_sky_quality_map

    outputs = [Path(args.output)] + ([Path(args.png)] if args.png else [])
    for path in outputs:
        if path.exists() and not args.overwrite:
            msg = f"{path}: file exists; pass --overwrite to replace it"
            raise FileExistsError(msg)
    # a map named explicitly as an input would be replaced by its own result
    for spec in args.files:
        if not spec.startswith("@") and Path(spec).is_file():
            for output in outputs:
                check_output_path(output, inputs=[spec])
    # an earlier map may sit among the inputs when a directory or a pattern is given
    found = expand_inputs(args.files)
    paths = [p for p in found if not any(_same_file(p, output) for output in outputs)]
    if not paths:
        msg = (
            f"the only input found is the --output map {args.output} itself; "
            "pass the outputs of `aeqa mask` (<stem>_aeqa.fits)"
        )
        raise InputDataError(msg)
    resolution = None if args.resolution is None else args.resolution * u.arcsec
    skymap = sky_quality_map(
        [str(p) for p in paths],
        resolution=resolution,
        combine=args.combine,
        progress_bar=args.progress_bar,
    )
    write_sky_quality_map(skymap, args.output, overwrite=args.overwrite)
    print(args.output)
    if args.png:
        import matplotlib.pyplot as plt

        plt.close(plot_sky_quality_map(skymap, path=args.png, overwrite=args.overwrite))
        print(args.png)
    covered = float((~skymap.mask).mean())
    log.info(
        "%d frames on %d x %d map pixels (%.0f%% covered)",
        len(paths),
        skymap.shape[1],
        skymap.shape[0],
        100 * covered,
    )
    return 0
