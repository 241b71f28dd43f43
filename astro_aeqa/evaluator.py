# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The evaluator: learn "good" from reference frames, score new frames patch by
patch, and mask the patches that the autoencoder cannot reconstruct.

`AEQualityEvaluator` is a facade: the network runs in
`astro_aeqa.nn.Reconstructor`, the scores are made by the pipeline of
``astro_aeqa._scoring``, and the calibration is an
`astro_aeqa.calibration.Calibration`.
"""

import importlib.resources
import logging
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, NDData

from . import io as aeqa_io
from ._result import QualityResult
from ._scoring import Scorer, ScoringOptions, check_fpr, check_patch_fits, frame_fwhm
from ._wcs import score_map_wcs
from .calibration import Calibration
from .config import conf
from .exceptions import InputDataError, ModelFileError
from .nn import (
    PRESETS,
    AutoencoderConfig,
    Reconstructor,
    build_model,
    load_model,
    save_model,
    train_autoencoder,
    weights_sha,
)
from .preprocessing import NORMALIZATIONS
from .stars import auto_patch_size
from .utils import check_int, file_sha256, thread_pool

__all__ = ["AEQualityEvaluator", "QualityResult", "aeqa_mask", "default_model_path"]

#: File name of the pretrained ``small`` model in ``astro_aeqa/data``.
DEFAULT_MODEL_FILE = "aeqa_small_default.safetensors"

log = logging.getLogger(__name__)

AGGREGATES = ("mean", "trimmed_mean", "median")
# Largest patch_size='auto' picks: the default crops (128 px) hold one such patch.
_AUTO_PATCH_MAX = 64


def _package_version():
    from . import __version__

    return __version__


def _forwarded(owner, name, doc, settable=True):
    """A property that reads (and sets) ``name`` of the evaluator's ``owner`` (a frozen one is replaced)."""

    def get(self):
        return getattr(getattr(self, owner), name)

    def set_(self, value):
        held = getattr(self, owner)
        if hasattr(held, "replace"):  # a frozen Calibration
            setattr(self, owner, held.replace(**{name: value}))
        else:
            setattr(held, name, value)

    return property(get, set_ if settable else None, doc=doc)


