# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The evaluator: learn "good" from reference frames, score new frames patch by
patch, and mask the patches that the autoencoder cannot reconstruct.
"""

import importlib.resources
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, NDData
from astropy.table import QTable
from astropy.utils.exceptions import AstropyUserWarning
from scipy.special import ndtri

from . import io as aeqa_io
from ._trails import find_trails, trail_mask
from .calibration import CameraReference, exposure_time
from .config import conf
from .exceptions import InputDataError, ModelFileError
from .footprint import detect_footprint
from .masking import (
    build_flag_plane,
    clean_patch_mask,
    combine_masks,
    conformal_threshold,
    patch_mask_to_pixel_mask,
    pvalues,
    robust_threshold,
)
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
from .preprocessing import (
    _ASINH_SOFTENING,
    NORMALIZATIONS,
    SkyStatistics,
    minmax_tiles,
    normalize_frame,
    sky_statistics,
    subtract_local_background,
    subtract_tile_median,
)
from .stars import auto_patch_size, bright_star_mask, find_stars, measure_fwhm, psf_shape_map
from .tiling import (
    aggregate_patches,
    owned_regions,
    patch_any,
    patch_grid_shape,
    tile_origins,
)
from .utils import check_int, file_sha256, thread_pool
from .utils import progress_bar as _progress_bar

__all__ = ["AEQualityEvaluator", "QualityResult", "aeqa_mask", "default_model_path"]

#: File name of the pretrained ``small`` model in ``astro_aeqa/data``.
DEFAULT_MODEL_FILE = "aeqa_small_default.safetensors"

log = logging.getLogger(__name__)

AGGREGATES = ("mean", "trimmed_mean", "median")
# Reference scores kept in a model file: enough quantiles to calibrate fpr=0.001.
_N_CALIBRATION_QUANTILES = 4001
# Largest patch_size='auto' picks: the default crops (128 px) hold one such patch.
_AUTO_PATCH_MAX = 64
# Faintest source peak (sky sigmas) that star-aware scoring leaves out and
# whose shape enters the PSF term (chosen by benchmarks/quality.py).
_STAR_MIN_SNR = 20.0
# Fraction of the clear sky by which a patch's sky may differ from it before
# the camera-referenced sky term counts it: about the change that 0.05 mag
# of extinction makes, and what photometry tolerates.
_SKY_DEAD_ZONE = 0.03
# Least threshold at the default fpr, as a multiple of the median clean
# reference score (the paper's relative threshold), for camera references
# of fewer than _FEW_FRAMES frames.
_FEW_FRAMES = 5
_MIN_THRESHOLD_RATIO = 1.25
# Zero-shot (no camera reference), masking more than this fraction of a
# frame's patches comes with a warning that names calibrate().
_ZERO_SHOT_WARN_FRACTION = 0.05
# Faintest source peak (clean sky sigmas) that the transparency term counts:
# fainter than the PSF term's, for counts large enough to place a cloud.
_COUNT_MIN_SNR = 10.0
# Fewest clean patches with a PSF-term value that calibrate its scale.
_PSF_MIN_PATCHES = 20


def _package_version():
    from . import __version__

    return __version__


class QualityResult:
    """
    The verdict on one frame, returned by `AEQualityEvaluator.evaluate`.

    Attributes
    ----------
    score : float
        Image score: the mean of the patch scores (the paper's image MAE).
    patch_scores : 2-D `~numpy.ndarray`
        One score per patch (mean absolute residual, or the configured
        aggregate), NaN for patches without a valid pixel.
    relative_scores : 2-D `~numpy.ndarray`
        ``patch_scores`` divided by the median score of the clean reference
        patches: 1 is a typical reference patch. NaN without calibration.
    pvalues : 2-D `~numpy.ndarray`
        Probability that a clean reference patch scores at least as high.
        NaN without calibration.
    residual : 2-D float32 `~numpy.ndarray`
        ``|x - x_hat|`` per pixel in normalised units; NaN for invalid pixels.
    patch_mask : 2-D bool `~numpy.ndarray`
        Patches above the threshold, after opening and closing.
    mask : 2-D bool `~numpy.ndarray`
        ``patch_mask`` expanded to pixels (the AEQA mask alone, not OR-ed
        with the input mask).
    threshold : float
        The patch-score threshold that made the mask.
    fpr : float or None
        The false-mask rate the threshold was calibrated for, if any.
    threshold_method : str
        ``'explicit'``, ``'fpr'``, ``'robust'`` (the frame's median +
        5 MAD, used when the model has no calibration) or ``'self'`` (the
        same, used with a warning when the model has no reference of the
        camera and more than half of the frame scores above its calibrated
        threshold).
    score_map : `~astropy.nddata.NDData`
        ``patch_scores`` with the image WCS sliced to the patch grid.
    valid : 2-D bool `~numpy.ndarray`
        Pixels that were used (finite, unmasked, unsaturated, inside the footprint).
    footprint : 2-D bool `~numpy.ndarray` or None
        The illuminated footprint (`astro_aeqa.footprint.detect_footprint`,
        or the camera reference's); None when it is the whole frame. Patches
        outside it have NaN scores and are never masked.
    camera_reference : bool
        Whether the patches were scored against a camera reference (from
        `AEQualityEvaluator.calibrate` or ``fit``) rather than against the
        frame's own sky.
    transparency : 2-D `~numpy.ndarray` or None
        Per patch, how many sigmas fewer sources lie around it than the
        camera's clean sky shows (clouds that dim without brightening the
        sky); a deficit of ``z`` sigmas raises the patch score to ``z /
        z_fpr`` times the default threshold, ``z_fpr`` being the deficit a
        clean sky shows with probability ``fpr``. None without a camera
        reference, NaN where the term does not apply.
    trails : `~astropy.table.QTable` or None
        The trails found (``x0, y0, x1, y1`` end points, position angle
        ``theta`` in degrees, offset ``rho``, ``fwhm``, ``peak``, ``snr``,
        ``length``), brightest first; None when the search is off.
    trail_mask : 2-D bool `~numpy.ndarray` or None
        Their pixels, part of ``mask`` (None when no trail was found).
    patch_size : int
        Patch size in pixels.
    """

    def __init__(self, **attrs):
        self.__dict__.update(attrs)

    @property
    def masked_fraction(self):
        """Fraction of the frame's pixels masked by AEQA."""
        return float(self.mask.mean())

    def __repr__(self):
        return (
            f"<QualityResult score={self.score:.4g} patches={self.patch_scores.shape} "
            f"threshold={self.threshold:.4g} masked={self.masked_fraction:.1%}>"
        )

    def to_table(self):
        """
        Return one row per patch.

        Columns: ``iy``, ``ix`` (patch indices), ``y0``, ``x0`` (first pixel),
        ``score``, ``relative_score``, ``pvalue``, ``n_valid`` and ``masked``,
        plus ``ra``, ``dec`` of the patch centre when the frame has a WCS.
        """
        n_py, n_px = self.patch_scores.shape
        iy, ix = np.mgrid[0:n_py, 0:n_px]
        p = self.patch_size
        table = QTable()
        table["iy"] = iy.ravel()
        table["ix"] = ix.ravel()
        table["y0"] = (iy * p).ravel()
        table["x0"] = (ix * p).ravel()
        table["score"] = self.patch_scores.ravel()
        table["relative_score"] = self.relative_scores.ravel()
        table["pvalue"] = self.pvalues.ravel()
        table["n_valid"] = self.n_valid.ravel()
        table["masked"] = self.patch_mask.ravel()
        wcs = getattr(self.score_map, "wcs", None)
        if wcs is not None and wcs.has_celestial:
            sky = wcs.pixel_to_world(ix.ravel(), iy.ravel())
            table["ra"] = sky.ra
            table["dec"] = sky.dec
        table.meta["score"] = self.score
        table.meta["threshold"] = self.threshold
        table.meta["patch_size"] = p
        return table

    def flag_plane(self):
        """Return the ``AEQA_FLAGS`` uint16 plane of this result (see `astro_aeqa.flags`)."""
        p = self.patch_size
        edge = np.zeros(self.shape, dtype=bool)
        ny, nx = self.shape
        if ny % p:
            edge[ny - ny % p :, :] = True
        if nx % p:
            edge[:, nx - nx % p :] = True
        return build_flag_plane(
            self.shape,
            low_quality=self.mask,
            non_finite=~self._finite,
            saturated=self._saturated,
            input_masked=self._input_mask,
            edge=edge,
            star_kept=getattr(self, "_star_kept", None),
            outside_footprint=None if self.footprint is None else ~self.footprint,
            trail=self.trail_mask,
        )

    def plot(self, image=None, *, figsize=(12, 4.2)):
        """
        Plot the image with the mask outlined, the patch score map and the
        patch score histogram against the threshold.

        Parameters
        ----------
        image : 2-D `~numpy.ndarray`, optional
            The frame (shown with a zscale stretch); without it the residual
            is shown.

        Returns
        -------
        fig : `matplotlib.figure.Figure`
        """
        import matplotlib.pyplot as plt
        from astropy.visualization import ImageNormalize, ZScaleInterval

        fig, axes = plt.subplots(1, 3, figsize=figsize, layout="constrained")
        shown = self.residual if image is None else np.asarray(image, dtype=float)
        norm = ImageNormalize(np.nan_to_num(shown), interval=ZScaleInterval())
        axes[0].imshow(shown, origin="lower", cmap="gray", norm=norm)
        if self.mask.any():
            axes[0].contour(self.mask, levels=[0.5], colors="tab:red", linewidths=1)
        axes[0].set_title("image, AEQA mask outlined" if image is not None else "residual")
        ny, nx = self.shape
        im = axes[1].imshow(
            self.patch_scores,
            origin="lower",
            cmap="viridis",
            extent=(0, nx, 0, ny),
            interpolation="nearest",
        )
        fig.colorbar(im, ax=axes[1], label="patch score")
        axes[1].set_title(f"score map (image score {self.score:.3g})")
        finite = self.patch_scores[np.isfinite(self.patch_scores)]
        axes[2].hist(finite, bins=40, color="0.4")
        axes[2].axvline(self.threshold, color="tab:red", label=f"threshold {self.threshold:.3g}")
        axes[2].set_xlabel("patch score")
        axes[2].set_ylabel("patches")
        axes[2].legend()
        return fig


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
        self.psf_calibration_ = None  # clean medians and MADs of the MAE and PSF term
        self.reference_fwhm_ = None  # pixels, measured on the references by fit
        self.fpr = _check_fpr(fpr)
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
        self.reference_scores_ = None  # sorted clean reference patch scores
        self.camera_ = None  # CameraReference: the clean sky of the camera
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

    @property
    def model_(self):
        """The network (`~astro_aeqa.nn.ConvAutoencoder`)."""
        return self.reconstructor_.model

    @model_.setter
    def model_(self, model):
        self.reconstructor_.model = model

    @property
    def device(self):
        """The `torch.device` the network runs on."""
        return self.reconstructor_.device

    @property
    def batch_size(self):
        """Most tiles reconstructed at once."""
        return self.reconstructor_.batch_size

    @batch_size.setter
    def batch_size(self, value):
        self.reconstructor_.batch_size = value

    @property
    def precision(self):
        """Arithmetic of the inference forward pass: ``'auto'``, ``'float32'`` or ``'bfloat16'``."""
        return self.reconstructor_.precision

    @precision.setter
    def precision(self, value):
        self.reconstructor_.precision = value

    @property
    def compile(self):
        """Whether inference runs through `torch.compile`."""
        return self.reconstructor_.compile

    @compile.setter
    def compile(self, value):
        self.reconstructor_.compile = bool(value)

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
        self.camera_ = None  # the reference frames define the camera anew
        frames = [self._prepare(ref, hdu=hdu) for ref in _iter_references(references, filter)]
        if not frames:
            msg = "references is empty: give at least one good reference frame"
            raise InputDataError(msg)
        self._measure_reference_fwhm(frames)
        images = [frame["x"] for frame in frames]
        weights = [frame["valid"].astype(np.float32) for frame in frames]
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
            transform=self._tile_transform(),
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
            "shapes": [list(frame["x"].shape) for frame in frames[:20]],
            "fwhm_pixels": self.reference_fwhm_,
        }
        self.history_ = history
        self.is_fitted = True
        self.model_sha = weights_sha(self.model_)
        if calibration is not None:
            self.calibrate(calibration, hdu=hdu, progress_bar=progress_bar)
        else:
            self._calibrate_on_held_out(frames, history.val_patches, progress_bar=progress_bar)
        return self

    def _measure_reference_fwhm(self, frames):
        # The median over a few frames: the FWHM sizes auto patches and tells
        # star-aware scoring and the PSF term what a well-modelled star looks
        # like. Frames without a star to measure keep the former value.
        fwhms = [_frame_fwhm(frame) for frame in frames[:5]]
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
            self._check_patch_fits(frame["x"].shape)

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
        self.camera_ = None  # the footprints and skies of these frames alone
        first = [self._prepare(frame, hdu=hdu) for frame in frames[:5]]
        self._measure_reference_fwhm(first)
        shape = first[0]["x"].shape
        n_patches = len(frames) * int(
            np.count_nonzero(_coverage(first[0]["valid"], shape, self.patch_size))
        )
        need = math.ceil(1.0 / self.fpr - 1.0)
        half = self.patch_size // 2
        shifts = [(0, 0)]
        if n_patches < 4 * need and half > 0:
            shifts += [(half, 0), (0, half), (half, half)]
        records = []
        for index, frame in enumerate(frames):  # one at a time: a calibration set can be large
            prepared = first[index] if index < len(first) else self._prepare(frame, hdu=hdu)
            if index < len(first):
                first[index] = None  # free it once used
            parts = self._score_parts(
                prepared, progress_bar=progress_bar, local_background=self.sky_term
            )
            records += [self._calibration_record(prepared, parts, shift) for shift in shifts]
        self._calibrate_records(records)
        return self

    def _calibration_record(self, prepared, parts, shift=(0, 0), inside=None):
        """What calibration keeps of a scored clean frame: patch-level parts, on a grid moved by ``shift``."""
        info = {
            "stats": prepared["stats"],
            "shape": prepared["x"].shape,
            "exptime": prepared["exptime"],
        }
        camera = None
        if shift != (0, 0):
            parts = self._shifted_parts(prepared, parts, shift)
        else:
            parts = {k: v for k, v in parts.items() if k not in ("residual", "star_pixels")}
            coverage = _coverage(prepared["footprint"], prepared["x"].shape, self.patch_size)
            parts["coverage"] = coverage
            if parts["sky"] is not None:
                camera = {
                    "level": prepared["stats"].level,
                    "noise": prepared["stats"].noise,
                    "exptime": prepared["exptime"],
                    "patch_sky": _patch_sky_level(parts["sky"], prepared["stats"]),
                    "coverage": coverage,
                    "shape": prepared["x"].shape,
                    "star_counts": parts["star_counts"],
                }
        return {"parts": parts, "info": info, "shift": shift, "inside": inside, "camera": camera}

    def _shifted_parts(self, prepared, parts, shift):
        """The patch-level parts of a frame on a patch grid moved by ``shift`` (same residual)."""
        dy, dx = shift
        moved = {"x": prepared["x"][dy:, dx:], "valid": prepared["valid"][dy:, dx:]}
        residual = parts["residual"][dy:, dx:].copy()
        star_pixels = None if parts["star_pixels"] is None else parts["star_pixels"][dy:, dx:]
        mae, sky, raw_mae, raw_sky, n_valid = self._score_band(
            moved, residual, 0, residual.shape[0], star_pixels
        )
        psf = None
        counts = None
        if parts["stars"] is not None:
            found = parts["stars"]
            keep = (np.asarray(found["x"]) >= dx) & (np.asarray(found["y"]) >= dy)
            found = found[keep]
            found["x"] = np.asarray(found["x"]) - dx
            found["y"] = np.asarray(found["y"]) - dy
            counts = _star_counts(found, residual.shape, self.patch_size)
            if parts["psf"] is not None:
                psf = psf_shape_map(
                    found,
                    residual.shape,
                    self.patch_size,
                    self.reference_fwhm_,
                    min_snr=_STAR_MIN_SNR,
                )
        return {
            "mae": mae,
            "sky": sky,
            "raw_mae": raw_mae,
            "raw_sky": raw_sky,
            "psf": psf,
            "n_valid": n_valid,
            "star_counts": counts,
            "coverage": _coverage(
                None if prepared["footprint"] is None else prepared["footprint"][dy:, dx:],
                residual.shape,
                self.patch_size,
            ),
        }

    def _calibrate_records(self, records):
        """Learn the camera reference, then the PSF-term scale and the reference scores."""
        cameras = [r["camera"] for r in records if r["camera"] is not None]
        self.camera_ = CameraReference.from_frames(cameras, self.patch_size) if cameras else None
        parts, deficits = [], []
        for record in records:
            mae, _ = self._mae_scores(record["parts"], record["info"], shift=record["shift"])
            psf = record["parts"]["psf"]
            deficit = self._transparency(record["parts"], record["info"], shift=record["shift"])
            inside = record["inside"]
            if inside is not None:
                mae, psf = mae[inside], None if psf is None else psf[inside]
                deficit = None if deficit is None else deficit[inside]
            parts.append((mae, psf))
            deficits.append(deficit)
        self._calibrate_parts(parts, deficits=deficits)

    def _calibrate_on_held_out(self, frames, val_patches, *, progress_bar):
        # Patches that lie entirely inside a held-out training tile were never
        # seen in training: their scores calibrate the thresholds. The camera
        # reference is learnt from the whole of these frames (the sky is not
        # what the network learns).
        held_out = {}
        for index, y0, x0 in val_patches:
            held_out.setdefault(index, []).append((y0, x0))
        self.camera_ = None
        records = []
        p, t = self.patch_size, self.crop_size
        for index, origins in held_out.items():
            parts = self._score_parts(
                frames[index], progress_bar=progress_bar, local_background=self.sky_term
            )
            inside = np.zeros(parts["mae"].shape, bool)
            for y0, x0 in origins:
                iy0, ix0 = -(-y0 // p), -(-x0 // p)
                inside[iy0 : (y0 + t) // p, ix0 : (x0 + t) // p] = True
            records.append(self._calibration_record(frames[index], parts, inside=inside))
        self._calibrate_records(records)

    def _calibrate_parts(self, parts, deficits=None):
        """Set the PSF-term scale, then the reference scores, from clean patches' parts."""
        mae = np.concatenate([m.ravel() for m, _ in parts]) if parts else np.array([])
        finite = np.isfinite(mae)
        self.psf_calibration_ = None
        if self.psf_term and parts and all(psf is not None for _, psf in parts):
            psf = np.concatenate([q.ravel() for _, q in parts])[finite]
            psf = psf[np.isfinite(psf)]
            mae_median, mae_mad = _median_and_mad(mae[finite])
            psf_median, psf_mad = _median_and_mad(psf)
            scale = {
                "mae_median": mae_median,
                "mae_mad": mae_mad,
                "psf_median": psf_median,
                "psf_mad": psf_mad,
            }
            if psf.size >= _PSF_MIN_PATCHES and psf_mad > 0 and mae_mad > 0:
                self.psf_calibration_ = scale
            else:
                log.warning(
                    "psf_term: too few stars on the clean frames (%d patches near one) to "
                    "calibrate the PSF term; it is not used",
                    psf.size,
                )
        scores = [self._combine(m.ravel(), None if q is None else q.ravel()) for m, q in parts]
        scores = np.concatenate(scores) if scores else np.array([])
        self._set_reference_scores(scores[np.isfinite(scores)])
        if deficits and all(d is not None for d in deficits) and self.reference_scores_ is not None:
            # the transparency term maps onto the scores just calibrated
            deficit = np.concatenate([d.ravel() for d in deficits])
            scores = self._with_transparency(scores, deficit)
            self._set_reference_scores(scores[np.isfinite(scores)])

    def _set_reference_scores(self, scores):
        scores = np.sort(np.asarray(scores, dtype=np.float64))
        if scores.size == 0:
            log.warning(
                "no clean reference patch to calibrate on: thresholds fall back to "
                "each frame's median + k MAD"
            )
            self.reference_scores_ = None
            return
        if scores.size > _N_CALIBRATION_QUANTILES:
            # Keep the quantiles; the conformal threshold only needs the upper tail resolved.
            n_total = scores.size
            scores = np.quantile(scores, np.linspace(0, 1, _N_CALIBRATION_QUANTILES))
            self.n_reference_ = n_total
        else:
            self.n_reference_ = scores.size
        self.reference_scores_ = scores
        log.info(
            "calibrated on %d clean reference patches (median score %.4g)",
            self.n_reference_,
            np.median(scores),
        )
        need = math.ceil(1.0 / self.fpr - 1.0)  # conformal_threshold's bound
        if self.n_reference_ < need:
            # said now, not first when a frame is masked
            log.warning(
                "calibrated on %d clean reference patches, too few for fpr=%g (it needs %d): "
                "call calibrate() on more clean frames of the survey, or use a larger fpr",
                self.n_reference_,
                self.fpr,
                need,
            )

    # -- scoring ----------------------------------------------------------

    def _prepare(self, image, *, hdu=None):
        return self._prepare_ccd(aeqa_io.read_image(image, hdu=hdu))

    def _prepare_ccd(self, ccd):
        data = ccd.data
        if data.ndim != 2:
            msg = f"image must be 2-D, got shape {data.shape}"
            raise InputDataError(msg)
        self._check_patch_fits(data.shape)
        saturation = _saturation_level(ccd.meta)
        shape = data.shape
        finite, valid = np.empty(shape, bool), np.empty(shape, bool)
        saturated = np.zeros(shape, bool)
        input_mask = np.zeros(shape, bool) if ccd.mask is None else np.asarray(ccd.mask, bool)
        x = np.empty(shape, np.float32)

        def pixel_masks(rows):
            np.isfinite(data[rows], out=finite[rows])
            valid[rows] = finite[rows]
            if saturation is not None:
                with np.errstate(invalid="ignore"):
                    np.greater_equal(data[rows], saturation, out=saturated[rows])
                saturated[rows] &= finite[rows]
                valid[rows] &= ~saturated[rows]
            if ccd.mask is not None:
                valid[rows] &= ~input_mask[rows]

        workers = self.reconstructor_.n_threads()
        bands = _row_bands(shape[0], workers)
        with thread_pool(workers) as pool:  # bands of rows, one per core
            _wait([pool.submit(pixel_masks, rows) for rows in bands])
            if not finite.any():
                msg = "every pixel of the image is NaN or inf: there is nothing to evaluate"
                raise InputDataError(msg)
            footprint = self._footprint(data, finite)
            if footprint is not None:
                valid &= footprint
            stats = sky_statistics(data, valid)
            exptime = exposure_time(ccd.meta)
            if self.camera_ is not None:
                # about the level and in the noise of the camera's clear sky
                # tonight: a cloud over most of the frame moves the frame's own
                p = self.patch_size
                step = 2 if p % 2 == 0 and p >= 8 else 1
                sample = np.where(valid[::step, ::step], data[::step, ::step], np.nan)
                patch_sky, _ = aggregate_patches(sample, p // step, statistic="median")
                _, noise, anchor = self.camera_.clear_sky(patch_sky, shape, p, exptime)
                level, _ = self.camera_.expected_sky(shape, p, exptime, maps=False)
                stats = SkyStatistics(level=level * anchor, noise=noise)
            _wait(
                [
                    pool.submit(
                        normalize_frame,
                        data[rows],
                        valid[rows],
                        method=self.normalization,
                        stats=stats,
                        out=x[rows],
                    )
                    for rows in bands
                ]
            )
        return {
            "ccd": ccd,
            "x": x,
            "valid": valid,
            "finite": finite,
            "saturated": saturated,
            "input_mask": input_mask,
            "footprint": footprint,
            "stats": stats,
            "exptime": exptime,
        }

    def _footprint(self, data, finite):
        """The illuminated footprint (None: the whole frame).

        Where the camera reference has a footprint for frames of this shape,
        its patches wholly inside or outside hold; only patches on its edge
        are measured on the frame, so a cloud cannot move the footprint.
        """
        camera = self.camera_
        if camera is not None and camera.maps_apply(data.shape, self.patch_size):
            p, (ny, nx) = self.patch_size, data.shape
            coverage = np.repeat(np.repeat(camera.coverage, p, 0), p, 1)[:ny, :nx]
            footprint = coverage >= 1
            edge = (coverage > 0) & ~footprint
            if edge.any():  # measured on the frame only where the reference is partial
                footprint |= edge & detect_footprint(data, finite)
        else:
            footprint = detect_footprint(data, finite)
        return None if footprint.all() else footprint

    def _check_patch_fits(self, shape):
        ny, nx = shape
        if self.patch_size is not None and (ny < self.patch_size or nx < self.patch_size):
            msg = (
                f"image of {ny}x{nx} pixels is smaller than one patch of "
                f"{self.patch_size}x{self.patch_size}; use a smaller patch_size"
            )
            raise InputDataError(msg)

    def _tile_transform(self):
        # With the sky term the sky offset is scored apart, so the network sees
        # tiles with their median removed and scores structure alone: the image
        # score then does not depend on where tile edges fall (< 0.2 % with the
        # overlap, against > 1 % without).
        if self.normalization == "minmax":
            return minmax_tiles
        return subtract_tile_median if self.sky_term else None

    def _tile_tasks(self, shape, workers):
        """Tile tasks of a frame, in row-major order.

        Returns the tile side, the padded shape and, per task, its origins,
        owned regions and the number of residual rows complete once it and
        every task before it are done.
        """
        ny, nx = shape
        t = self.reconstructor_.tile_side(shape, self.tile_size)
        padded = (max(ny, t), max(nx, t))
        overlap = min(self.overlap, (t - 1) // 2)
        origins = tile_origins(padded, t, overlap)
        regions = owned_regions(origins, padded, t)
        chunk = self.reconstructor_.tiles_per_batch(t, workers)
        tasks = []
        for y in np.unique(origins[:, 0]):
            row = np.flatnonzero(origins[:, 0] == y)
            for start in range(0, len(row), chunk):
                take = row[start : start + chunk]
                rows_done = regions[row[0], 1] if start + chunk >= len(row) else None
                tasks.append((origins[take], regions[take], rows_done))
        return t, padded, tasks

    def _score_prepared(self, prepared, *, progress_bar=False):
        parts = self._score_parts(
            prepared,
            with_psf=self.psf_calibration_ is not None,
            progress_bar=progress_bar,
            trails=self.trails,
        )
        prepared["trails"] = parts["trails"]
        mae, raw = self._mae_scores(parts, _frame_info(prepared))
        if raw is not None:
            prepared["raw_scores"] = self._combine(raw, parts["psf"])
        scores = self._combine(mae, parts["psf"])
        deficit = None
        if self.camera_ is not None:  # the transparency term needs the camera's star density
            parts["coverage"] = _coverage(
                prepared["footprint"], prepared["x"].shape, self.patch_size
            )
            deficit = self._transparency(parts, _frame_info(prepared))
        prepared["transparency"] = deficit
        if deficit is not None:
            scores = self._with_transparency(scores, deficit)
        return scores, parts["n_valid"], parts["residual"]

    def _transparency(self, parts, info, *, shift=(0, 0)):
        """Per patch, the deficit of sources against the camera reference (sigmas), or None."""
        if self.camera_ is None or parts.get("star_counts") is None:
            return None
        if self.camera_.star_density is None:
            return None
        return self.camera_.transparency_deficit(
            parts["star_counts"], parts["coverage"], info["exptime"], shift=shift
        )

    def _with_transparency(self, scores, deficit):
        """``scores``, raised where sources are missing.

        A deficit of ``z`` sigmas scores ``z / z_fpr`` times the threshold
        of the default ``fpr``, where ``z_fpr`` is the deficit that a clean
        sky shows with probability ``fpr``: both terms then mask at the
        same rate.
        """
        if self.reference_scores_ is None or not _supports(self.reference_scores_, self.fpr):
            return scores  # too few references: said when masking
        threshold = self._calibrated_threshold(self.fpr)
        if not np.isfinite(threshold):
            return scores
        equivalent = threshold * deficit / ndtri(1.0 - self.fpr)
        raise_it = np.isfinite(deficit) & (deficit > 0)
        return np.where(raise_it, np.fmax(scores, equivalent), scores)

    def _mae_scores(self, parts, info, *, shift=(0, 0)):
        """Per patch: the MAE score with its sky term, and the same before star-aware scoring (or None)."""
        mae = parts["mae"] + self._sky_term(parts["sky"], info, shift=shift)
        raw = None
        if self.star_aware:
            raw = parts["raw_mae"] + self._sky_term(parts["raw_sky"], info, shift=shift)
        return mae, raw

    def _sky_term(self, sky, info, *, shift=(0, 0)):
        """The sky term: the patch sky against the camera's clean sky, or against the frame's."""
        if sky is None:
            return 0.0
        if self.camera_ is None:
            return np.abs(sky)
        stats = info["stats"]
        patch_sky = _patch_sky_level(sky, stats)
        clear, noise, _ = self.camera_.clear_sky(
            patch_sky, info["shape"], self.patch_size, info["exptime"], shift=shift
        )
        # the frame-relative term's form, in the camera's clear sky and
        # noise; a change of the sky under _SKY_DEAD_ZONE does not count
        excess = np.abs(patch_sky - clear) - _SKY_DEAD_ZONE * np.abs(clear)
        return np.arcsinh(np.maximum(excess, 0.0) / (_ASINH_SOFTENING * noise))

    def _score_parts(
        self, prepared, *, with_psf=True, progress_bar=False, local_background=None, trails=False
    ):
        """Per patch: the parts of the score (a dict).

        ``mae`` (star-aware) and ``raw_mae`` (not) are the aggregated
        residual, ``sky`` and ``raw_sky`` the median of the normalised patch
        (None without the sky term), ``psf`` the PSF term or None, with
        ``n_valid``, the ``residual`` and the ``stars`` found (or None).

        The frame is scored as independent tasks on one thread per core:
        the network on a row of tiles at a time (one torch thread each,
        which uses a CPU better than torch's own threads on these small
        convolutions), the star finding, and the patch statistics of each
        band of patch rows as soon as the tiles above it are done.
        With ``local_background`` (the default when there is a camera
        reference) the network sees the frame less its local background
        (`~astro_aeqa.preprocessing.subtract_local_background`).
        """
        with_psf = with_psf and self.psf_term and self.reference_fwhm_ is not None
        x = prepared["x"]
        if local_background is None:  # as the camera reference was calibrated
            local_background = self.camera_ is not None and self.sky_term
        if local_background:
            x = subtract_local_background(x, prepared["valid"], max(1, self.patch_size // 2))
        ny, nx = x.shape
        p = self.patch_size
        workers = self.reconstructor_.n_threads()
        t, padded, tasks = self._tile_tasks(x.shape, workers)
        if padded != x.shape:  # shorter than a tile: reflect to one tile, crop after
            x = np.pad(x, ((0, padded[0] - ny), (0, padded[1] - nx)), mode="reflect")
        residual = np.empty(padded, dtype=np.float32)
        bar = _progress_bar(
            total=sum(len(o) for o, _, _ in tasks), enabled=progress_bar, desc="tiles", unit="tile"
        )
        rec = self.reconstructor_
        with thread_pool(workers) as pool, rec.threads(workers):
            stars = None
            if self.star_aware or with_psf or local_background:
                stars = pool.submit(
                    self._star_parts, prepared, with_psf=with_psf, count=local_background
                )
            found_trails = pool.submit(_find_trails, prepared) if trails else None
            model = rec.prepare()  # compiled here, not by two tasks at once
            transform = self._tile_transform()
            pending = [
                (
                    pool.submit(
                        rec.residuals,
                        x,
                        origins,
                        regions,
                        t,
                        residual,
                        transform=transform,
                        model=model,
                    ),
                    len(origins),
                    rows_done,
                )
                for origins, regions, rows_done in tasks
            ]
            bands, start = [], 0
            for future, n_tiles, rows_done in pending:
                future.result()
                bar.update(n_tiles)
                if rows_done is None:
                    continue
                stop = ny if rows_done >= ny else rows_done // p * p
                if stop > start:
                    bands.append(
                        pool.submit(self._score_band, prepared, residual, start, stop, stars)
                    )
                    start = stop
            bands = _wait(bands)
            psf, star_pixels, found = (None, None, None) if stars is None else stars.result()
        bar.close()
        mae, sky, raw_mae, raw_sky, n_valid = (
            None if part[0] is None else np.concatenate(part) for part in zip(*bands, strict=True)
        )
        return {
            "mae": mae,
            "sky": sky,
            "raw_mae": raw_mae,
            "raw_sky": raw_sky,
            "psf": psf,
            "n_valid": n_valid,
            "residual": residual[:ny, :nx],
            "star_pixels": star_pixels,
            "stars": found,
            "star_counts": None if found is None else _star_counts(found, (ny, nx), p),
            "trails": None if found_trails is None else found_trails.result(),
        }

    def _star_parts(self, prepared, *, with_psf, count=False):
        """The PSF term per patch (or None), the bright-star pixels (or None) and the sources
        (down to _COUNT_MIN_SNR with ``count``, for the transparency term)."""
        found = find_stars(
            prepared["ccd"].data,
            prepared["valid"],
            stats=prepared["stats"],
            fwhm=self.reference_fwhm_,
            min_peak=_COUNT_MIN_SNR if count else _STAR_MIN_SNR,
        )
        psf = stars = None
        shape = prepared["x"].shape
        if with_psf:
            psf = psf_shape_map(
                found, shape, self.patch_size, self.reference_fwhm_, min_snr=_STAR_MIN_SNR
            )
        if self.star_aware:
            stars, _ = bright_star_mask(
                prepared["ccd"].data, fwhm=self.reference_fwhm_, found=found, min_snr=_STAR_MIN_SNR
            )
        return psf, stars, found

    def _score_band(self, prepared, residual, start, stop, stars):
        """The patch rows in ``start:stop``: MAE, sky median (or None), both before
        star-aware scoring, and the valid counts.

        ``stars`` is the future of `_star_parts` (bands are scored while the
        stars are still being found) or the bright-star pixels themselves.
        """
        nx = prepared["x"].shape[1]
        band = residual[start:stop, :nx]
        valid = prepared["valid"][start:stop]
        x = prepared["x"][start:stop]
        band[~valid] = np.nan
        mae, n_valid = self._aggregate(band, valid)
        sky = self._patch_sky(x, valid) if self.sky_term else None
        if not self.star_aware:
            return mae, sky, mae, sky, n_valid
        # Only patches that hold star pixels change; a patch that is all
        # bright star keeps its own score. A star's wings also lift its
        # patch's median, hence the sky term is taken without them too.
        star_pixels = (stars.result()[1] if hasattr(stars, "result") else stars)[start:stop]
        starless = valid & ~star_pixels
        touched = patch_any(star_pixels, self.patch_size)
        kept, _ = self._aggregate(band, starless, patches=touched)
        kept_mae = np.where(np.isfinite(kept), kept, mae)
        kept_sky = sky
        if self.sky_term:
            starless_sky = self._patch_sky(x, starless, patches=touched)
            kept_sky = np.where(np.isfinite(starless_sky), starless_sky, sky)
        return kept_mae, kept_sky, mae, sky, n_valid

    def _combine(self, mae, psf):
        """The patch score: the MAE, or the PSF term on the MAE's clean scale if larger."""
        cal = self.psf_calibration_
        if psf is None or cal is None or not self.psf_term:
            return mae
        on_mae_scale = (
            cal["mae_median"] + cal["mae_mad"] * (psf - cal["psf_median"]) / cal["psf_mad"]
        )
        return np.where(np.isfinite(on_mae_scale), np.fmax(mae, on_mae_scale), mae)

    def _aggregate(self, residual, weights, patches=None):
        return aggregate_patches(
            residual, self.patch_size, weights=weights, statistic=self.aggregate, patches=patches
        )

    def _patch_sky(self, x, valid, patches=None):
        # The median of every other pixel in each axis: 4x cheaper than the
        # full median and as good a sky estimate at these patch sizes.
        p = self.patch_size
        step = 2 if p % 2 == 0 and p >= 8 else 1
        sky = np.where(valid[::step, ::step], x[::step, ::step], np.nan)
        medians, _ = aggregate_patches(sky, p // step, statistic="median", patches=patches)
        return medians[: -(-x.shape[0] // p), : -(-x.shape[1] // p)]

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
        prepared = self._prepare_ccd(ccd)
        patch_scores, n_valid, residual = self._score_prepared(prepared, progress_bar=progress_bar)
        threshold, used_fpr, method = self._threshold(patch_scores, threshold=threshold, fpr=fpr)
        with np.errstate(invalid="ignore"):
            raw_mask = patch_scores > threshold
        patch_mask = clean_patch_mask(
            raw_mask, opening=self.morphology[0], closing=self.morphology[1]
        )
        shape = residual.shape
        pixel_mask = patch_mask_to_pixel_mask(patch_mask, self.patch_size, shape)
        footprint = prepared["footprint"]
        if footprint is not None:
            pixel_mask &= footprint
        trails, trail_pixels = prepared.get("trails"), None
        if trails is not None and len(trails):
            trail_pixels = trail_mask(shape, trails)
            if footprint is not None:
                trail_pixels &= footprint
            pixel_mask |= trail_pixels
        if self.camera_ is None and method == "fpr":
            masked = (
                float(patch_mask[np.isfinite(patch_scores)].mean()) if patch_mask.any() else 0.0
            )
            if masked > _ZERO_SHOT_WARN_FRACTION:
                warnings.warn(
                    f"{masked:.0%} of the frame's patches are masked by a model that has no "
                    "reference of this camera; a model trained on other cameras can take a good "
                    "frame's ordinary features for defects. Call calibrate() on two or more "
                    "clean frames of this camera for masks you can trust.",
                    AstropyUserWarning,
                    stacklevel=3,
                )
        star_kept = np.zeros(shape, bool)
        if "raw_scores" in prepared:
            with np.errstate(invalid="ignore"):
                kept = (prepared["raw_scores"] > threshold) & ~patch_mask
            star_kept = patch_mask_to_pixel_mask(kept, self.patch_size, shape)
        if self.reference_scores_ is not None:
            reference_median = float(np.median(self.reference_scores_))
            relative = patch_scores / reference_median
            pvals = pvalues(patch_scores, self.reference_scores_)
        else:
            relative = np.full(patch_scores.shape, np.nan)
            pvals = np.full(patch_scores.shape, np.nan)
        ccd = prepared["ccd"]
        score_map = NDData(
            patch_scores.astype(np.float32),
            wcs=aeqa_io.score_map_wcs(ccd.wcs, self.patch_size, shape),
            meta={"AEQAPSZ": self.patch_size},
        )
        return QualityResult(
            score=float(np.nanmean(patch_scores)),
            patch_scores=patch_scores,
            relative_scores=relative,
            pvalues=pvals,
            n_valid=n_valid,
            residual=residual.astype(np.float32, copy=False),
            patch_mask=patch_mask,
            mask=pixel_mask,
            threshold=float(threshold),
            fpr=used_fpr,
            threshold_method=method,
            score_map=score_map,
            valid=prepared["valid"],
            patch_size=self.patch_size,
            shape=shape,
            _finite=prepared["finite"],
            _saturated=prepared["saturated"],
            _input_mask=prepared["input_mask"],
            _star_kept=star_kept,
            footprint=footprint,
            camera_reference=self.camera_ is not None,
            transparency=prepared.get("transparency"),
            trails=trails,
            trail_mask=trail_pixels,
        )

    def _threshold(self, patch_scores, *, threshold, fpr):
        if threshold is not None and fpr is not None:
            msg = "give either threshold or fpr, not both"
            raise ValueError(msg)
        if threshold is not None:
            threshold = float(threshold)
            if not np.isfinite(threshold):
                msg = f"threshold must be a finite number, got {threshold}"
                raise ValueError(msg)
            return threshold, None, "explicit"
        fpr = self.fpr if fpr is None else _check_fpr(fpr)
        if self.reference_scores_ is None:
            return robust_threshold(patch_scores), None, "robust"
        calibrated = self._calibrated_threshold(fpr)
        if self.camera_ is None and _fraction_above(patch_scores, calibrated) > 0.5:
            # Zero-shot, most of the frame lies outside the model's reference:
            # a camera the model never saw looks like that too, so the frame's
            # own clean majority is the reference.
            own = max(robust_threshold(patch_scores), calibrated)
            warnings.warn(
                f"more than half of the frame's patches score above the model's reference "
                f"(threshold {calibrated:.4g} at fpr={fpr}), and the model has no reference of "
                "this camera: the frame is masked against its own clean majority instead "
                f"(median + 5 MAD, threshold {own:.4g}). Call calibrate() on two or more clean "
                "frames of this camera for masks that say where.",
                AstropyUserWarning,
                stacklevel=4,
            )
            return own, None, "self"
        return calibrated, fpr, "fpr"

    def _calibrated_threshold(self, fpr):
        # Calibrated on fewer than _FEW_FRAMES frames of a camera, the default
        # fpr's threshold is never within _MIN_THRESHOLD_RATIO of a typical
        # clean patch: a few alike frames understate how clean patches vary
        # from night to night. Other fprs move by the same margin, so that
        # they still order the thresholds.
        reference = self.reference_scores_
        threshold = conformal_threshold(reference, fpr)
        if self.camera_ is None or self.camera_.n_frames >= _FEW_FRAMES:
            return threshold
        if not _supports(reference, self.fpr):  # (said by the line above if at all)
            return threshold
        default = conformal_threshold(reference, self.fpr)
        if np.isfinite(default):
            threshold += max(0.0, _MIN_THRESHOLD_RATIO * float(np.median(reference)) - default)
        return threshold

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
        return self._masked_ccd(image, result)

    def _masked_ccd(self, ccd, result):
        # ccd is read_image's new object, shared with no caller: the output
        # takes its arrays without another copy of the frame
        out = CCDData(
            ccd.data,
            unit=ccd.unit,
            mask=combine_masks(ccd.mask, result.mask | ~result._finite),  # NaN/inf are bad pixels
            uncertainty=ccd.uncertainty,
            wcs=ccd.wcs,
            meta=ccd.meta.copy(),
        )
        header = (
            out.meta if isinstance(out.meta, fits.Header) else fits.Header(_fits_safe(out.meta))
        )
        for keyword, value, comment in aeqa_io.aeqa_header_cards(
            version=_package_version(),
            model_name=self.model_name,
            model_sha=self.model_sha,
            score=result.score,
            threshold=result.threshold,
            fpr=result.fpr,
            patch_size=self.patch_size,
            masked_fraction=result.masked_fraction,
            n_trails=None if result.trails is None else len(result.trails),
        ):
            header[keyword] = (value, comment)
        header.add_history(
            f"astro_aeqa {_package_version()}: masked {result.masked_fraction:.2%} of pixels "
            f"(score {result.score:.4g}, threshold {result.threshold:.4g}, {result.threshold_method})"
        )
        out.meta = header
        return out

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
            msg = f"{path}: file exists; pass overwrite=True (or --overwrite) to replace it"
            raise FileExistsError(msg)
        self._check_fitted()
        ccd = aeqa_io.read_image(image, hdu=hdu)
        result = self._evaluate_ccd(ccd, threshold=threshold, fpr=fpr)
        with thread_pool(min(2, self.reconstructor_.n_threads())) as pool:
            flags = pool.submit(result.flag_plane)
            out = self._masked_ccd(ccd, result)
            flags = flags.result()
        aeqa_io.write_aeqa_fits(
            path,
            out,
            score_map=result.score_map,
            flags=flags,
            overwrite=overwrite,
            source=image,  # the output header is the input's plus the AEQA cards
            source_hdu=hdu,
            trails=result.trails if result.trails is not None and len(result.trails) else None,
            # a float32 file is written back from the array already read
            original_data=None
            if aeqa_io.stored_as_float32(image, hdu=hdu)
            else aeqa_io.read_original_data(image, hdu=hdu),
        )
        return result

    # -- files --------------------------------------------------------------

    def _metadata(self):
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
            "psf_calibration": self.psf_calibration_,
            "reference_fwhm": self.reference_fwhm_,
            "fpr": self.fpr,
            "morphology": list(self.morphology),
            "camera": None if self.camera_ is None else self.camera_.to_dict(),
            "calibration": None
            if self.reference_scores_ is None
            else {
                "reference_scores": [float(s) for s in self.reference_scores_],
                "n_reference": int(self.n_reference_),
            },
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
        calibration = meta.get("calibration")
        if calibration:
            ev.reference_scores_ = np.asarray(calibration["reference_scores"], dtype=np.float64)
            ev.n_reference_ = int(calibration.get("n_reference", ev.reference_scores_.size))
        ev.training_ = meta.get("training", {})
        ev.reference_fwhm_ = meta.get("reference_fwhm")
        ev.psf_calibration_ = meta.get("psf_calibration")
        if meta.get("camera") is not None:
            ev.camera_ = CameraReference.from_dict(meta["camera"], source=str(path))
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


def _frame_fwhm(frame):
    """The PSF FWHM of a prepared frame, or None without a star to measure."""
    try:
        return measure_fwhm(frame["ccd"].data, frame["valid"], stats=frame["stats"])
    except (InputDataError, ValueError):
        return None


def _find_trails(prepared):
    """Trails in a prepared frame, searched on its S/N, ``(data - level) / noise``."""
    stats, valid = prepared["stats"], prepared["valid"]
    snr = np.subtract(prepared["ccd"].data, np.float32(stats.level), dtype=np.float32)
    snr /= np.float32(stats.noise)
    snr[~valid] = 0.0
    return find_trails(snr, valid)


def _star_counts(found, shape, patch_size):
    """Sources per patch of a `find_stars` catalogue."""
    n_py, n_px = patch_grid_shape(shape, patch_size)
    iy = np.clip(np.asarray(found["y"], float) // patch_size, 0, n_py - 1).astype(int)
    ix = np.clip(np.asarray(found["x"], float) // patch_size, 0, n_px - 1).astype(int)
    return np.bincount(iy * n_px + ix, minlength=n_py * n_px).reshape(n_py, n_px).astype(float)


def _coverage(footprint, shape, patch_size):
    """Per patch, the fraction of its pixels inside ``footprint`` (None: all), a bool map."""
    if footprint is None:
        return np.ones(patch_grid_shape(shape, patch_size))
    return aggregate_patches(footprint.astype(np.float32), patch_size, statistic="mean")[0]


def _supports(reference, fpr):
    """Whether the reference scores are enough for a finite threshold at ``fpr``."""
    n = int(np.count_nonzero(np.isfinite(reference)))
    return n >= math.ceil(1.0 / fpr - 1.0)


def _fraction_above(scores, threshold):
    """Fraction of the finite scores above ``threshold``."""
    finite = scores[np.isfinite(scores)]
    return float(np.mean(finite > threshold)) if finite.size else 0.0


def _frame_info(prepared):
    """What the sky term needs of a prepared frame."""
    return {
        "stats": prepared["stats"],
        "shape": prepared["x"].shape,
        "exptime": prepared["exptime"],
    }


def _patch_sky_level(sky, stats):
    """Patch sky medians of the noise-normalised frame back in data units.

    The median commutes with the normalisation's monotonic asinh stretch.
    """
    return stats.level + _ASINH_SOFTENING * stats.noise * np.sinh(sky)


def _row_bands(n_rows, n_bands):
    """``n_bands`` slices that split ``range(n_rows)`` into near-equal bands."""
    edges = np.linspace(0, n_rows, max(1, min(n_bands, n_rows)) + 1).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _wait(futures):
    """The results of ``futures``, in order (a task's error is raised here)."""
    return [future.result() for future in futures]


def _median_and_mad(values):
    """Median and median absolute deviation (not scaled to a sigma); NaN when empty."""
    if values.size == 0:
        return np.nan, np.nan
    median = float(np.median(values))
    return median, float(np.median(np.abs(values - median)))


def _check_fpr(fpr):
    fpr = float(fpr)
    if not 0.0 < fpr < 1.0:
        msg = f"fpr must lie strictly between 0 and 1, got {fpr}"
        raise ValueError(msg)
    return fpr


def _saturation_level(meta):
    for key in ("SATURATE", "SATLEVEL", "SATURATION"):
        value = meta.get(key) if meta is not None else None
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


def _iter_references(references, filter):
    if hasattr(references, "files_filtered"):  # ccdproc.ImageFileCollection
        return references.files_filtered(include_path=True, **(filter or {}))
    if isinstance(references, str | Path | CCDData | NDData | np.ndarray | fits.HDUList):
        return [references]
    return references


def _fits_safe(meta):
    return {k: v for k, v in dict(meta or {}).items() if isinstance(v, str | int | float | bool)}
