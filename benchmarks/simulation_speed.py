# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Speed of `astro_aeqa.simulation.simulate_image`.

Prints the seconds for 1024^2, 2048^2 and 4096^2 frames (clean, and with
clouds), with 20,000 stars at 4096^2 (1.2e-3 per pixel, the default
density) plus one galaxy per ten stars, and the ratio to a baseline timed in
the same run: one ``numpy.random.default_rng().poisson`` draw of the frame.

Run: ``python benchmarks/simulation_speed.py [--sizes 1024 2048 4096]``
"""

import argparse
import time

import numpy as np


def _best(func, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    from astro_aeqa.simulation import simulate_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    print(
        f"{'size':>6} {'n_stars':>8} {'baseline_s':>10} {'clean_s':>8} {'ratio':>6} "
        f"{'cloud_s':>8} {'ratio':>6}"
    )
    for n in args.sizes:
        shape = (n, n)
        rng = np.random.default_rng(0)
        lam = np.full(shape, 400.0, np.float32)
        base = _best(lambda: rng.poisson(lam), args.repeat)  # noqa: B023
        n_stars = int(round(1.2e-3 * n * n))
        clean = _best(lambda: simulate_image(shape, seed=1), args.repeat)  # noqa: B023
        cloud = _best(
            lambda: simulate_image(shape, background="cloud", level=0.6, seed=1),  # noqa: B023
            args.repeat,
        )
        print(
            f"{n:>6} {n_stars:>8} {base:>10.3f} {clean:>8.2f} {clean / base:>6.1f} "
            f"{cloud:>8.2f} {cloud / base:>6.1f}"
        )


if __name__ == "__main__":
    main()