class AEQualityEvaluator:
    """
    Autoencoder image quality evaluator (Jia et al. 2024).

    Parameters
    ----------
    model : str or `~astro_aeqa.nn.AutoencoderConfig`, optional
        Architecture preset (``'small'``, the default, or ``'paper'``) or a
        configuration. The network is untrained until `fit` or `load`.
    patch_size : int or 'auto', optional
        Side of the square patches that are scored and masked, in pixels.
        ``'auto'``: chosen by `fit` from the PSF FWHM measured on the
        reference frames (`astro_aeqa.stars.auto_patch_size`).
    tile_size : int, optional
        Side of the tiles the network reconstructs at inference (a frame
        smaller than a tile is scored in one tile of its own size). The
        network is fully convolutional, so this can exceed ``crop_size``;
        large tiles waste less work on their margins. Default: 512, or
        ``2 * patch_size`` if larger.
    overlap : int, optional
        Margin of each tile that is discarded when tiles are stitched, so
        there are no seams. Default: ``min(32, tile_size // 4)``.
    crop_size : int, optional
        Side of the random training crops (and of the held-out calibration
        regions). Default: ``max(128, 2 * patch_size)``.
    normalization : {'noise', 'minmax'}, optional
        ``'noise'``: background-subtracted, noise-scaled, asinh-compressed
        frame; ``'minmax'``: the paper's per-tile [0, 1] scaling.
    aggregate : {'trimmed_mean', 'mean', 'median'}, optional
        Statistic of the absolute residual within a patch; ``'mean'`` is the
        paper's MAE. The default ``'trimmed_mean'`` drops each patch's
        brightest 10 % of residuals, which bright stars dominate; it has the
        higher patch AUROC in the quality benchmark.
    sky_term : bool, optional
        Add to each patch score the absolute median of the normalised patch,
        that is its sky offset from the frame's sky in units of the noise.
        The instance-normalised network cannot see a smooth offset well
        against the noise; this term makes clouds, the Moon and shutter
        shadows plain (see the quality benchmark). Only with
        ``normalization='noise'``; default `True` there. The paper's score
        is ``normalization='minmax', sky_term=False``.
    star_aware : bool, optional
        Score each patch without the pixels of well-modelled stars with a
        peak of at least 20 sky sigmas (round, of the reference frames'
        FWHM; see `astro_aeqa.stars.bright_star_mask`), and take its sky
        term without their wings, so that a patch whose high score a bright
        star explains is not masked. Trails, smeared, doubled and defocused
        stars are not such stars and still count. Default `True` (the
        quality benchmark).
    psf_term : bool, optional
        Also score the shape of the stars around each patch
        (`astro_aeqa.stars.psf_shape_map`: how much broader or more
        elongated than the reference PSF they are). The autoencoder scores
        smeared, doubled and defocused stars at chance, since a blurred star
        is easy to reconstruct. Calibration on clean frames puts both on one
        scale: a patch scores ``max(mae, m + s * (psf - m_psf) / s_psf)``,
        where ``m, s`` and ``m_psf, s_psf`` are the median and MAD of the
        clean reference patches' MAE and PSF term, so a patch keeps its MAE
        unless its stars are unusually misshapen. Without a calibration or
        a reference FWHM the term is not used. Default `True` (the quality
        benchmark).
    trails : bool, optional
        Find straight linear features (satellite, aircraft and meteor
        trails) with a matched filter over lines, and mask each along its
        whole length at the width it measures (pixels, not whole patches;
        the ``TRAIL`` flag). Bright stars' diffraction spikes and bleed
        columns are not trails. Default `True`.
    fpr : float, optional
        Default false-mask rate on clean reference patches, used to set the
        threshold when none is given. The default 0.005 keeps the fraction
        of stars masked on clean frames below 1 % in the quality benchmark
        (0.01 masks 1.1-1.3 %); it needs at least 199 clean reference
        patches to calibrate.
    morphology : tuple of int, optional
        Iterations of binary opening and closing of the patch mask (the
        paper's erosion and dilation). ``(0, 0)`` disables both. The default
        ``(0, 1)`` only closes: an opening erases every region one patch
        wide (satellite trails) and every isolated patch, so the mask of
        a clean frame would no longer follow ``fpr``; lone bright-star
        patches are handled by ``star_aware`` instead.
    device : str or `torch.device`, optional
        ``'auto'`` (CUDA when present), ``'cpu'``, ``'cuda'``... Default from
        ``astro_aeqa.conf.device``.
    batch_size : int, optional
        Tiles reconstructed at once.
    seed : int, optional
        Seed of every random choice (training crops, initial weights).
    precision : {'auto', 'float32', 'bfloat16'}, optional
        Arithmetic of the forward pass at inference. ``'bfloat16'`` runs it
        under `torch.autocast`; it is faster on GPUs and on CPUs with native
        bfloat16 (AVX512-BF16, AMX) and much slower on others. It changes
        image scores by < 1 % (``benchmarks/speed.py``, section
        ``precision``: 0.001-0.01 % and no patch mask on its frames).
        ``'auto'`` (the default) is bfloat16 where the device computes it
        natively (`astro_aeqa.nn.native_bfloat16`), else float32. Training
        is always float32 (mixed precision on CUDA).
    compile : bool, optional
        Run inference through `torch.compile`. It fuses the normalisation
        and activation layers: about 1.5-2x faster on a CPU once compiled,
        but the first frame waits tens of seconds for the compilation, so it
        pays for batches of frames, not for one. Default `False`.

    Notes
    -----
    A frame is scored on as many threads as torch may use
    (`torch.get_num_threads`): the network reconstructs a row of tiles per
    task with one torch thread each, beside the star finding and the patch
    statistics of the rows already done. While a frame is scored, torch's
    thread count is set to one and restored afterwards; it is a process-wide
    setting, so do not score frames from several threads of one process at
    once (use `astro_aeqa.parallel`, whose workers each take a share of the
    cores). ``torch.set_num_threads(1)`` scores on one core.

    Examples
    --------
    >>> from astro_aeqa import AEQualityEvaluator
    >>> ev = AEQualityEvaluator(patch_size=32)
    >>> ev.patch_size, ev.tile_size, ev.normalization
    (32, 512, 'noise')
    """

    def __init__(
        self,
        model="small",
        *,
        patch_size=64,
        tile_size=None,
        overlap=None,
        crop_size=None,
        normalization="noise",
        aggregate="trimmed_mean",
        sky_term=None,
        star_aware=True,
        psf_term=True,
        fpr=0.005,
        morphology=(0, 1),
        device=None,
        batch_size=16,
        seed=0,
        precision="auto",
        compile=False,  # noqa: A002 (the torch name)
        trails=True,
    ):
        if isinstance(model, str):
            if model not in PRESETS:
                msg = f"model must be one of the presets {sorted(PRESETS)} or an AutoencoderConfig, got {model!r}"
                raise ValueError(msg)
            self.model_name = model
            config = PRESETS[model]
        elif isinstance(model, AutoencoderConfig):
            self.model_name = "custom"
            config = model
        else:
            msg = f"model must be a preset name or an AutoencoderConfig, got {type(model).__name__}"
            raise TypeError(msg)
        if isinstance(patch_size, str) and patch_size == "auto":
            self.patch_size = None  # set by fit from the references' FWHM
            sizing = _AUTO_PATCH_MAX
        else:
            self.patch_size = sizing = check_int(patch_size, "patch_size", minimum=2)
        unit = config.multiple
        self.tile_size = self._check_tile(
            max(512, 2 * sizing) if tile_size is None else tile_size, "tile_size", unit
        )
        self.crop_size = self._check_tile(
            max(128, 2 * sizing) if crop_size is None else crop_size, "crop_size", unit
        )
        # The image score changes by < 0.3 % from 32 to 48 pixels of margin
        # (benchmarks/evaluator_quality.py); narrower margins keep tile-edge pixels.
        self.overlap = check_int(
            min(32, self.tile_size // 4) if overlap is None else overlap, "overlap", minimum=0
        )
        if 2 * self.overlap >= self.tile_size:
            msg = f"overlap must be less than half of tile_size ({self.tile_size}), got {overlap}"
            raise ValueError(msg)
        if normalization not in NORMALIZATIONS:
            msg = f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
            raise ValueError(msg)
        self.normalization = normalization
        if aggregate not in AGGREGATES:
            msg = f"aggregate must be one of {AGGREGATES}, got {aggregate!r}"
            raise ValueError(msg)
        self.aggregate = aggregate
        if sky_term is None:
            sky_term = normalization == "noise"
        if sky_term and normalization != "noise":
            msg = "sky_term needs normalization='noise': min-max scaled tiles have no common sky level"
            raise ValueError(msg)
        self.sky_term = bool(sky_term)
        self.star_aware = bool(star_aware)
        self.psf_term = bool(psf_term)
        self.trails = bool(trails)
        self.reference_fwhm_ = None  # pixels, measured on the references by fit
        self.fpr = check_fpr(fpr)
        self.morphology = tuple(int(n) for n in morphology)
        self.seed = int(seed)
        self.config = config
        self.reconstructor_ = Reconstructor(
            build_model(config),
            device=conf.device if device is None else device,
            batch_size=batch_size,
            precision=precision,
            compile=compile,
        )
        self.calibration_ = Calibration()  # reference scores, camera reference, PSF scale
        self.training_ = {}
        self.is_fitted = False
        self.model_sha = None

    @staticmethod
    def _check_tile(value, name, unit):
        value = check_int(value, name, minimum=unit)
        if value % unit:
            msg = f"{name} must be a multiple of {unit} for this model, got {value}"
            raise ValueError(msg)
        return value

    model_ = _forwarded(
        "reconstructor_", "model", "The network (`~astro_aeqa.nn.ConvAutoencoder`)."
    )
    device = _forwarded(
        "reconstructor_", "device", "The `torch.device` the network runs on.", False
    )
    batch_size = _forwarded("reconstructor_", "batch_size", "Most tiles reconstructed at once.")
    precision = _forwarded("reconstructor_", "precision", "Forward-pass arithmetic at inference.")
    compile = _forwarded("reconstructor_", "compile", "Whether inference runs `torch.compile`.")
    reference_scores_ = _forwarded("calibration_", "reference_scores", "Sorted clean scores.")
    n_reference_ = _forwarded("calibration_", "n_reference", "Clean reference patches.", False)
    camera_ = _forwarded("calibration_", "camera", "The camera reference (None: zero-shot).", False)
    psf_calibration_ = _forwarded("calibration_", "psf_scale", "The scale of the PSF term.")

    def _scorer(self, calibration=None):
        """The scoring pipeline of the current options (and calibration)."""
        options = ScoringOptions(
            patch_size=self.patch_size,
            normalization=self.normalization,
            aggregate=self.aggregate,
            sky_term=self.sky_term,
            star_aware=self.star_aware,
            psf_term=self.psf_term,
            tile_size=self.tile_size,
            overlap=self.overlap,
            fpr=self.fpr,
            reference_fwhm=self.reference_fwhm_,
        )
        calibration = self.calibration_ if calibration is None else calibration
        return Scorer(options, calibration, self.reconstructor_)

    def __repr__(self):
        state = "fitted" if self.is_fitted else "untrained"
        return (
            f"<AEQualityEvaluator model={self.model_name!r} patch_size={self.patch_size} "
            f"normalization={self.normalization!r} aggregate={self.aggregate!r} "
            f"sky_term={self.sky_term} {state}>"
        )

    # -- training ---------------------------------------------------------

    def fit(
        self,
        references,
        *,
        n_epochs=20,
        batch_size=16,
        steps_per_epoch=None,
        learning_rate=1e-3,
        val_fraction=0.2,
        patience=5,
        calibration=None,
        hdu=None,
        filter=None,
        progress_bar=True,
        checkpoint=None,
        resume=False,
    ):
        """
        Train the autoencoder on good reference frames and calibrate the scores.

        Parameters
        ----------
        references : iterable or `ccdproc.ImageFileCollection`
            Reference frames: `~astropy.nddata.CCDData`, `~astropy.nddata.NDData`,
            arrays, HDUs or FITS paths; or an image file collection, whose files
            are selected with ``filter``.
        n_epochs, batch_size, steps_per_epoch, learning_rate : optional
            Training schedule (Adam, MSE loss on random crops with flips and
            90-degree rotations).
        val_fraction : float, optional
            Fraction of reference patches held out for validation, early
            stopping and the score calibration.
        patience : int, optional
            Epochs without improvement of the validation loss before stopping.
        calibration : iterable, optional
            Clean frames, not used in training, to calibrate the scores on.
            Default: the held-out reference patches.
        hdu : int or str, optional
            HDU to read from multi-extension FITS files.
        filter : dict, optional
            Header keyword values that select files of an image collection.
        progress_bar : bool, optional
            Show progress bars.
        checkpoint : str or `~pathlib.Path`, optional
            Write a checkpoint after each epoch; with ``resume=True`` training
            continues from it.

        Returns
        -------
        self : `AEQualityEvaluator`
        """
        self.calibration_ = Calibration()  # the reference frames define the camera anew
        scorer = self._scorer()
        frames = [
            scorer.prepare(aeqa_io.read_image(ref, hdu=hdu))
            for ref in _iter_references(references, filter)
        ]
        if not frames:
            msg = "references is empty: give at least one good reference frame"
            raise InputDataError(msg)
        self._measure_reference_fwhm(frames)
        images = [frame.x for frame in frames]
        weights = [frame.valid.astype(np.float32) for frame in frames]
        history = train_autoencoder(
            self.model_,
            images,
            weights=weights,
            patch_size=self.crop_size,
            n_epochs=n_epochs,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            learning_rate=learning_rate,
            val_fraction=val_fraction,
            patience=patience,
            seed=self.seed,
            device=self.device,
            progress_bar=progress_bar,
            checkpoint=checkpoint,
            resume=resume,
            transform=scorer.tile_transform(),
        )
        self.model_.to(self.device)
        self.training_ = {
            "n_frames": len(frames),
            "n_epochs_run": len(history.train_loss),
            "best_epoch": int(history.best_epoch),
            "final_train_loss": float(history.train_loss[-1]) if history.train_loss else None,
            "best_val_loss": float(min(history.val_loss)) if history.val_loss else None,
            "n_train_patches": int(history.n_train_patches),
            "n_val_patches": int(history.n_val_patches),
            "seconds": float(history.seconds),
            "learning_rate": float(learning_rate),
            "batch_size": int(batch_size),
            "seed": self.seed,
            "shapes": [list(frame.shape) for frame in frames[:20]],
            "fwhm_pixels": self.reference_fwhm_,
        }
        self.history_ = history
        self.is_fitted = True
        self.model_sha = weights_sha(self.model_)
        if calibration is not None:
            self.calibrate(calibration, hdu=hdu, progress_bar=progress_bar)
        else:
            scorer = self._scorer()  # with the measured FWHM (and patch size)
            records = scorer.held_out_records(
                frames, history.val_patches, self.crop_size, progress_bar=progress_bar
            )
            self.calibration_ = scorer.calibrate(records)
        return self

    def _measure_reference_fwhm(self, frames):
        # The median over a few frames: the FWHM sizes auto patches and tells
        # star-aware scoring and the PSF term what a well-modelled star looks
        # like. Frames without a star to measure keep the former value.
        fwhms = [frame_fwhm(frame) for frame in frames[:5]]
        fwhms = [f for f in fwhms if f is not None]
        if fwhms:
            self.reference_fwhm_ = float(np.median(fwhms))
        if self.patch_size is None:
            if self.reference_fwhm_ is None:
                msg = (
                    "patch_size='auto' needs isolated bright stars in the reference frames to "
                    "measure the PSF FWHM on, and none was found; give an explicit patch_size"
                )
                raise InputDataError(msg)
            self.patch_size = auto_patch_size(self.reference_fwhm_, maximum=_AUTO_PATCH_MAX)
            log.info(
                "patch_size='auto': %d pixels for a reference FWHM of %.2f pixels",
                self.patch_size,
                self.reference_fwhm_,
            )
        for frame in frames:
            check_patch_fits(frame.shape, self.patch_size)

    def calibrate(self, frames, *, hdu=None, progress_bar=True):
        """
        Calibrate the scores on clean frames of the camera that were not used in training.

        This learns the camera reference (`~astro_aeqa.calibration.CameraReference`):
        the clean sky level per unit exposure and its noise, and, for frames
        of one shape, the clean sky and the illuminated footprint patch by
        patch, so that a new frame's patches are judged against this
        camera's clean sky rather than against the rest of their own frame.
        The scores of the frames' patches become the reference
        distribution: a relative score of 1 is a typical clean patch,
        p-values and ``fpr`` thresholds come from it (split-conformal
        calibration). The reference PSF FWHM (star-aware scoring,
        ``psf_term``) is measured on them too, and the PSF term is put on
        the scale of the MAE. From few frames (fewer patches than four
        times what ``fpr`` needs), patches are also sampled on grids moved
        by half a patch, so two frames calibrate the default ``fpr``.

        Returns
        -------
        self : `AEQualityEvaluator`
        """
        frames = list(_iter_references(frames, None))
        if not frames:
            msg = "frames is empty: give at least one clean frame of the camera to calibrate on"
            raise InputDataError(msg)
        scorer = self._scorer(Calibration())  # the footprints and skies of these frames alone
        first = [scorer.prepare(aeqa_io.read_image(frame, hdu=hdu)) for frame in frames[:5]]
        self._measure_reference_fwhm(first)
        scorer = self._scorer(Calibration())
        shifts = scorer.grid_shifts(len(frames), first[0])
        records = []
        for index, frame in enumerate(frames):  # one at a time: a calibration set can be large
            if index < len(first):
                prepared, first[index] = first[index], None  # freed once used
            else:
                prepared = scorer.prepare(aeqa_io.read_image(frame, hdu=hdu))
            parts = scorer.parts(
                prepared, progress_bar=progress_bar, local_background=self.sky_term
            )
            records += [scorer.record(prepared, parts, shift) for shift in shifts]
        self.calibration_ = scorer.calibrate(records)
        return self

    # -- scoring ----------------------------------------------------------

    def evaluate(self, image, *, threshold=None, fpr=None, hdu=None, progress_bar=False):
        """
        Score a frame patch by patch and make its mask.

        Parameters
        ----------
        image : path, HDU, HDUList, `~astropy.nddata.CCDData`, `~astropy.nddata.NDData` or array
            The frame. It is never modified.
        threshold : float, optional
            Patch-score threshold. Default: from ``fpr``.
        fpr : float, optional
            False-mask rate on clean reference patches that sets the
            threshold (default: the evaluator's ``fpr``). Without a
            calibration the frame's own median + 5 MAD is used.
        hdu : int or str, optional
            HDU of a multi-extension FITS file.

        Returns
        -------
        result : `QualityResult`
        """
        self._check_fitted()
        ccd = aeqa_io.read_image(image, hdu=hdu)
        return self._evaluate_ccd(ccd, threshold=threshold, fpr=fpr, progress_bar=progress_bar)

    def _check_fitted(self):
        if not self.is_fitted:
            msg = (
                "the evaluator is untrained: call fit(reference_frames) first, or load a model "
                "with AEQualityEvaluator.load(path)"
            )
            raise RuntimeError(msg)

    def _evaluate_ccd(self, ccd, *, threshold, fpr, progress_bar=False):
        scorer = self._scorer()
        prepared = scorer.prepare(ccd)
        scored = scorer.score(prepared, progress_bar=progress_bar, trails=self.trails)
        patch_scores, residual = scored.scores, scored.residual
        masks = scorer.mask(
            prepared, scored, threshold=threshold, fpr=fpr, morphology=self.morphology
        )
        shape = residual.shape
        score_map = NDData(
            patch_scores.astype(np.float32),
            wcs=score_map_wcs(ccd.wcs, self.patch_size, shape),
            meta={"AEQAPSZ": self.patch_size},
        )
        return QualityResult(
            score=float(np.nanmean(patch_scores)),
            patch_scores=patch_scores,
            relative_scores=self.calibration_.relative(patch_scores),
            pvalues=self.calibration_.pvalues(patch_scores),
            n_valid=scored.n_valid,
            residual=residual.astype(np.float32, copy=False),
            patch_mask=masks.patch_mask,
            mask=masks.pixel_mask,
            threshold=float(masks.threshold),
            fpr=masks.fpr,
            threshold_method=masks.method,
            score_map=score_map,
            valid=prepared.valid,
            footprint=prepared.footprint,
            camera_reference=self.camera_ is not None,
            transparency=scored.transparency,
            trails=scored.trails,
            trail_mask=masks.trail_pixels,
            patch_size=self.patch_size,
            shape=shape,
            finite=prepared.finite,
            saturated=prepared.saturated,
            input_mask=prepared.input_mask,
            star_kept=masks.star_kept,
        )

    def mask(self, ccd, *, threshold=None, fpr=None, hdu=None):
        """
        Return a new `~astropy.nddata.CCDData` whose mask includes the AEQA mask.

        The input mask is OR-ed with the AEQA mask, never replaced; the
        ``AEQA*`` keywords and a HISTORY line are added to the header. The
        input is not modified.

        Parameters
        ----------
        ccd : `~astropy.nddata.CCDData` or any input of `evaluate`
            The frame.
        threshold, fpr, hdu : optional
            As in `evaluate`.

        Returns
        -------
        out : `~astropy.nddata.CCDData`
        """
        self._check_fitted()
        image = aeqa_io.read_image(ccd, hdu=hdu)  # read once, for the scores and the output
        result = self._evaluate_ccd(image, threshold=threshold, fpr=fpr)
        return aeqa_io.masked_ccd(
            image, result, model_name=self.model_name, model_sha=self.model_sha
        )

    def write_masked(self, image, path, *, threshold=None, fpr=None, hdu=None, overwrite=False):
        """
        Evaluate ``image`` and write the FITS layout of `astro_aeqa.io`:
        the data unchanged, ``MASK``, ``AEQA_SCORE`` and ``AEQA_FLAGS``.

        Returns
        -------
        result : `QualityResult`
        """
        path = Path(path)
        aeqa_io.check_output_path(path, inputs=[image])  # never replace the input
        if path.exists() and not overwrite:
            msg = f"{path}: file exists; pass overwrite=True to replace it"
            raise FileExistsError(msg)
        self._check_fitted()
        frame = aeqa_io.read_frame(image, hdu=hdu)  # read once: pixels, original array, header
        result = self._evaluate_ccd(frame.ccd, threshold=threshold, fpr=fpr)
        with thread_pool(min(2, self.reconstructor_.n_threads())) as pool:
            flags = pool.submit(result.flag_plane)
            out = aeqa_io.masked_ccd(
                frame.ccd, result, model_name=self.model_name, model_sha=self.model_sha
            )
            flags = flags.result()
        aeqa_io.write_aeqa_fits(
            path,
            out,
            score_map=result.score_map,
            flags=flags,
            overwrite=overwrite,
            source=image,  # the output header is the input's plus the AEQA cards
            source_header=frame.header,
            trails=result.trails if result.trails is not None and len(result.trails) else None,
            original_data=frame.original,  # None: the float32 array already read
        )
        return result

    # -- files --------------------------------------------------------------

    def _metadata(self):
        calibration = self.calibration_.to_dict()
        return {
            "package_version": _package_version(),
            "model_name": self.model_name,
            "patch_size": self.patch_size,
            "tile_size": self.tile_size,
            "overlap": self.overlap,
            "crop_size": self.crop_size,
            "normalization": self.normalization,
            "aggregate": self.aggregate,
            "sky_term": self.sky_term,
            "star_aware": self.star_aware,
            "psf_term": self.psf_term,
            "trails": self.trails,
            "psf_calibration": calibration["psf_calibration"],
            "reference_fwhm": self.reference_fwhm_,
            "fpr": self.fpr,
            "morphology": list(self.morphology),
            "camera": calibration["camera"],
            "calibration": calibration["calibration"],
            "training": self.training_,
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def save(self, path, *, overwrite=False):
        """
        Save the network, its configuration and its calibration to one
        ``.safetensors`` file (no pickle).
        """
        if not self.is_fitted:
            msg = "the evaluator is untrained: fit it before saving"
            raise RuntimeError(msg)
        path = save_model(path, self.model_, self._metadata(), overwrite=overwrite)
        self.model_sha = file_sha256(path)[:16]
        return path

    @classmethod
    def load(cls, path, *, device=None, patch_size=None, **kwargs):
        """
        Load an evaluator saved with `save`. The file is never unpickled.

        Parameters
        ----------
        path : str or `~pathlib.Path`
            The ``.safetensors`` model file.
        device : str, optional
            Where to run the network.
        patch_size : int, optional
            Must equal the patch size the model was calibrated with; to use
            another, load it and call `calibrate` on clean frames.
        **kwargs
            Other evaluator options to override (``fpr``, ``aggregate``,
            ``batch_size``, ``morphology``...).

        Raises
        ------
        astro_aeqa.exceptions.ModelFileError
            If the file is not an astro_aeqa model, is from a newer format, or
            its weights do not match its architecture.
        """
        model, meta = load_model(path, device="cpu")
        stored = meta.get("patch_size")
        if patch_size is not None and stored is not None and int(patch_size) != int(stored):
            msg = (
                f"{path}: the model was calibrated with patch_size={stored}, not {patch_size}; "
                f"load it with patch_size={stored}, or load it and call calibrate(clean_frames) "
                "after setting the new patch size"
            )
            raise ModelFileError(msg)
        options = {
            key: meta[key]
            for key in (
                "patch_size",
                "tile_size",
                "overlap",
                "crop_size",
                "normalization",
                "aggregate",
                "sky_term",
                "star_aware",
                "psf_term",
                "trails",
                "fpr",
            )
            if meta.get(key) is not None
        }
        if meta.get("morphology") is not None:
            options["morphology"] = tuple(meta["morphology"])
        # A file from before star-aware scoring was calibrated without it. One
        # from before the PSF term has no scale for it, so the term stays
        # unused until calibrate() or fit() sets one.
        options.setdefault("star_aware", False)
        options.update(kwargs)
        ev = cls(model.config, device=device, **options)
        ev.model_name = meta.get("model_name", "custom")
        ev.model_ = model.to(ev.device)
        ev.calibration_ = Calibration.from_dict(meta, source=str(path))
        ev.training_ = meta.get("training", {})
        ev.reference_fwhm_ = meta.get("reference_fwhm")
        ev.is_fitted = True
        ev.model_sha = file_sha256(path)[:16]
        return ev

    @classmethod
    def pretrained(cls, *, device=None, **kwargs):
        """
        Load the pretrained ``small`` model shipped with the package.

        It was trained on clean simulated frames of many cameras (pixel
        scales 0.2-15 arcsec/pixel, FWHM 1.5-4 pixels; see the model card in
        the docs, or ``aeqa info default``). Fine-tune it on your survey's
        reference frames with `fit` for the best masks. When the
        ``default_model`` configuration item names a file, that file is
        loaded instead.

        Parameters
        ----------
        device : str, optional
            Where to run the network.
        **kwargs
            Evaluator options to override, as for `load`.

        Returns
        -------
        `AEQualityEvaluator`

        Examples
        --------
        >>> from astro_aeqa import AEQualityEvaluator
        >>> ev = AEQualityEvaluator.pretrained()
        >>> ev.model_name, ev.patch_size, ev.is_fitted
        ('small', 64, True)
        """
        return cls.load(default_model_path(), device=device, **kwargs)


def default_model_path():
    """
    Path of the default model file: ``conf.default_model``, or the shipped one.

    Raises
    ------
    astro_aeqa.exceptions.ModelFileError
        If the file does not exist.
    """
    if conf.default_model:
        path = Path(conf.default_model).expanduser()
        fix = "fix or empty the default_model item of astro_aeqa.cfg"
    else:
        path = Path(str(importlib.resources.files("astro_aeqa") / "data" / DEFAULT_MODEL_FILE))
        fix = "reinstall astro_aeqa, or run scripts/train_default_model.py in a source checkout"
    if not path.is_file():
        msg = f"{path}: the default model file is missing; {fix}"
        raise ModelFileError(msg)
    return path


def aeqa_mask(ccd, evaluator, *, threshold=None, fpr=None):
    """
    Mask the low-quality regions of a frame: a step for ccdproc reduction scripts.

    Like the ccdproc steps, it returns a **new** `~astropy.nddata.CCDData`:
    the input is not modified, and the AEQA mask is OR-ed into the existing
    mask.

    Parameters
    ----------
    ccd : `~astropy.nddata.CCDData`
        The (reduced) frame.
    evaluator : `AEQualityEvaluator`
        A fitted evaluator.
    threshold, fpr : float, optional
        As in `AEQualityEvaluator.evaluate`.

    Returns
    -------
    out : `~astropy.nddata.CCDData`
    """
    if not isinstance(evaluator, AEQualityEvaluator):
        msg = f"evaluator must be a fitted AEQualityEvaluator, got {type(evaluator).__name__}"
        raise TypeError(msg)
    return evaluator.mask(ccd, threshold=threshold, fpr=fpr)


# -- helpers -----------------------------------------------------------------


def _iter_references(references, filter):
    if hasattr(references, "files_filtered"):  # ccdproc.ImageFileCollection
        return references.files_filtered(include_path=True, **(filter or {}))
    if isinstance(references, str | Path | CCDData | NDData | np.ndarray | fits.HDUList):
        return [references]
    return references
