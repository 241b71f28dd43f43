# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Throughput of ``aeqa mask`` on a batch: one file after another, and on a
local Dask cluster (``--n-workers``).

Each run is the command a user types, started as a fresh process
(``python -m astro_aeqa.cli -q mask FRAMES --output-dir DIR [--n-workers N]``),
so the times include everything a user waits for: start-up, starting the
cluster and loading the model on its workers, reading, scoring, masking,
writing ``<stem>_aeqa.fits`` and ``scores.ecsv``, and closing the cluster.
The runs are interleaved (serial, then each worker count, ``--repeat``
times) so that all see the same machine load.

Reported per configuration, medians first (best in brackets): wall seconds,
frames per second, the ratio to the serial rate, CPU-seconds (user + system
of the command and of every process it waited for), and the processes left
behind after the command returned (found by a marker in their environment;
they are ended after the count). The load average is printed before each
run. The scores of every configuration are checked against the serial ones.

The frames are simulated star fields (``--size`` square, 8 of 4096x4096 by
default; every fourth one cloudy), written once to ``--frames-dir`` (default:
a temporary directory) and reused if present. The model is the shipped one
unless ``--model`` names a file.

Run from the repository root: ``python benchmarks/dask_scaling.py
[--n-frames 8] [--size 4096] [--workers 2] [--repeat 3] [--frames-dir DIR]
[--model PATH] [--json benchmarks/results/dask_scaling.json]``
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

_TAG = "AEQA_BENCHMARK_RUN"


def make_frames(directory, n_frames, size):
    """Simulated frames ``frame_NNN.fits`` in ``directory`` (kept if already there)."""
    from astro_aeqa.simulation import simulate_image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_frames):
        path = directory / f"frame_{size}_{i:03d}.fits"
        if not path.exists():
            background = "cloud" if i % 4 == 3 else None
            simulate_image((size, size), background=background, level=0.6, seed=i).ccd.write(
                path, overwrite=True
            )
        paths.append(path)
    return paths


def processes_with_tag(tag):
    """Ids of the running processes whose environment holds ``AEQA_BENCHMARK_RUN=tag``."""
    marker = f"{_TAG}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def run_command(argv, *, env_tag):
    """Run ``argv``; return wall seconds, CPU-seconds and the processes left behind."""
    env = {**os.environ, _TAG: env_tag}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    left = processes_with_tag(env_tag)
    for pid in left:  # the benchmark's own leftovers: end them so the next run is fair
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "sys_s": after.ru_stime - before.ru_stime,
        "load_1min_before": load,
        "processes_left": len(left),
    }


def _scores(out_dir):
    from astropy.table import Table

    table = Table.read(Path(out_dir) / "scores.ecsv", format="ascii.ecsv")
    if not np.all(table["status"] == "ok"):
        sys.exit(f"{out_dir}: some frames failed:\n{table['file', 'status', 'error']}")
    return np.asarray(table["score"], float)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--workers", type=int, nargs="+", default=[2])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--model", default="default", help="model file (default: the shipped one)")
    parser.add_argument("--frames-dir", default=None, help="where the frames are kept")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="aeqa_dask_scaling_"))
    try:
        t0 = time.perf_counter()
        paths = make_frames(args.frames_dir or tmp / "frames", args.n_frames, args.size)
        setup = time.perf_counter() - t0
        configs = {"serial": []} | {f"n_workers={n}": ["--n-workers", str(n)] for n in args.workers}
        runs = {name: [] for name in configs}
        reference = None
        max_score_change = 0.0
        for i in range(args.repeat):
            for name, extra in configs.items():
                out = tmp / f"out_{i}_{name.replace('=', '')}"
                command = [sys.executable, "-m", "astro_aeqa.cli", "-q", "mask", *map(str, paths)]
                command += ["--model", args.model, "--output-dir", str(out), *extra]
                run = run_command(command, env_tag=uuid.uuid4().hex)
                scores = _scores(out)
                if reference is None:
                    reference = scores
                change = np.max(np.abs(scores - reference) / np.abs(reference))
                max_score_change = max(max_score_change, float(change))
                shutil.rmtree(out)  # outside the timing: deleting is no part of the run
                runs[name].append(run)
                print(
                    f"run {i + 1}/{args.repeat} {name:>12}: {run['wall_s']:6.2f} s wall, "
                    f"{run['cpu_s']:6.2f} CPU-s, load {run['load_1min_before']:.2f}, "
                    f"{run['processes_left']} processes left",
                    flush=True,
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = args.n_frames
    results = {}
    serial_rate = n / float(np.median([r["wall_s"] for r in runs["serial"]]))
    print(
        f"\n{n} frames of {args.size}x{args.size}, model {args.model}, {os.cpu_count()} cores; "
        f"frames made in {setup:.0f} s; load average now "
        + " ".join(f"{v:.2f}" for v in os.getloadavg())
    )
    print(
        f"{'':>12} {'wall s':>14} {'frames/s':>15} {'x serial':>9} {'CPU-s':>14} "
        f"{'CPU-s/frame':>11} {'left':>5}"
    )
    for name, rs in runs.items():
        wall = [r["wall_s"] for r in rs]
        cpu = [r["cpu_s"] for r in rs]
        med, best = float(np.median(wall)), float(np.min(wall))
        results[name] = {
            "wall_median_s": med,
            "wall_best_s": best,
            "frames_per_s_median": n / med,
            "frames_per_s_best": n / best,
            "speedup_median": n / med / serial_rate,
            "cpu_median_s": float(np.median(cpu)),
            "cpu_best_s": float(np.min(cpu)),
            "sys_median_s": float(np.median([r["sys_s"] for r in rs])),
            "processes_left_max": max(r["processes_left"] for r in rs),
            "load_1min_before": [r["load_1min_before"] for r in rs],
            "runs": rs,
        }
        r = results[name]
        print(
            f"{name:>12} {med:6.2f} ({best:5.2f}) {n / med:6.3f} ({n / best:6.3f}) "
            f"{r['speedup_median']:9.2f} {r['cpu_median_s']:6.1f} ({r['cpu_best_s']:5.1f}) "
            f"{r['cpu_median_s'] / n:11.2f} {r['processes_left_max']:>5}"
        )
    print(f"largest relative score change against the first serial run: {max_score_change:.2g}")
    if args.json:
        meta = {
            "args": vars(args),
            "cpu_count": os.cpu_count(),
            "loadavg_after": os.getloadavg(),
            "max_relative_score_change": max_score_change,
        }
        Path(args.json).write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
