# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The evaluator on a GPU: end-to-end time per 4096x4096 frame and CPU/GPU parity.

Run on a machine with CUDA, from the repository root (about 3 minutes)::

    python benchmarks/gpu.py [--output benchmarks/results/gpu.json]

Sections:

``small``
    The shipped model (``AEQualityEvaluator.pretrained``) on CUDA: the
    median of 5 end-to-end runs (read the FITS file, score, mask, write the
    masked FITS file) and of ``evaluate`` alone, after a warm-up; a profile
    of one end-to-end run (the ten most costly functions).
``parity``
    The same frame on the CPU and on CUDA, float32 and bfloat16: the
    largest difference of the image and patch scores, and the fraction of
    equal mask pixels.
``paper``
    The ``paper`` preset trained for one epoch on simulated frames (its
    quality does not matter here, only its cost) and timed like ``small``,
    in bfloat16 and with ``torch.compile``.
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from astropy import units as u

from astro_aeqa import AEQualityEvaluator
from astro_aeqa.simulation import PAPER_2P5M, simulate_image

warnings.simplefilter("ignore")  # a benchmark: zero-shot warnings are expected


def _frame(shape, seed=1):
    return simulate_image(
        shape=shape, instrument=PAPER_2P5M, fwhm=1.0 * u.arcsec, background=None, seed=seed
    ).ccd


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeat):
    times = []
    for _ in range(repeat):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "all_s": times}


def _end_to_end(ev, path, out_dir):
    counter = iter(range(10**6))

    def run():
        ev.write_masked(path, Path(out_dir) / f"out{next(counter)}.fits", overwrite=True)

    return run


def _profile(fn, top=10):
    profile = cProfile.Profile()
    profile.enable()
    fn()
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(top + 15)
    return text.getvalue().splitlines()[: top + 30]


def time_model(ev, path, ccd, out_dir, repeat):
    ev.evaluate(ccd)  # warm-up (and compile)
    result = {
        "evaluate": _timed(lambda: ev.evaluate(ccd), repeat),
        "end_to_end": _timed(_end_to_end(ev, path, out_dir), repeat),
    }
    return result


def parity(ccd, device):
    out = {}
    cpu = AEQualityEvaluator.pretrained(device="cpu").evaluate(ccd)
    for precision in ("float32", "bfloat16"):
        gpu = AEQualityEvaluator.pretrained(device=device, precision=precision).evaluate(ccd)
        finite = np.isfinite(cpu.patch_scores)
        out[precision] = {
            "image_score_cpu": cpu.score,
            "image_score_gpu": gpu.score,
            "image_score_abs_diff": abs(cpu.score - gpu.score),
            "patch_score_max_abs_diff": float(
                np.max(np.abs(cpu.patch_scores[finite] - gpu.patch_scores[finite]))
            ),
            "mask_equal_fraction": float(np.mean(cpu.mask == gpu.mask)),
            "masked_fraction_cpu": float(cpu.mask.mean()),
            "masked_fraction_gpu": float(gpu.mask.mean()),
        }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="benchmarks/results/gpu.json")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sections", nargs="+", default=["small", "parity", "paper"])
    parser.add_argument("--device", default="cuda", help="'cpu' for a dry run of the script")
    args = parser.parse_args(argv)
    import torch

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU")
    results = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else device,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "size": args.size,
    }
    t0 = time.perf_counter()
    ccd = _frame((args.size, args.size))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frame.fits"
        ccd.write(path)
        if "small" in args.sections:
            ev = AEQualityEvaluator.pretrained(device=device)
            results["small"] = time_model(ev, path, ccd, tmp, args.repeat)
            results["small"]["profile"] = _profile(_end_to_end(ev, path, tmp))
            print(json.dumps({k: v for k, v in results["small"].items() if k != "profile"}))
            print("\n".join(results["small"]["profile"]))
        if "parity" in args.sections:
            small = _frame((1024, 1024), seed=3)
            results["parity"] = parity(small, device)
            print(json.dumps(results["parity"], indent=1))
        if "paper" in args.sections:
            frames = [_frame((1024, 1024), seed=10 + i) for i in range(4)]
            for name, options in (
                ("bfloat16", {"precision": "bfloat16"}),
                ("bfloat16_compile", {"precision": "bfloat16", "compile": True}),
            ):
                ev = AEQualityEvaluator(model="paper", device=device, seed=0, **options)
                t_fit = time.perf_counter()
                ev.fit(frames, n_epochs=1, progress_bar=False)
                fit_s = time.perf_counter() - t_fit
                results[f"paper_{name}"] = time_model(ev, path, ccd, tmp, args.repeat)
                results[f"paper_{name}"]["fit_1_epoch_s"] = fit_s
                print(name, json.dumps(results[f"paper_{name}"]))
    results["seconds"] = time.perf_counter() - t0
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
