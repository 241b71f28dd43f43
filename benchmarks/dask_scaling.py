# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Files per second of `astro_aeqa.parallel.score_files` on 1 and 2 Dask workers.

Each worker is a process with one Dask thread and one torch thread. The
frames are simulated (clean, ``--size`` square, 8 by default at 1024x1024)
and written to a temporary directory; the model is ``--model`` or a
``small`` model trained for a few steps here (its speed, not its quality,
matters). Each cluster is started and warmed up (torch imported, one frame
scored) before the timed run, which includes loading the model on the
workers, reading, scoring and the summary table; the best of ``--repeat``
runs counts. The ratio of the 2-worker to the 1-worker rate is the speed-up
(target of issue 6: at least 1.7). ``s/file`` is the median time a worker
spent on one file.

Run from the repository root: ``python benchmarks/dask_scaling.py
[--n-frames 8] [--size 1024] [--workers 1 2] [--repeat 3] [--model PATH]
[--write-masks]``
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def _frames(directory, n_frames, size):
    from astro_aeqa.simulation import simulate_image

    paths = []
    for i in range(n_frames):
        path = Path(directory) / f"frame_{i:03d}.fits"
        simulate_image((size, size), background="cloud" if i % 4 == 3 else None, seed=i).write(path)
        paths.append(path)
    return paths


def _train_model(path):
    from astro_aeqa import AEQualityEvaluator
    from astro_aeqa.simulation import simulate_image

    # enough held-out patches for a finite threshold; the weights barely matter for speed
    references = [simulate_image((512, 512), seed=100 + i).ccd for i in range(4)]
    ev = AEQualityEvaluator("small", device="cpu", seed=0)
    ev.fit(references, n_epochs=1, steps_per_epoch=4, batch_size=4, progress_bar=False)
    ev.save(path)
    return path


def _time_workers(paths, model, n_workers, out_root, write_masks, repeat):
    """Best wall time of ``repeat`` runs, and the median seconds per file on a worker."""
    import numpy as np
    from distributed import Client, LocalCluster

    from astro_aeqa.parallel import score_files

    options = {"write_masks": write_masks, "progress_bar": False, "scheduler": None}
    times, per_file = [], []
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        options["scheduler"] = client
        score_files(paths[:n_workers], model, output_dir=out_root / f"warm{n_workers}",
                    **options)  # fmt: skip
        for i in range(repeat):
            t0 = time.perf_counter()
            table = score_files(paths, model, output_dir=out_root / f"run{n_workers}_{i}",
                                torch_threads=1, **options)  # fmt: skip
            times.append(time.perf_counter() - t0)
            per_file.append(float(np.median(table["seconds"].value)))
            failed = [row["file"] for row in table if row["status"] != "ok"]
            if failed:
                sys.exit(f"these frames failed: {failed}")
    return min(times), float(np.median(per_file))


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--n-frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default=None, help="model file (default: train a tiny one)")
    parser.add_argument("--write-masks", action="store_true", help="also write <stem>_aeqa.fits")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best counts")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="aeqa_dask_scaling_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = _frames(tmp, args.n_frames, args.size)
        model = args.model or _train_model(tmp / "small.aeqa.safetensors")
        print(
            f"{args.n_frames} frames of {args.size}x{args.size}, model {Path(model).name}, "
            f"{torch.get_num_threads()} cores for torch here; set-up {time.perf_counter() - t0:.1f} s"
        )
        print(f"{'workers':>7} {'seconds':>8} {'files/s':>8} {'speed-up':>8} {'s/file':>7}")
        results = {}
        for n in args.workers:
            seconds, per_file = _time_workers(paths, model, n, tmp, args.write_masks, args.repeat)
            rate = args.n_frames / seconds
            results[n] = {
                "seconds": seconds,
                "files_per_second": rate,
                "worker_s_per_file": per_file,
            }
            base = results[args.workers[0]]["files_per_second"]
            print(f"{n:>7} {seconds:>8.2f} {rate:>8.3f} {rate / base:>8.2f} {per_file:>7.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
