# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
`astro_aeqa._stars.find_stars` beside the same catalogue made by photutils
``detect_sources`` + ``SourceCatalog`` on the whole frame.

``find_stars`` segments only windows around the pixels bright enough to
matter and measures the moments of all the windows' segments at once with
NumPy; `photutils_find_stars` (below) is the same function written with
photutils on the whole frame. Both give the same sources to 1e-8.

Frames of ``benchmarks/_scenes.py``, 4096x4096 by default: a sparse star
field (3,000 stars), a dense one (24,000) and a dense one under a
brightening cloud (scattered light above the detection threshold).

* By default each is timed alone, with the peak cuts the evaluator uses
  (``min_peak`` 20 for the PSF term and bright stars, 10 for the
  transparency star counts) and none, the two in alternating order, and the
  catalogues are compared.
* ``--evaluate`` times `~astro_aeqa.AEQualityEvaluator.evaluate` of the
  shipped model on the sparse and dense frames with each of the two (the
  star finding runs on a thread beside the network and the patch
  statistics), and checks that the score maps and masks are identical.

Medians first::

    python benchmarks/find_stars.py [--size 4096] [--repeat 7] [--evaluate]
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from astropy.table import QTable

sys.path.insert(0, str(Path(__file__).parent))
from _scenes import scene  # noqa: E402

from astro_aeqa import _stars as stars  # noqa: E402
from astro_aeqa._preprocessing import sky_statistics  # noqa: E402

COLUMNS = ("x", "y", "peak_snr", "fwhm", "elongation")


def photutils_find_stars(
    data, valid=None, *, stats=None, threshold=5.0, n_pixels=5, fwhm=None, min_peak=None
):
    """`astro_aeqa._stars.find_stars` written with photutils on the whole frame."""
    from photutils.segmentation import SourceCatalog, detect_sources

    data = np.asarray(data, dtype=np.float32)
    if valid is None:
        valid = np.isfinite(data)
    if stats is None:
        stats = sky_statistics(data, valid)
    snr = (data - np.float32(stats.level)) / np.float32(stats.noise)
    snr[~np.isfinite(snr)] = 0.0
    columns = {name: np.zeros(0) for name in COLUMNS}
    if (snr > threshold).any():
        # n_pixels=1, small segments cut below: a frame without sources does not warn
        segm = detect_sources(snr, threshold, 1, connectivity=8)
        keep = np.flatnonzero(segm.areas >= n_pixels)
        if keep.size:
            catalog = SourceCatalog(snr, segm)[keep]
            if min_peak is not None:  # evaluated properties carry over to the subset
                keep = np.flatnonzero(catalog.max_value >= min_peak)
                catalog = catalog[keep] if keep.size else None
        if keep.size:
            columns = {
                "x": catalog.x_centroid,
                "y": catalog.y_centroid,
                "peak_snr": catalog.max_value,
                "fwhm": catalog.fwhm.value,
                "elongation": catalog.elongation.value,
            }
    table = QTable({name: np.asarray(value, float) for name, value in columns.items()})
    return stars._flag_stars(table, fwhm, threshold)  # the package's own classification


VERSIONS = {"windows": stars.find_stars, "photutils": photutils_find_stars}


def difference(a, b):
    """Largest absolute difference of each column, sources matched by position."""
    if len(a) != len(b):
        return f"different sources ({len(a)} and {len(b)})"
    oa, ob = np.lexsort((a["y"], a["x"])), np.lexsort((b["y"], b["x"]))
    diff = [
        np.max(np.abs(np.asarray(a[c], float)[oa] - np.asarray(b[c], float)[ob]), initial=0.0)
        for c in COLUMNS
    ]
    same_star = bool(np.all(np.asarray(a["star"])[oa] == np.asarray(b["star"])[ob]))
    return (
        " ".join(f"{c} {d:.1e}" for c, d in zip(COLUMNS, diff, strict=True))
        + f"; star flags equal: {same_star}"
    )


def alternate(runs, repeat):
    """Time each of ``runs`` ``repeat`` times after a warm-up, in alternating order."""
    times = {name: [] for name in runs}
    results = {}
    for i in range(repeat + 1):
        for name in list(runs) if i % 2 else list(runs)[::-1]:
            t0 = time.perf_counter()
            results[name] = runs[name]()
            if i:
                times[name].append(time.perf_counter() - t0)
    return times, results


def use_find_stars(func):
    """Make every astro_aeqa module that imported `find_stars` call ``func``."""
    for module in list(sys.modules.values()):
        if (
            getattr(module, "__name__", "").startswith("astro_aeqa")
            and getattr(module, "find_stars", None) in VERSIONS.values()
        ):
            module.find_stars = func


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--evaluate", action="store_true", help="time evaluate() with each")
    args = parser.parse_args()
    shape = (args.size, args.size)
    scale = args.size**2 / 1024**2
    frames = {
        "sparse": scene("clean", shape=shape, n_stars=int(190 * scale), seed=1)[0],
        "dense": scene("clean", shape=shape, n_stars=int(1500 * scale), seed=2)[0],
    }
    if not args.evaluate:
        frames["dense, bright cloud"] = scene(
            "cloud_bright", shape=shape, n_stars=int(1500 * scale), seed=3
        )[0]
    print(
        f"{args.size}x{args.size}, {args.repeat} runs each, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'frame':20s} {'min_peak':>8s} {'version':>10s} {'sources':>8s} {'median s':>9s} {'best s':>7s}"
    )
    if args.evaluate:
        from astro_aeqa import AEQualityEvaluator

        ev = AEQualityEvaluator.pretrained(device="cpu")
        ev.evaluate(frames["sparse"])  # imports and warm-up

    for name, ccd in frames.items():
        data = ccd.data
        if args.evaluate:

            def run(version, ccd=ccd):
                use_find_stars(VERSIONS[version])
                return ev.evaluate(ccd)

            times, results = alternate({v: (lambda v=v: run(v)) for v in VERSIONS}, args.repeat)
            use_find_stars(VERSIONS["windows"])
            a, b = results.values()
            same = np.array_equal(
                np.asarray(a.score_map.data), np.asarray(b.score_map.data), equal_nan=True
            )
            same &= np.array_equal(a.mask, b.mask)
            for v, t in times.items():
                print(
                    f"{name:20s} {'evaluate':>8s} {v:>10s} {'':8s} {np.median(t):9.3f} {min(t):7.3f}"
                )
            print(f"{'':20s} score maps and masks identical: {bool(same)}")
            continue
        stats = sky_statistics(data, np.isfinite(data))
        for min_peak in (20.0, 10.0, None):
            runs = {
                v: (
                    lambda f=f, mp=min_peak, d=data, st=stats: f(d, stats=st, min_peak=mp, fwhm=3.0)
                )
                for v, f in VERSIONS.items()
            }
            times, found = alternate(runs, args.repeat)
            for v, t in times.items():
                print(
                    f"{name:20s} {str(min_peak):>8s} {v:>10s} {len(found[v]):8d} {np.median(t):9.3f} {min(t):7.3f}"
                )
            print(f"{'':20s} {'':8s} difference: {difference(*found.values())}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
