# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
What the camera reference and the trail search cost per frame.

Times ``evaluate`` of one 4096x4096 frame (noise and stars) zero-shot and
with a camera reference (``calibrate`` on two frames of the same shape),
each with the trail search off and on, beside photutils ``Background2D``
(64-pixel meshes) on the same array, in a rotating order; medians first.
About two minutes::

    python benchmarks/cost_of_terms.py [--size 4096] [--repeat 5]
"""

import argparse
import os
import time
import warnings

import numpy as np
from astropy.nddata import CCDData
from scipy import ndimage

from astro_aeqa import AEQualityEvaluator


def frame(shape, seed):
    rng = np.random.default_rng(seed)
    stars = np.zeros(shape, np.float32)
    n = shape[0] * shape[1] // 2000
    np.add.at(
        stars, (rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)), rng.uniform(50, 5e4, n)
    )
    data = ndimage.gaussian_filter(stars, 1.3) + 1000.0
    data += rng.normal(0.0, 1.0, shape).astype(np.float32) * np.sqrt(data)
    return CCDData(data.astype(np.float32), unit="electron", meta={"EXPTIME": 30.0})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    from photutils.background import Background2D

    ccd = frame((args.size, args.size), 0)
    zero_shot = AEQualityEvaluator.pretrained(device="cpu")
    camera = AEQualityEvaluator.pretrained(device="cpu")
    # on two frames of the timed shape, as a survey calibrates on its own
    # camera's frames (the reference's per-patch maps then apply)
    camera.calibrate([frame((args.size, args.size), s) for s in (1, 2)], progress_bar=False)
    runs = {"Background2D": lambda: Background2D(ccd.data, 64)}
    for name, ev in (("zero-shot", zero_shot), ("camera reference", camera)):
        for trails in (False, True):

            def run(ev=ev, trails=trails):
                ev.trails = trails
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ev.evaluate(ccd)

            runs[f"{name}, trails {'on' if trails else 'off'}"] = run
    for run in runs.values():  # warm-up
        run()
    times = {name: [] for name in runs}
    names = list(runs)
    for i in range(args.repeat):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    base = np.median(times["Background2D"])
    print(f"{args.size}x{args.size}, load average {os.getloadavg()[0]:.2f}")
    print(f"{'':34s} {'median s':>9s} {'best s':>7s} {'median / B2D':>13s}")
    for name, t in times.items():
        print(f"{name:34s} {np.median(t):9.2f} {min(t):7.2f} {np.median(t) / base:13.2f}")


if __name__ == "__main__":
    main()
