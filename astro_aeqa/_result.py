# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""The verdict on one frame: `QualityResult`."""

from dataclasses import dataclass

import numpy as np
from astropy.nddata import NDData
from astropy.table import QTable

from ._masking import build_flag_plane, negated
from ._wcs import score_map_wcs
from .io import KEYWORDS

__all__ = ["QualityResult"]


@dataclass(frozen=True, eq=False, repr=False)
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
    shape : tuple of int
        The frame's shape.
    finite : 2-D bool `~numpy.ndarray`
        Pixels with a finite value in the input (when every pixel is, a
        read-only all-True view that takes no memory).
    saturated : 2-D bool `~numpy.ndarray`
        Pixels at or above the header's saturation level (without a
        saturation level in the header, a read-only all-False view that
        takes no memory).
    input_mask : 2-D bool `~numpy.ndarray`
        The input's own mask (without one, a read-only all-False view).
    star_kept : 2-D bool `~numpy.ndarray`
        Pixels of patches above the threshold only because of the bright
        stars that star-aware scoring leaves out (not masked).
    """

    score: float
    patch_scores: np.ndarray
    relative_scores: np.ndarray
    pvalues: np.ndarray
    n_valid: np.ndarray
    residual: np.ndarray
    patch_mask: np.ndarray
    mask: np.ndarray
    threshold: float
    fpr: float | None
    threshold_method: str
    score_map: NDData
    valid: np.ndarray
    footprint: np.ndarray | None
    camera_reference: bool
    transparency: np.ndarray | None
    trails: QTable | None
    trail_mask: np.ndarray | None
    patch_size: int
    shape: tuple
    finite: np.ndarray
    saturated: np.ndarray
    input_mask: np.ndarray
    star_kept: np.ndarray

    @classmethod
    def of_frame(cls, prepared, scored, masks, calibration, *, wcs, patch_size):
        """The result of a frame scored by ``astro_aeqa._scoring.Scorer``.

        ``prepared``, ``scored`` and ``masks`` are its ``PreparedFrame``,
        ``FrameScores`` and ``FrameMask``; ``wcs`` the frame's WCS.
        """
        patch_scores, residual = scored.scores, scored.residual
        shape = residual.shape
        score_map = NDData(
            patch_scores.astype(np.float32),
            wcs=score_map_wcs(wcs, patch_size, shape),
            meta={KEYWORDS["patch_size"]: patch_size},
        )
        return cls(
            score=float(np.nanmean(patch_scores)),
            patch_scores=patch_scores,
            relative_scores=calibration.relative(patch_scores),
            pvalues=calibration.pvalues(patch_scores),
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
            camera_reference=calibration.camera is not None,
            transparency=scored.transparency,
            trails=scored.trails,
            trail_mask=masks.trail_pixels,
            patch_size=patch_size,
            shape=shape,
            finite=prepared.finite,
            saturated=prepared.saturated,
            input_mask=prepared.input_mask,
            star_kept=masks.star_kept,
        )

    @property
    def masked_fraction(self):
        """Fraction of the frame's pixels masked by AEQA."""
        mask = self.mask
        # (a count, not np.mean: bools are not cast to float64 first; the same value)
        return float(np.count_nonzero(mask) / mask.size) if mask.size else float("nan")

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
        """Return the ``AEQA_FLAGS`` bit plane of this result (see `astro_aeqa.flags`)."""
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
            non_finite=negated(self.finite),
            saturated=self.saturated,
            input_masked=self.input_mask,
            edge=edge,
            star_kept=self.star_kept,
            outside_footprint=None if self.footprint is None else negated(self.footprint),
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
