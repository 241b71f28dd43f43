# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa validate``: photometric validation of masks against Gaia or a local catalogue."""

import logging
from pathlib import Path

from ..exceptions import AEQAError
from ..utils import progress_bar, save_figure_atomic, write_table_atomic

__all__ = ["register", "run"]

log = logging.getLogger(__name__)


def register(subparsers):
    parser = subparsers.add_parser(
        "validate",
        help="photometric validation of masks against Gaia DR3 or a local catalogue",
        description=(
            "Measure aperture photometry of catalogue stars in each FILE, calibrate it on the "
            "catalogue, and write the per-star tables (ECSV) and the paper's studies (ECSV + PNG): "
            "error against score, masked against unmasked stars, mask ratio, light curves. The mask "
            "judged is the MASK extension of each file; the score is the AEQA_SCORE extension when "
            "present, else a background-RMS proxy."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="FITS frames with a WCS")
    parser.add_argument(
        "--catalog",
        required=True,
        nargs="+",
        metavar="FILE|gaia",
        help="reference catalogue file(s) (ECSV/CSV/FITS/VOTable with Gaia or VizieR column "
        "names; several files are stacked, e.g. Gaia chunks) or 'gaia' to query Gaia DR3",
    )
    parser.add_argument(
        "--output-dir", default=".", metavar="DIR", help="where to write (default .)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--hdu", default=None, help="HDU index or name of the image (default: first with data)"
    )
    parser.add_argument(
        "--fwhm", type=float, default=None, help="PSF FWHM in pixels (default: FWHM keyword or 3)"
    )
    parser.add_argument(
        "--positions",
        choices=["catalog", "detect"],
        default="catalog",
        help="forced photometry at the catalogue positions (default), or detect stars and "
        "match them within --match-radius",
    )
    parser.add_argument(
        "--aperture",
        type=float,
        default=None,
        metavar="R",
        help="aperture radius in pixels (default 1.5 FWHM)",
    )
    parser.add_argument(
        "--annulus",
        type=float,
        nargs=2,
        default=None,
        metavar=("RIN", "ROUT"),
        help="background annulus radii in pixels (default 3 and 5 FWHM)",
    )
    parser.add_argument(
        "--match-radius",
        type=float,
        default=None,
        metavar="ARCSEC",
        help="cross-match radius in arcsec with --positions detect (default: 1 arcsec or one "
        "pixel, the larger)",
    )
    parser.add_argument(
        "--snr-min", type=float, default=20.0, help="S/N of zero-point stars (default 20)"
    )
    parser.add_argument(
        "--min-matches",
        default="auto",
        help="fewest zero-point stars (default auto: a third of the unflagged stars at S/N >= 5, 3 to 10)",
    )
    parser.add_argument(
        "--g-range",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="G magnitude range of the stars measured (blends are checked against the whole "
        "catalogue)",
    )
    parser.add_argument(
        "--ruwe-max",
        type=float,
        default=1.4,
        help="stars with a larger RUWE are not measured (default 1.4; when the column exists)",
    )
    parser.add_argument(
        "--curve",
        choices=["auto", "offset", "linear", "poly2", "poly3", "spline"],
        default="auto",
        help="characteristic curve of the calibration (default auto: chosen by "
        "cross-validation; an offset for a CCD, a curve for a photographic plate)",
    )
    parser.add_argument(
        "--fit-slope",
        action="store_true",
        help="same as --curve linear",
    )
    parser.add_argument(
        "--color-term",
        action="store_true",
        help="fit a BP-RP colour term (the catalogue needs bp_rp or BP-RP)",
    )
    parser.add_argument(
        "--max-scatter",
        type=float,
        default=0.3,
        help="largest robust zero-point scatter accepted, mag (default 0.3)",
    )
    parser.add_argument(
        "--patch-size",
        type=int,
        default=64,
        help="patch size of the proxy score map when a file has none (default 64)",
    )
    parser.set_defaults(func=run)
    return parser


def _hdu(value):
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def _read(path, hdu):
    """Return ``(ccd, score_map)`` of one file, through astro_aeqa.io when it is there."""
    from ..validation._utils import as_ccd

    score_map = None
    try:
        from ..io import KEYWORDS, read_aeqa_fits
    except ImportError:
        read_aeqa_fits = None
    if read_aeqa_fits is not None and hdu is None:
        try:
            products = read_aeqa_fits(path)
        except (AEQAError, OSError, ValueError, KeyError):
            log.debug("%s is not an AEQA output file; reading it as an image", path)
        else:
            score_map = products.score_map
            psz = KEYWORDS["patch_size"]
            if score_map is not None and psz not in (score_map.meta or {}):
                header = getattr(products, "header", None) or {}
                if psz in header:
                    score_map.meta[psz] = header[psz]
                else:
                    score_map = None
            return products.ccd, score_map
    return as_ccd(str(path), hdu=hdu, name=str(path)), score_map


def run(args):
    from astropy import units as u

    from ..validation import (
        background_rms_score_map,
        error_vs_score,
        light_curve_study,
        load_catalog,
        mask_ratio_study,
        masked_vs_unmasked,
        measure_frame,
        query_gaia,
    )

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hdu = _hdu(args.hdu)
    g_range = tuple(args.g_range) if args.g_range else None
    min_matches = args.min_matches
    if min_matches != "auto":
        try:
            min_matches = int(min_matches)
        except ValueError:
            msg = f"--min-matches must be an integer or 'auto', got {min_matches!r}"
            raise AEQAError(msg) from None
    catalog = None
    use_gaia = len(args.catalog) == 1 and args.catalog[0].lower() == "gaia"
    if not use_gaia:
        catalog = load_catalog(args.catalog)  # whole: blends are checked against every row
    tables, written, n_failed = [], [], 0
    for path in progress_bar(args.files, enabled=args.progress_bar, desc="validate"):
        try:
            ccd, score_map = _read(path, hdu)
            if score_map is None:
                log.info("%s: no AEQA_SCORE map; using the background-RMS proxy score", path)
                score_map = background_rms_score_map(ccd, args.patch_size)
            cat = (
                catalog
                if catalog is not None
                else query_gaia(ccd, g_range=g_range if g_range else (None, None), name=str(path))
            )
            stars = measure_frame(
                ccd,
                cat,
                score_map=score_map,
                positions=args.positions,
                fwhm=args.fwhm,
                radius=args.aperture,
                annulus=tuple(args.annulus) if args.annulus else None,
                match_radius=None if args.match_radius is None else args.match_radius * u.arcsec,
                snr_min=args.snr_min,
                min_matches=min_matches,
                g_range=g_range,
                ruwe_max=args.ruwe_max,
                curve="linear" if args.fit_slope else args.curve,
                color_term=args.color_term,
                max_scatter=args.max_scatter,
                name=str(path),
            )
        except (AEQAError, OSError, ValueError) as exc:
            if len(args.files) == 1:
                raise
            log.error("%s: %s", path, exc)
            n_failed += 1
            continue
        tables.append(stars)
        m = stars.meta
        log.info(
            "%s: %s calibration, robust scatter %.3f mag on %d stars; %d stars, %d blended",
            path,
            m["curve"],
            m["zp_scatter"],
            m["n_zp"],
            m["n_matches"],
            m["n_blended"],
        )
        target = out_dir / f"{Path(path).name.split('.')[0]}_stars.ecsv"
        written.append(write_table_atomic(stars, target, overwrite=args.overwrite))
    if not tables:
        msg = "no file could be measured; see the errors above"
        raise AEQAError(msg)
    studies = [
        ("error_vs_score", error_vs_score, {}),
        ("masked_vs_unmasked", masked_vs_unmasked, {}),
        ("mask_ratio", mask_ratio_study, {}),
    ]
    if len(tables) >= 5:
        studies.append(("light_curves", light_curve_study, {"min_frames": min(5, len(tables))}))
    for stem, func, kwargs in studies:
        try:
            table, fig = func(tables, **kwargs)
        except ValueError as exc:
            log.warning("%s skipped: %s", stem, exc)
            continue
        table.meta.pop("per_frame", None)
        written.append(
            write_table_atomic(table, out_dir / f"validation_{stem}.ecsv", overwrite=args.overwrite)
        )
        written.append(
            save_figure_atomic(fig, out_dir / f"validation_{stem}.png", overwrite=args.overwrite)
        )
    for path in written:
        print(path)
    return 1 if n_failed else 0
