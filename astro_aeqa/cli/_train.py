# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""``aeqa train``: train (or fine-tune) a model on good reference frames."""

import logging
from pathlib import Path

import numpy as np

from ..io import check_output_path
from ..utils import check_writable_dir
from ._inputs import expand_inputs, load_evaluator, parse_hdu

__all__ = ["register", "run"]

log = logging.getLogger(__name__)

# Options that fix the architecture or the scoring: they come from the model with --init.
_FROM_INIT = ("model_preset", "patch_size", "tile_size", "normalization")


def register(subparsers):
    parser = subparsers.add_parser(
        "train",
        help="train a model on good reference frames",
        description=(
            "Train the autoencoder on good reference frames (REF: files, directories, glob "
            "patterns or @LIST files), calibrate the scores on held-out reference patches and "
            "write the model file. With --init the training starts from the weights of an "
            "existing model (fine-tuning on your own survey)."
        ),
    )
    parser.add_argument(
        "references",
        nargs="+",
        metavar="REF",
        help="good reference frames: FITS files, directories, glob patterns or @LIST files",
    )
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="MODEL",
        help="model file to write (conventionally *.aeqa.safetensors)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    parser.add_argument(
        "--hdu", default=None, help="HDU index or EXTNAME of the image in multi-extension files"
    )
    parser.add_argument(
        "--init",
        default=None,
        metavar="MODEL",
        help="start from the weights, patch size and normalisation of this model "
        "file (fine-tuning); the scores are calibrated anew",
    )
    arch = parser.add_argument_group("model (taken from the --init model when given)")
    arch.add_argument(
        "--model-preset",
        choices=["small", "paper"],
        default=None,
        help="architecture (default: small, 222,400 parameters; paper: 14.9 M)",
    )
    arch.add_argument(
        "--patch-size",
        type=int,
        default=None,
        help="side of the scored and masked patches in pixels (default: 64)",
    )
    arch.add_argument(
        "--tile-size",
        type=int,
        default=None,
        help="side of the reconstructed tiles (default: the evaluator's, 512 or 2 * patch size)",
    )
    arch.add_argument(
        "--crop-size",
        type=int,
        default=None,
        help="side of the random training crops (default: 128 or 2 * patch size); "
        "may be combined with --init",
    )
    arch.add_argument(
        "--normalization",
        choices=["noise", "minmax"],
        default=None,
        help="noise (default): background-subtracted, noise-scaled asinh; "
        "minmax: the paper's per-tile [0, 1] scaling",
    )
    sched = parser.add_argument_group("training")
    sched.add_argument("--n-epochs", type=int, default=20, help="most epochs (default: 20)")
    sched.add_argument("--batch-size", type=int, default=16, help="crops per step (default: 16)")
    sched.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="optimiser steps per epoch (default: training patches / batch size)",
    )
    sched.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="initial Adam learning rate (default: 1e-3)",
    )
    sched.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="reference patches held out for validation and calibration (default: 0.2)",
    )
    sched.add_argument(
        "--patience",
        type=int,
        default=5,
        help="epochs without improvement before stopping (default: 5)",
    )
    sched.add_argument(
        "--fpr",
        type=float,
        default=None,
        help="default false-mask rate stored in the model (default: 0.01)",
    )
    sched.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sched.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="write the training state there after each epoch",
    )
    sched.add_argument(
        "--resume", action="store_true", help="continue from --checkpoint when it exists"
    )
    parser.add_argument(
        "--device",
        default=None,
        help="auto, cpu, cuda, cuda:1, mps... (default: astro_aeqa.conf.device)",
    )
    parser.set_defaults(func=run)
    return parser


def _build_evaluator(args):
    from .._scoring import check_tile
    from ..evaluator import AEQualityEvaluator

    if args.init is not None:
        given = [
            f"--{name.replace('_', '-')}" for name in _FROM_INIT if getattr(args, name) is not None
        ]
        if given:
            msg = (
                f"{', '.join(given)} cannot be combined with --init: the architecture, patch "
                f"size and normalisation come from {args.init}"
            )
            raise ValueError(msg)
        ev = load_evaluator(args.init, device=args.device)
        # fit() trains ev.model_ in place, starting from the loaded weights.
        ev.seed = int(args.seed)
        if args.crop_size is not None:
            ev.crop_size = check_tile(args.crop_size, "--crop-size", ev.config.multiple)
        if args.fpr is not None:
            ev.fpr = _check_fpr(args.fpr)
        return ev
    options = {
        "patch_size": 64 if args.patch_size is None else args.patch_size,
        "tile_size": args.tile_size,
        "crop_size": args.crop_size,
        "normalization": args.normalization or "noise",
        "device": args.device,
        "seed": args.seed,
    }
    if args.fpr is not None:
        options["fpr"] = args.fpr
    return AEQualityEvaluator(args.model_preset or "small", **options)


def _check_fpr(fpr):
    if not 0.0 < fpr < 1.0:
        msg = f"--fpr must lie strictly between 0 and 1, got {fpr}"
        raise ValueError(msg)
    return float(fpr)


def run(args):
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        msg = f"{output}: file exists; pass --overwrite to replace it"
        raise FileExistsError(msg)
    if args.resume and args.checkpoint is None:
        msg = "--resume needs --checkpoint FILE (the checkpoint to continue from)"
        raise ValueError(msg)
    # a read-only or mistyped output directory is found before the training, not after
    check_writable_dir(output.parent)
    if args.checkpoint is not None:
        check_writable_dir(Path(args.checkpoint).parent)
    paths = expand_inputs(args.references)
    for reference in paths:
        check_output_path(output, inputs=[reference])
    ev = _build_evaluator(args)
    init_info = None
    if args.init is not None:
        if args.init == "default":
            from ..evaluator import default_model_path

            init_file = default_model_path().name
        else:
            init_file = Path(args.init).name
        init_info = {
            "file": init_file,
            "sha256_16": ev.model_sha,
            "training": dict(ev.training_),
        }
    log.info("training %s on %d reference frames", ev, len(paths))
    ev.fit(
        [str(p) for p in paths],
        n_epochs=args.n_epochs,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        learning_rate=args.learning_rate,
        val_fraction=args.val_fraction,
        patience=args.patience,
        hdu=parse_hdu(args.hdu),
        progress_bar=args.progress_bar,
        checkpoint=args.checkpoint,
        resume=args.resume,
    )
    ev.training_["references"] = [p.name for p in paths[:50]]
    if init_info is not None:
        ev.training_["init"] = init_info
    path = ev.save(output, overwrite=args.overwrite)
    training = ev.training_
    if not args.quiet:
        ref = ev.reference_scores_
        median = "-" if ref is None else f"{np.median(ref):.4g}"
        val = training.get("best_val_loss")
        val = "-" if val is None else f"{val:.4g}"
        print(
            f"trained on {training['n_frames']} frames for {training['n_epochs_run']} epochs "
            f"(best val loss {val}); calibrated on {getattr(ev, 'n_reference_', 0)} "
            f"patches, median score {median}"
        )
    print(path)
    return 0
