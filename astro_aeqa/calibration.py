# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The calibration of the scores: clean reference patch scores and the camera reference.

`Calibration` holds what `~astro_aeqa.AEQualityEvaluator.calibrate` (and
``fit``) learn from clean frames: the scores of clean reference patches
(thresholds for a false-mask rate and p-values come from them), the scale
that puts the PSF term on the scale of the MAE, and the camera reference.

The camera reference: what clean sky of one camera looks like, in absolute terms.

A patch judged only against the rest of its own frame cannot be placed: on
a frame that a cloud covers to 95 %, the clear 5 % is what stands out. The
camera reference, learnt by `~astro_aeqa.AEQualityEvaluator.calibrate` (and
``fit``) from clean frames, holds the clean sky level per unit exposure,
its noise, how much it varies from clean frame to clean frame, and, for a
camera whose frames keep one shape (all-sky cameras, fixed fields), the
clean sky and the illuminated footprint patch by patch. A new frame's
patches are then scored against that, so a cloud is masked where it is.
"""

import logging
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from ._masking import conformal_threshold, pvalues
from .exceptions import ModelFileError
from .utils import nanmedian

__all__ = ["Calibration", "CameraReference"]

log = logging.getLogger(__name__)

# Reference scores kept in a model file: enough quantiles to calibrate fpr=0.001.
_N_CALIBRATION_QUANTILES = 4001
# Least threshold at the default fpr, as a multiple of the median clean
# reference score (the paper's relative threshold), for camera references
# of fewer than _FEW_FRAMES frames.
_FEW_FRAMES = 5
_MIN_THRESHOLD_RATIO = 1.25

# Least fractional change of the clean sky level that marks a patch as not
# clear: clean frames of one camera differ by several per cent (airglow,
# zodiacal light, twilight), which two reference frames cannot measure.
_MIN_SKY_TOLERANCE = 0.15
# The transparency term counts sources in blocks of 2 * _STAR_REACH + 1
# patches a side (clouds are larger than a patch; one patch holds few stars),
_STAR_REACH = 2
# and only where the clean sky would show this many there.
_MIN_EXPECTED_STARS = 8.0
# Half-width of the cluster of clear patches that anchors a frame's clear sky
# (fraction of the sky level).
_CLUSTER_WIDTH = 0.025
# Exposure-time keywords, in the order they are looked up.
_EXPTIME_KEYS = ("EXPTIME", "EXPOSURE", "EXP_TIME", "ITIME")


def exposure_time(meta):
    """Exposure time in seconds from a header, or None."""
    for key in _EXPTIME_KEYS:
        value = meta.get(key) if meta is not None else None
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None


@dataclass(frozen=True)
class CameraReference:
    """
    Clean sky of one camera, learnt from clean frames.

    Attributes
    ----------
    sky_level : float
        Median clean sky level (data units) at ``exptime``.
    noise : float
        Median clean sky noise (data units) at ``exptime``.
    exptime : float or None
        Median exposure time of the reference frames (seconds), None when
        their headers give none; levels are then compared as they are.
    sky_tolerance : float
        Fractional change of the sky level that clean frames show (at
        least 15 %): patches within it are a frame's clear candidates.
    n_frames : int
        Number of clean frames it was learnt from.
    shape : tuple of int or None
        Frame shape of the per-patch maps (None: no maps).
    sky_map : 2-D `~numpy.ndarray` or None
        Per patch, the clean sky level relative to ``sky_level`` (NaN
        outside the footprint).
    coverage : 2-D `~numpy.ndarray` or None
        Per patch, the fraction of its pixels inside the footprint of the
        reference frames.
    patch_size : int or None
        Patch side of the maps.
    star_density : float or None
        Sources per patch bright enough to find (peak of at least 20 clean
        sky sigmas) on the clean frames; None when too few were found.
    star_dispersion : float
        Variance over mean of the source counts in blocks of patches on the
        clean frames (1 for a Poisson sky; more for clustered fields).
    star_map : 2-D `~numpy.ndarray` or None
        Per patch, the mean source count of the clean frames (with the
        other maps: fixed cameras see fewer stars towards the horizon).
    """

    sky_level: float
    noise: float
    exptime: float | None
    sky_tolerance: float
    n_frames: int
    shape: tuple | None = None
    sky_map: np.ndarray | None = None
    coverage: np.ndarray | None = None
    patch_size: int | None = None
    star_density: float | None = None
    star_dispersion: float = 1.0
    star_map: np.ndarray | None = None

    @classmethod
    def from_frames(cls, frames, patch_size):
        """
        Learn the reference from clean frames.

        Parameters
        ----------
        frames : list of dict
            Per frame: ``level`` and ``noise`` (the frame's sky statistics,
            data units), ``exptime`` (s or None), ``patch_sky`` (2-D patch
            sky levels in data units, NaN where none) and ``coverage``
            (2-D fraction of each patch inside the footprint), and
            ``star_counts`` (2-D sources per patch, or None).
        patch_size : int
            Patch side in pixels.
        """
        if not frames:
            msg = "a camera reference needs at least one clean frame"
            raise ValueError(msg)
        times = [f["exptime"] for f in frames]
        exptime = float(np.median(times)) if all(t is not None for t in times) else None

        def scale(frame):  # to the reference exposure
            return 1.0 if exptime is None else exptime / frame["exptime"]

        levels = np.array([f["level"] * scale(f) for f in frames])
        noises = np.array([f["noise"] * math.sqrt(scale(f)) for f in frames])
        sky_level = float(np.median(levels))
        shapes = {f["patch_sky"].shape for f in frames}
        same_shape = len(shapes) == 1 and len({f["shape"] for f in frames}) == 1
        sky_map = coverage = shape = None
        relative = [f["patch_sky"] * scale(f) / sky_level for f in frames]
        if same_shape:
            sky_map = nanmedian(np.stack(relative), axis=0)  # NaN outside every footprint
            coverage = np.mean([f["coverage"] for f in frames], axis=0)
            sky_map[coverage == 0] = np.nan
            shape = tuple(frames[0]["shape"])
            relative = [r / sky_map for r in relative]
        # how far clean patches stray from what the reference expects
        deviations = np.concatenate([np.ravel(r) - 1.0 for r in relative])
        deviations = deviations[np.isfinite(deviations)]
        spread = 1.4826 * float(np.median(np.abs(deviations))) if deviations.size else 0.0
        star_density, star_dispersion = _star_statistics(frames)
        star_map = None
        if same_shape and star_density is not None:
            star_map = np.mean([f["star_counts"] for f in frames], axis=0)
        return cls(
            star_map=star_map,
            star_density=star_density,
            star_dispersion=star_dispersion,
            sky_level=sky_level,
            noise=float(np.median(noises)),
            exptime=exptime,
            sky_tolerance=max(_MIN_SKY_TOLERANCE, 3.0 * spread),
            n_frames=len(frames),
            shape=shape,
            sky_map=sky_map,
            coverage=coverage,
            patch_size=int(patch_size),
        )

    def maps_apply(self, shape, patch_size):
        """Whether the per-patch maps describe frames of this shape and patch size."""
        return (
            self.sky_map is not None
            and self.shape is not None
            and tuple(shape) == tuple(self.shape)
            and patch_size == self.patch_size
        )

    def expected_sky(self, shape, patch_size, exptime, *, shift=(0, 0), maps=True):
        """
        Clean sky level and noise expected in each patch of a frame.

        ``shift`` is the origin of a patch grid moved by half a patch in y
        and/or x (``(0 or p // 2, 0 or p // 2)``), as calibration uses to
        sample more patches of few frames; the map is then averaged between
        neighbouring patches. With ``maps=False`` the level is the
        frame-wide clean sky.

        Returns
        -------
        level : float or 2-D `~numpy.ndarray`
            Per-patch map when the maps apply, else one number.
        noise : float
        """
        scale = 1.0
        if self.exptime is not None and exptime is not None:
            scale = exptime / self.exptime
        level = self.sky_level * scale
        if maps and self.maps_apply(shape, patch_size):
            level = level * _half_shifted(self.sky_map, shift)
        return level, self.noise * math.sqrt(scale)

    def clear_sky(self, patch_sky, shape, patch_size, exptime, *, shift=(0, 0)):
        """
        The clear-sky level of each patch of a frame, anchored on the camera.

        The patches whose sky lies within ``sky_tolerance`` of the camera's
        clean sky are the frame's clear candidates; the median ratio to the
        clean sky of the cluster of candidates nearest the reference (within
        2.5 % of the median of the few nearest) scales the reference to
        tonight's clear sky. A frame
        with no such patch (overcast, or a sky unlike any reference) gets
        the reference itself. So on a frame that a cloud covers to 95 % the
        clear 5 % is the anchor, not the cloud.

        Returns
        -------
        level : float or 2-D `~numpy.ndarray`
            Data units, per patch when the maps apply.
        noise : float
            The clean sky noise expected at this exposure and clear sky.
        anchor : float
            The clear sky over the camera's clean sky (1 when no clear
            candidate was found).
        """
        level, noise = self.expected_sky(shape, patch_size, exptime, shift=shift)
        if np.ndim(level):
            level = level[: patch_sky.shape[0], : patch_sky.shape[1]]
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = patch_sky / level
        finite = np.isfinite(ratio)
        clear = finite & (np.abs(ratio - 1.0) <= self.sky_tolerance)
        if clear.sum() < max(3, 0.05 * finite.sum()):
            return level, noise, 1.0
        # the cluster of candidates nearest the reference: a mild cloud or a
        # shutter shadow within the tolerance must not pull the anchor
        anchor = _nearest_cluster(ratio[clear], max(3, int(0.05 * finite.sum())))
        # a brighter clear sky is a noisier one (Poisson)
        return level * anchor, noise * math.sqrt(max(anchor, 0.0)), anchor

    def transparency_deficit(self, star_counts, coverage, exptime, *, shift=(0, 0)):
        """
        Per patch, how far fewer sources than the camera's clean sky shows
        lie around it, in sigmas (positive: missing stars; clouds that dim
        without brightening the sky).

        Counts are summed over the block of ``2 * _STAR_REACH + 1`` patches
        around each patch, against the clean density times the block's
        footprint, with the clean frames' dispersion. NaN where no term
        applies (no density learnt, another exposure time, few expected).
        """
        n_py, n_px = star_counts.shape
        if self.star_density is None or (
            self.exptime is not None
            and exptime is not None
            and abs(exptime / self.exptime - 1) > 0.1
        ):
            return np.full((n_py, n_px), np.nan)
        side = 2 * _STAR_REACH + 1
        inside = coverage > 0
        observed = _block_sums(np.nan_to_num(star_counts) * inside, side)
        variance = self.star_dispersion
        star_map = None
        if self.star_map is not None:
            star_map = _half_shifted(self.star_map, shift)[:n_py, :n_px]
        if star_map is not None and star_map.shape == star_counts.shape:
            expected = _block_sums(star_map * inside, side)
            variance *= 1.0 + 1.0 / self.n_frames  # the map's own counting noise
        else:
            expected = self.star_density * _block_sums(coverage, side)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (expected - observed) / np.sqrt(variance * expected)
        return np.where(expected >= _MIN_EXPECTED_STARS, z, np.nan)

    def to_dict(self):
        """A JSON-ready dict (for the model file)."""

        def grid(a):
            return (
                None
                if a is None
                else [[None if not np.isfinite(v) else float(v) for v in row] for row in a]
            )

        return {
            "sky_level": self.sky_level,
            "noise": self.noise,
            "exptime": self.exptime,
            "sky_tolerance": self.sky_tolerance,
            "n_frames": self.n_frames,
            "shape": None if self.shape is None else list(self.shape),
            "sky_map": grid(self.sky_map),
            "coverage": grid(self.coverage),
            "patch_size": self.patch_size,
            "star_density": self.star_density,
            "star_dispersion": self.star_dispersion,
            "star_map": grid(self.star_map),
        }

    @classmethod
    def from_dict(cls, d, *, source="the model file"):
        """
        Rebuild from `to_dict`'s output, checking every field.

        Raises
        ------
        astro_aeqa.exceptions.ModelFileError
            If a field is missing, of the wrong type or out of range.
        """

        def bad(field, why):
            msg = f"{source}: camera reference field {field!r} {why}; recalibrate with calibrate()"
            return ModelFileError(msg)

        if not isinstance(d, dict):
            raise bad("camera", f"must be a mapping, got {type(d).__name__}")

        def number(field, *, positive=True, optional=False):
            value = d.get(field)
            if value is None and optional:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(field, f"must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value) or (positive and value <= 0):
                raise bad(
                    field,
                    f"must be a finite{' positive' if positive else ''} number, got {value!r}",
                )
            return value

        shape = d.get("shape")
        patch_size = d.get("patch_size")
        maps = {}
        if shape is not None:
            if not (
                isinstance(shape, list)
                and len(shape) == 2
                and all(isinstance(n, int) and n > 0 for n in shape)
            ):
                raise bad("shape", f"must be two positive integers, got {shape!r}")
            if not isinstance(patch_size, int) or patch_size < 1:
                raise bad("patch_size", f"must be a positive integer, got {patch_size!r}")
            grid_shape = (-(-shape[0] // patch_size), -(-shape[1] // patch_size))
            for field in ("sky_map", "coverage", "star_map"):
                if field == "star_map" and d.get(field) is None:
                    continue
                try:
                    values = np.array(
                        [[np.nan if v is None else v for v in row] for row in d.get(field)],
                        dtype=float,
                    )
                except (TypeError, ValueError) as exc:
                    raise bad(field, f"must be a grid of numbers ({exc})") from None
                if values.shape != grid_shape:
                    raise bad(
                        field, f"must have the patch grid shape {grid_shape}, got {values.shape}"
                    )
                maps[field] = values
        n_frames = d.get("n_frames")
        if not isinstance(n_frames, int) or isinstance(n_frames, bool) or n_frames < 1:
            raise bad("n_frames", f"must be a positive integer, got {n_frames!r}")
        return cls(
            sky_level=number("sky_level", positive=False),
            noise=number("noise"),
            exptime=number("exptime", optional=True),
            sky_tolerance=number("sky_tolerance"),
            n_frames=n_frames,
            shape=None if shape is None else tuple(shape),
            sky_map=maps.get("sky_map"),
            coverage=maps.get("coverage"),
            patch_size=patch_size if isinstance(patch_size, int) else None,
            star_density=number("star_density", optional=True),
            star_dispersion=number("star_dispersion", optional=True) or 1.0,
            star_map=maps.get("star_map"),
        )


def needed_references(fpr):
    """Fewest clean reference scores that give a finite threshold at ``fpr`` (the conformal bound)."""
    return math.ceil(1.0 / fpr - 1.0)


@dataclass(frozen=True, eq=False)
class Calibration:
    """
    The calibration of an evaluator's scores on clean frames.

    Attributes
    ----------
    reference_scores : 1-D `~numpy.ndarray` or None
        Sorted scores of the clean reference patches (their 4001 quantiles
        when there were more); None without a calibration.
    n_reference : int
        Number of clean reference patches (0 without a calibration).
    camera : `CameraReference` or None
        The clean sky of the camera; None for a model that has none
        (zero-shot).
    psf_scale : dict or None
        Medians and MADs (``mae_median``, ``mae_mad``, ``psf_median``,
        ``psf_mad``) of the clean patches' MAE and PSF term, which put the
        PSF term on the scale of the MAE; None when the term is not used.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.calibration import Calibration
    >>> cal = Calibration.from_scores(np.linspace(0.1, 0.3, 1000), fpr=0.01)
    >>> round(cal.threshold(0.01), 4), cal.n_reference
    (0.2982, 1000)
    """

    reference_scores: np.ndarray | None = None
    n_reference: int = 0
    camera: CameraReference | None = None
    psf_scale: dict | None = None

    @classmethod
    def from_scores(cls, scores, *, fpr, camera=None, psf_scale=None):
        """
        A calibration on these clean reference patch scores.

        Non-finite scores must be left out beforehand. With none, there is
        no reference (a warning is logged); more than 4001 are kept as
        their quantiles. Too few for ``fpr`` are reported now.
        """
        scores = np.sort(np.asarray(scores, dtype=np.float64))
        if scores.size == 0:
            log.warning(
                "no clean reference patch to calibrate on: thresholds fall back to "
                "each frame's median + k MAD"
            )
            return cls(camera=camera, psf_scale=psf_scale)
        n_reference = scores.size
        if scores.size > _N_CALIBRATION_QUANTILES:
            # Keep the quantiles; the conformal threshold only needs the upper tail resolved.
            scores = np.quantile(scores, np.linspace(0, 1, _N_CALIBRATION_QUANTILES))
        log.info(
            "calibrated on %d clean reference patches (median score %.4g)",
            n_reference,
            np.median(scores),
        )
        need = needed_references(fpr)
        if n_reference < need:
            # said now, not first when a frame is masked
            log.warning(
                "calibrated on %d clean reference patches, too few for fpr=%g (it needs %d): "
                "call calibrate() on more clean frames of the survey, or use a larger fpr",
                n_reference,
                fpr,
                need,
            )
        return cls(
            reference_scores=scores, n_reference=n_reference, camera=camera, psf_scale=psf_scale
        )

    def replace(self, **changes):
        """A copy with some fields changed."""
        return replace(self, **changes)

    @property
    def calibrated(self):
        """Whether there are reference scores."""
        return self.reference_scores is not None

    def supports(self, fpr):
        """Whether the reference scores are enough for a finite threshold at ``fpr``."""
        if self.reference_scores is None:
            return False
        n = int(np.count_nonzero(np.isfinite(self.reference_scores)))
        return n >= needed_references(fpr)

    def threshold(self, fpr, *, default_fpr=None):
        """
        The patch-score threshold that masks a fraction ``fpr`` of clean patches.

        Calibrated on fewer than five frames of a camera, the threshold of
        ``default_fpr`` (default ``fpr``) is never within 1.25 times the
        median clean reference score: a few alike frames understate how
        clean patches vary from night to night. Other fprs move by the same
        margin, so that they still order the thresholds. Infinite when the
        reference is too small for ``fpr``.
        """
        default_fpr = fpr if default_fpr is None else default_fpr
        reference = self.reference_scores
        threshold = conformal_threshold(reference, fpr)
        if self.camera is None or self.camera.n_frames >= _FEW_FRAMES:
            return threshold
        if not self.supports(default_fpr):  # (said by the line above if at all)
            return threshold
        default = conformal_threshold(reference, default_fpr)
        if np.isfinite(default):
            threshold += max(0.0, _MIN_THRESHOLD_RATIO * float(np.median(reference)) - default)
        return threshold

    def pvalues(self, scores):
        """Per score, the probability that a clean reference patch scores at least as high (NaN without a reference)."""
        if self.reference_scores is None:
            return np.full(np.shape(scores), np.nan)
        return pvalues(scores, self.reference_scores)

    def relative(self, scores):
        """``scores`` over the median clean reference score (NaN without a reference)."""
        if self.reference_scores is None:
            return np.full(np.shape(scores), np.nan)
        return scores / float(np.median(self.reference_scores))

    def to_dict(self):
        """
        The model file's calibration entries, JSON-ready: ``calibration``
        (reference scores), ``camera`` and ``psf_calibration``.
        """
        return {
            "psf_calibration": self.psf_scale,
            "camera": None if self.camera is None else self.camera.to_dict(),
            "calibration": None
            if self.reference_scores is None
            else {
                "reference_scores": [float(s) for s in self.reference_scores],
                "n_reference": int(self.n_reference),
            },
        }

    @classmethod
    def from_dict(cls, d, *, source="the model file"):
        """
        Rebuild from `to_dict`'s entries (the model file's metadata).

        Raises
        ------
        astro_aeqa.exceptions.ModelFileError
            If the camera reference is damaged.
        """
        scores, n_reference = None, 0
        calibration = d.get("calibration")
        if calibration:
            scores = np.asarray(calibration["reference_scores"], dtype=np.float64)
            n_reference = int(calibration.get("n_reference", scores.size))
        camera = d.get("camera")
        return cls(
            reference_scores=scores,
            n_reference=n_reference,
            camera=None if camera is None else CameraReference.from_dict(camera, source=source),
            psf_scale=d.get("psf_calibration"),
        )


def _block_sums(grid, side):
    """Sum of each ``side`` x ``side`` block of a patch grid around each patch (zero outside)."""
    return ndimage.uniform_filter(np.asarray(grid, float), side, mode="constant") * side**2


def _star_statistics(frames):
    """Clean source density per patch and the dispersion of block counts, or (None, 1)."""
    counts = [(f["star_counts"], f["coverage"]) for f in frames if f.get("star_counts") is not None]
    if not counts:
        return None, 1.0
    inside = np.concatenate([c[cov >= 1].ravel() for c, cov in counts])
    if inside.size == 0 or inside.sum() < _MIN_EXPECTED_STARS:
        return None, 1.0
    density = float(inside.mean())
    side = 2 * _STAR_REACH + 1
    blocks = np.concatenate(
        [
            _block_sums(c * (cov >= 1), side)[_block_sums(cov >= 1, side) >= side**2 - 0.5]
            for c, cov in counts
        ]
    )
    dispersion = 1.0
    if blocks.size >= 2 and blocks.mean() > 0:
        dispersion = max(1.0, float(blocks.var() / blocks.mean()))
    return density, dispersion


def _nearest_cluster(ratios, k):
    """The median of the ratios within _CLUSTER_WIDTH of the ``k`` ratios nearest 1."""
    nearest = ratios[np.argsort(np.abs(ratios - 1.0), kind="stable")[:k]]
    centre = float(np.median(nearest))
    return float(np.median(ratios[np.abs(ratios - centre) <= _CLUSTER_WIDTH]))


def _half_shifted(grid, shift):
    """A patch map on a grid moved by half a patch: the mean of the two (or four) patches it straddles."""
    for axis, offset in enumerate(shift):
        if offset:
            edge = np.take(grid, [-1], axis=axis)
            extended = np.concatenate([grid, edge], axis=axis)
            n = grid.shape[axis]
            grid = 0.5 * (
                np.take(extended, range(n), axis=axis)
                + np.take(extended, range(1, n + 1), axis=axis)
            )
    return grid
