# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The scoring pipeline, in numpy: a frame -> its residual -> per-patch
statistics -> terms -> patch scores -> image score.

`Scorer` runs it for one evaluator configuration (`ScoringOptions`), one
`~astro_aeqa.calibration.Calibration` and one
`~astro_aeqa.nn.Reconstructor`:

1. `Scorer.prepare`: pixel masks (``astro_aeqa._preprocessing.valid_pixels``),
   the illuminated footprint, the sky statistics (against the camera's
   clear sky when there is a camera reference) and the normalised frame.
2. `Scorer.parts`: the network's residual ``|x - x_hat|``, and per patch its
   aggregate (the MAE), the normalised sky, the PSF term and the source
   counts, with the stars and the trails found.
3. The terms: `Scorer.mae_scores` (MAE plus the sky term, against the
   camera's clean sky or the frame's), `Scorer.combine` (the PSF term on the
   MAE's clean scale), `Scorer.transparency` and `Scorer.with_transparency`
   (missing sources).
4. `Scorer.score`: the patch scores of a frame (`FrameScores`), and
   `Scorer.mask`: its threshold and mask (`FrameMask`).

All the threading of a frame lives here: bands of rows for the pixel masks
and the normalisation; the network on a row of tiles per task, beside the
star finding, the trail search and the patch statistics of the bands of
patch rows already reconstructed.

`Scorer.calibrate` turns clean frames' records into a
`~astro_aeqa.calibration.Calibration`.
"""

import logging
import warnings
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
from astropy.utils.exceptions import AstropyUserWarning
from scipy.special import ndtri

from ._masking import clean_patch_mask, patch_mask_to_pixel_mask, robust_threshold
from ._preprocessing import (
    _ASINH_SOFTENING,
    NORMALIZATIONS,
    LocalBackground,
    SkyStatistics,
    minmax_tiles,
    normalize_frame,
    sky_statistics,
    subtract_tile_median,
    valid_pixels,
)
from ._stars import auto_patch_size, bright_star_mask, find_stars, measure_fwhm, psf_shape_map
from ._tiling import aggregate_patches, owned_regions, patch_any, patch_grid_shape, tile_origins
from ._trails import ScaledSNR, find_trails, trail_mask
from .calibration import Calibration, CameraReference, exposure_time, needed_references
from .exceptions import InputDataError
from .footprint import detect_footprint
from .utils import check_int, release_free_memory, thread_pool
from .utils import progress_bar as _progress_bar

__all__ = ["ScoringOptions", "PreparedFrame", "FrameInfo", "FrameScores", "FrameMask", "Scorer"]

log = logging.getLogger(__name__)

# Most pixels of a band of rows normalised as one task (temporaries of 9
# bytes a pixel while it runs)
_BAND_PIXELS = 2**21

# Faintest source peak (sky sigmas) that star-aware scoring leaves out and
# whose shape enters the PSF term (chosen by benchmarks/quality.py).
_STAR_MIN_SNR = 20.0
# Fraction of the clear sky by which a patch's sky may differ from it before
# the camera-referenced sky term counts it: about the change that 0.05 mag
# of extinction makes, and what photometry tolerates.
_SKY_DEAD_ZONE = 0.03
# Faintest source peak (clean sky sigmas) that the transparency term counts:
# fainter than the PSF term's, for counts large enough to place a cloud.
_COUNT_MIN_SNR = 10.0
# frames of more pixels release the heap's free memory after each row of tiles
_TRIM_ROWS_PIXELS = 2**25
#: Statistics of the absolute residual within a patch.
AGGREGATES = ("mean", "trimmed_mean", "median")
# Largest patch_size='auto' picks: the default crops (128 px) hold one such patch.
_AUTO_PATCH_MAX = 64
# Fewest clean patches with a PSF-term value that calibrate its scale.
_PSF_MIN_PATCHES = 20
# Zero-shot (no camera reference), masking more than this fraction of a
# frame's patches comes with a warning that names calibrate().
_ZERO_SHOT_WARN_FRACTION = 0.05


@dataclass(frozen=True)
class ScoringOptions:
    """The evaluator's options that scoring reads (see `~astro_aeqa.AEQualityEvaluator`)."""

    patch_size: int | None
    normalization: str
    aggregate: str
    sky_term: bool
    star_aware: bool
    psf_term: bool
    tile_size: int
    overlap: int
    fpr: float
    reference_fwhm: float | None = None

    @classmethod
    def of(cls, ev):
        """The options of an `~astro_aeqa.AEQualityEvaluator`."""
        return cls(
            patch_size=ev.patch_size,
            normalization=ev.normalization,
            aggregate=ev.aggregate,
            sky_term=ev.sky_term,
            star_aware=ev.star_aware,
            psf_term=ev.psf_term,
            tile_size=ev.tile_size,
            overlap=ev.overlap,
            fpr=ev.fpr,
            reference_fwhm=ev.reference_fwhm_,
        )


@dataclass(frozen=True)
class FrameInfo:
    """What the sky and transparency terms need of a frame."""

    stats: SkyStatistics
    shape: tuple
    exptime: float | None


@dataclass(frozen=True, eq=False)
class PreparedFrame:
    """A frame ready to score: its pixels, pixel masks, footprint, sky and normalisation.

    The normalised frame is made where it is used (`x_window`, `x_sample`)
    rather than held whole: 4 bytes a pixel less while a frame is scored.
    `x` makes it whole, for training and calibration.
    """

    data: np.ndarray  # the frame's pixels (float32, as read)
    meta: dict  # its header
    valid: np.ndarray  # pixels used: finite, unmasked, unsaturated, inside the footprint
    finite: np.ndarray
    saturated: np.ndarray
    input_mask: np.ndarray
    footprint: np.ndarray | None  # None: the whole frame
    stats: SkyStatistics
    exptime: float | None
    normalization: str = "noise"

    @property
    def shape(self):
        return self.data.shape

    @property
    def info(self):
        return FrameInfo(self.stats, self.shape, self.exptime)

    @cached_property
    def x(self):
        """The whole normalised frame (`astro_aeqa._preprocessing.normalize_frame`)."""
        return self.x_window(slice(None), slice(None))

    def x_window(self, rows, cols=slice(None)):
        """The normalised pixels of ``[rows, cols]`` (slices; steps allowed)."""
        if "x" in self.__dict__:
            return self.__dict__["x"][rows, cols]
        x, _ = normalize_frame(
            self.data[rows, cols],
            self.valid[rows, cols],
            method=self.normalization,
            stats=self.stats,
        )
        return x

    def x_sample(self, step):
        """``x[::step, ::step]``, made once."""
        if step == 1:
            return self.x
        samples = self.__dict__.setdefault("_x_samples", {})
        if step not in samples:
            samples[step] = self.x_window(slice(None, None, step), slice(None, None, step))
        return samples[step]


@dataclass(frozen=True, eq=False)
class FrameScores:
    """The scores of a frame: per patch, and what masking needs besides."""

    scores: np.ndarray  # patch scores
    n_valid: np.ndarray  # valid pixels per patch
    residual: np.ndarray  # |x - x_hat| per pixel, NaN where not valid
    raw_scores: np.ndarray | None  # the scores before star-aware scoring (None: not star-aware)
    transparency: np.ndarray | None  # source deficit per patch (sigmas), None without the term
    trails: object  # QTable of the trails found, None when not searched


@dataclass(frozen=True, eq=False)
class FrameMask:
    """The mask of a frame: its threshold and how it was chosen, patches and pixels."""

    threshold: float
    fpr: float | None  # the false-mask rate the threshold was calibrated for
    method: str  # 'explicit', 'fpr', 'robust' or 'self'
    patch_mask: np.ndarray  # patches above the threshold, after the morphology
    pixel_mask: np.ndarray  # their pixels inside the footprint, and the trails'
    trail_pixels: np.ndarray | None
    star_kept: np.ndarray  # pixels of patches above it only for their bright stars


class Scorer:
    """
    Scores frames for one configuration, calibration and reconstructor.

    Parameters
    ----------
    options : `ScoringOptions`
    calibration : `~astro_aeqa.calibration.Calibration`
    reconstructor : `~astro_aeqa.nn.Reconstructor`
    """

    def __init__(self, options, calibration, reconstructor):
        self.options = options
        self.calibration = calibration
        self.reconstructor = reconstructor
        self.patch_size = options.patch_size
        self.aggregate = options.aggregate
        self.sky_term = options.sky_term
        self.star_aware = options.star_aware
        self.psf_term = options.psf_term
        self.reference_fwhm = options.reference_fwhm
        self.camera = calibration.camera

    def with_calibration(self, calibration):
        """The same scorer with another calibration."""
        return Scorer(self.options, calibration, self.reconstructor)

    def workers(self):
        """Threads that score one frame."""
        return self.reconstructor.n_threads()

    # -- preparation --------------------------------------------------------

    def prepare(self, ccd):
        """The `PreparedFrame` of a frame read by `astro_aeqa.io`."""
        data = ccd.data
        if data.ndim != 2:
            msg = f"image must be 2-D, got shape {data.shape}"
            raise InputDataError(msg)
        check_patch_fits(data.shape, self.patch_size)
        saturation = _saturation_level(ccd.meta)
        shape = data.shape
        finite, valid = np.empty(shape, bool), np.empty(shape, bool)
        # a plane that is all False takes no memory: a read-only broadcast view
        nothing = np.broadcast_to(np.False_, shape)
        saturated = nothing if saturation is None else np.zeros(shape, bool)
        input_mask = nothing if ccd.mask is None else np.asarray(ccd.mask, bool)
        mask = None if ccd.mask is None else input_mask

        def pixel_masks(rows):
            np.isfinite(data[rows], out=finite[rows])
            valid[rows] = valid_pixels(
                data[rows], None if mask is None else mask[rows], saturation=saturation
            )
            if saturation is not None:
                with np.errstate(invalid="ignore"):
                    np.greater_equal(data[rows], saturation, out=saturated[rows])
                saturated[rows] &= finite[rows]

        workers = self.workers()
        # bands of rows, at least one per core, of at most _BAND_PIXELS each:
        # the temporaries of the per-pixel work stay small on large frames
        bands = _row_bands(shape[0], max(workers, -(-data.size // _BAND_PIXELS)))
        with thread_pool(workers) as pool:
            _wait([pool.submit(pixel_masks, rows) for rows in bands])
            if not finite.any():
                msg = "every pixel of the image is NaN or inf: there is nothing to evaluate"
                raise InputDataError(msg)
            if finite.all():  # the usual frame: a view that takes no memory (1 byte a pixel)
                finite = np.broadcast_to(np.True_, shape)
            footprint = self.footprint(data, finite)
            if footprint is not None:
                valid &= footprint
            p = self.patch_size

            def patch_sky():
                step = self.sky_sample_step
                sample = np.where(valid[::step, ::step], data[::step, ::step], np.nan)
                return aggregate_patches(sample, p // step, statistic="median")[0]

            # (the patch sky on a worker while the frame's own sky is measured here)
            sky = None if self.camera is None else pool.submit(patch_sky)
            stats = sky_statistics(data, valid)
            exptime = exposure_time(ccd.meta)
            if sky is not None:
                # about the level and in the noise of the camera's clear sky
                # tonight: a cloud over most of the frame moves the frame's own
                _, noise, anchor = self.camera.clear_sky(sky.result(), shape, p, exptime)
                level, _ = self.camera.expected_sky(shape, p, exptime, maps=False)
                stats = SkyStatistics(level=level * anchor, noise=noise)
        return PreparedFrame(
            data=data,
            meta=ccd.meta,
            valid=valid,
            finite=finite,
            saturated=saturated,
            input_mask=input_mask,
            footprint=footprint,
            stats=stats,
            exptime=exptime,
            normalization=self.options.normalization,
        )

    def footprint(self, data, finite):
        """The illuminated footprint (None: the whole frame).

        Where the camera reference has a footprint for frames of this shape,
        its patches wholly inside or outside hold; only patches on its edge
        are measured on the frame, so a cloud cannot move the footprint.
        """
        camera = self.camera
        if camera is not None and camera.maps_apply(data.shape, self.patch_size):
            p, (ny, nx) = self.patch_size, data.shape

            def pixels(patches):  # a bool per patch, to pixels (1 byte a pixel)
                return np.repeat(np.repeat(patches, p, 0), p, 1)[:ny, :nx]

            inside = camera.coverage >= 1
            footprint = pixels(inside)
            edge = (camera.coverage > 0) & ~inside
            if edge.any():  # measured on the frame only where the reference is partial
                footprint |= pixels(edge) & detect_footprint(data, finite)
        else:
            footprint = detect_footprint(data, finite)
        return None if footprint.all() else footprint

    # -- the residual and the patch statistics ------------------------------

    @property
    def background_block(self):
        """Side of the local background's blocks: half a patch."""
        return max(1, self.patch_size // 2)

    def tile_transform(self):
        """What is done to the stack of tiles before the network sees them (or None)."""
        # With the sky term the sky offset is scored apart, so the network sees
        # tiles with their median removed and scores structure alone: the image
        # score then does not depend on where tile edges fall (< 0.2 % with the
        # overlap, against > 1 % without).
        if self.options.normalization == "minmax":
            return minmax_tiles
        return subtract_tile_median if self.sky_term else None

    def tile_tasks(self, shape, workers):
        """Tile tasks of a frame, in row-major order.

        Returns the tile side, the padded shape and, per task, its origins,
        owned regions and the number of residual rows complete once it and
        every task before it are done.
        """
        ny, nx = shape
        t = self.reconstructor.tile_side(shape, self.options.tile_size)
        padded = (max(ny, t), max(nx, t))
        overlap = min(self.options.overlap, (t - 1) // 2)
        origins = tile_origins(padded, t, overlap)
        regions = owned_regions(origins, padded, t)
        chunk = self.reconstructor.tiles_per_batch(t, workers)
        tasks = []
        for y in np.unique(origins[:, 0]):
            row = np.flatnonzero(origins[:, 0] == y)
            for start in range(0, len(row), chunk):
                take = row[start : start + chunk]
                rows_done = regions[row[0], 1] if start + chunk >= len(row) else None
                tasks.append((origins[take], regions[take], rows_done))
        return t, padded, tasks

    def parts(
        self, prepared, *, with_psf=True, progress_bar=False, local_background=None, trails=False
    ):
        """Per patch: the parts of the score (a dict).

        ``mae`` (star-aware) and ``raw_mae`` (not) are the aggregated
        residual, ``sky`` and ``raw_sky`` the median of the normalised patch
        (None without the sky term), ``psf`` the PSF term or None, with
        ``n_valid``, the ``residual``, the bright-star pixels
        ``star_pixels``, the ``stars`` found and their ``star_counts`` per
        patch (or None), and the ``trails`` (None unless ``trails``).

        The frame is scored as independent tasks on one thread per core:
        the network on a row of tiles at a time (one torch thread each,
        which uses a CPU better than torch's own threads on these small
        convolutions), the star finding, and the patch statistics of each
        band of patch rows as soon as the tiles above it are done.
        With ``local_background`` (the default when there is a camera
        reference) the network sees the frame less its local background
        (``astro_aeqa._preprocessing.subtract_local_background``), made by
        the first task while the stars are found on another.
        """
        with_psf = with_psf and self.psf_term and self.reference_fwhm is not None
        if local_background is None:  # as the camera reference was calibrated
            local_background = self.camera is not None and self.sky_term
        ny, nx = shape = prepared.shape
        p = self.patch_size
        workers = self.workers()
        t, padded, tasks = self.tile_tasks(shape, workers)

        def network_input():
            """What the network sees, as a function of a window's rows and
            columns (made a row of tiles at a time), with the local
            background's edges (or None)."""
            background = edges = None
            if self.sky_term:  # made here, before the bands' threads want it
                prepared.x_sample(self.sky_sample_step)
            if local_background:
                noise = 1.0 / _ASINH_SOFTENING if self.options.normalization == "noise" else None
                block = self.background_block
                step = LocalBackground.sample_step(block)
                background = LocalBackground(
                    prepared.x_sample(step),
                    prepared.valid[::step, ::step],
                    block,
                    noise=noise,
                    shape=shape,
                )
                edges = background.edges
                if edges is not None and not edges.any():
                    edges = None

            def window(rows, cols):
                x = prepared.x_window(rows, cols)
                if background is None:
                    return x
                return background.window(x, prepared.valid[rows, cols], rows, cols)

            if padded != shape:  # shorter than a tile: reflect to one tile, crop after
                x = window(slice(None), slice(None))
                x = np.pad(x, ((0, padded[0] - ny), (0, padded[1] - nx)), mode="reflect")
                return (lambda rows, cols: x[rows, cols]), edges
            return window, edges

        residual = np.empty(padded, dtype=np.float32)
        # on a large frame the heap's free blocks go back to the system after
        # each row of tiles (2-3 bytes a pixel at 8192x8192); on smaller ones
        # the ~2 % of time is not worth it
        trim_rows = prepared.data.size > _TRIM_ROWS_PIXELS
        bar = _progress_bar(
            total=sum(len(o) for o, _, _ in tasks), enabled=progress_bar, desc="tiles", unit="tile"
        )
        rec = self.reconstructor

        def residuals(inputs, origins, regions, transform, model):
            # the tiles of one row: their window of the input, in its coordinates
            y0, x0 = int(origins[:, 0].min()), int(origins[:, 1].min())
            x1 = int(origins[:, 1].max()) + t
            rows, cols = slice(y0, y0 + t), slice(x0, x1)
            rec.residuals(
                inputs.result()[0](rows, cols),
                origins - np.array([y0, x0]),
                regions - np.array([y0, y0, x0, x0]),
                t,
                residual[rows, cols],
                transform=transform,
                model=model,
            )

        with thread_pool(workers) as pool, rec.threads(workers):
            # the network's input first, so that the star finding and the
            # trail search run beside it rather than after it; the network's
            # tasks wait for it
            inputs = pool.submit(network_input)
            stars = None
            if self.star_aware or with_psf or local_background:
                stars = pool.submit(
                    self.star_parts, prepared, with_psf=with_psf, count=local_background
                )
            found_trails = pool.submit(_find_trails, prepared) if trails else None
            model = rec.prepare()  # compiled here, not by two tasks at once
            transform = self.tile_transform()
            pending = [
                (
                    pool.submit(residuals, inputs, origins, regions, transform, model),
                    len(origins),
                    rows_done,
                )
                for origins, regions, rows_done in tasks
            ]
            bands, start = [], 0
            for future, n_tiles, rows_done in pending:
                future.result()
                if trim_rows:  # what the row's tasks freed, before the next ones
                    release_free_memory()
                bar.update(n_tiles)
                if rows_done is None:
                    continue
                stop = ny if rows_done >= ny else rows_done // p * p
                if stop > start:
                    edges = inputs.result()[1]
                    bands.append(
                        pool.submit(self.band, prepared, residual, start, stop, stars, edges)
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

    def star_parts(self, prepared, *, with_psf, count=False):
        """The PSF term per patch (or None), the bright-star pixels (or None) and the sources
        (down to _COUNT_MIN_SNR with ``count``, for the transparency term)."""
        found = find_stars(
            prepared.data,
            prepared.valid,
            stats=prepared.stats,
            fwhm=self.reference_fwhm,
            min_peak=_COUNT_MIN_SNR if count else _STAR_MIN_SNR,
        )
        psf = stars = None
        shape = prepared.shape
        if with_psf:
            psf = psf_shape_map(
                found, shape, self.patch_size, self.reference_fwhm, min_snr=_STAR_MIN_SNR
            )
        if self.star_aware:
            stars, _ = bright_star_mask(
                prepared.data, fwhm=self.reference_fwhm, found=found, min_snr=_STAR_MIN_SNR
            )
        return psf, stars, found

    def band(self, prepared, residual, start, stop, stars, edges=None):
        """The patch rows in ``start:stop``: MAE, sky median (or None), both before
        star-aware scoring, and the valid counts.

        ``stars`` is the future of `star_parts` (bands are scored while the
        stars are still being found) or the bright-star pixels themselves.
        ``edges`` are the blocks of half a patch where the local background
        jumps (``astro_aeqa._preprocessing.subtract_local_background``): their
        pixels are left out of the MAE of a patch that has others.
        """
        nx = prepared.shape[1]
        band = residual[start:stop, :nx]
        valid = prepared.valid[start:stop]
        band[~valid] = np.nan
        mae, n_valid = self.aggregate_patches(band, valid)
        sky = self.patch_sky(prepared, start, stop, valid) if self.sky_term else None
        usable = valid
        if edges is not None:
            half = self.background_block
            on_edge = edges[np.arange(start, stop) // half][:, np.arange(nx) // half]
            usable = valid & ~on_edge
            touched = patch_any(on_edge, self.patch_size)
            off_edge, _ = self.aggregate_patches(band, usable, patches=touched)
            mae = np.where(np.isfinite(off_edge), off_edge, mae)
        if not self.star_aware:
            return mae, sky, mae, sky, n_valid
        # Only patches that hold star pixels change; a patch that is all
        # bright star keeps its own score. A star's wings also lift its
        # patch's median, hence the sky term is taken without them too.
        star_pixels = (stars.result()[1] if hasattr(stars, "result") else stars)[start:stop]
        starless = valid & ~star_pixels
        touched = patch_any(star_pixels, self.patch_size)
        kept, _ = self.aggregate_patches(band, usable & ~star_pixels, patches=touched)
        kept_mae = np.where(np.isfinite(kept), kept, mae)
        kept_sky = sky
        if self.sky_term:
            starless_sky = self.patch_sky(prepared, start, stop, starless, patches=touched)
            kept_sky = np.where(np.isfinite(starless_sky), starless_sky, sky)
        return kept_mae, kept_sky, mae, sky, n_valid

    def aggregate_patches(self, residual, weights, patches=None):
        """The configured aggregate of the residual per patch, and the weights' sums."""
        return aggregate_patches(
            residual, self.patch_size, weights=weights, statistic=self.aggregate, patches=patches
        )

    @property
    def sky_sample_step(self):
        """The patch sky is the median of every other pixel in each axis: 4x
        cheaper than the full median and as good a sky estimate at these
        patch sizes (every pixel for odd patches or under 8 pixels)."""
        p = self.patch_size
        return 2 if p % 2 == 0 and p >= 8 else 1

    def patch_sky(self, prepared, start, stop, valid, patches=None):
        """The median of the normalised frame per patch of the rows ``start:stop``
        (``valid``: the pixels of those rows to take)."""
        p, step = self.patch_size, self.sky_sample_step
        x = prepared.x_sample(step)[start // step : -(-stop // step)]
        sky = np.where(valid[::step, ::step], x, np.nan)
        medians, _ = aggregate_patches(sky, p // step, statistic="median", patches=patches)
        return medians[: -(-(stop - start) // p), : -(-prepared.shape[1] // p)]

    # -- the terms ----------------------------------------------------------

    def mae_scores(self, parts, info, *, shift=(0, 0)):
        """Per patch: the MAE score with its sky term, the same before star-aware
        scoring (or None), and the sky term itself."""
        sky = self.sky_term_of(parts["sky"], info, shift=shift)
        raw = None
        if self.star_aware:
            raw = parts["raw_mae"] + self.sky_term_of(parts["raw_sky"], info, shift=shift)
        return parts["mae"] + sky, raw, sky

    def sky_term_of(self, sky, info, *, shift=(0, 0)):
        """The sky term: the patch sky against the camera's clean sky, or against the frame's."""
        if sky is None:
            return 0.0
        if self.camera is None:
            return np.abs(sky)
        stats = info.stats
        patch_sky = _patch_sky_level(sky, stats)
        clear, noise, _ = self.camera.clear_sky(
            patch_sky, info.shape, self.patch_size, info.exptime, shift=shift
        )
        # the frame-relative term's form, in the camera's clear sky and
        # noise; a change of the sky under _SKY_DEAD_ZONE does not count
        excess = np.abs(patch_sky - clear) - _SKY_DEAD_ZONE * np.abs(clear)
        return np.arcsinh(np.maximum(excess, 0.0) / (_ASINH_SOFTENING * noise))

    def combine(self, mae, psf):
        """The patch score: the MAE, or the PSF term on the MAE's clean scale if larger."""
        cal = self.calibration.psf_scale
        if psf is None or cal is None or not self.psf_term:
            return mae
        on_mae_scale = (
            cal["mae_median"] + cal["mae_mad"] * (psf - cal["psf_median"]) / cal["psf_mad"]
        )
        return np.where(np.isfinite(on_mae_scale), np.fmax(mae, on_mae_scale), mae)

    def transparency(self, parts, info, *, shift=(0, 0)):
        """Per patch, the deficit of sources against the camera reference (sigmas), or None."""
        if self.camera is None or parts.get("star_counts") is None:
            return None
        if self.camera.star_density is None:
            return None
        return self.camera.transparency_deficit(
            parts["star_counts"], parts["coverage"], info.exptime, shift=shift
        )

    def default_threshold(self):
        """The calibrated threshold of the default ``fpr``, or None (too few references)."""
        fpr = self.options.fpr
        if not self.calibration.supports(fpr):
            return None  # said when masking
        threshold = self.calibration.threshold(fpr, default_fpr=fpr)
        return threshold if np.isfinite(threshold) else None

    def above_default_threshold(self, scores):
        """Where ``scores`` reach the threshold of the default ``fpr`` (all False uncalibrated)."""
        threshold = self.default_threshold()
        if threshold is None:
            return np.zeros(np.shape(scores), bool)
        with np.errstate(invalid="ignore"):
            return np.asarray(scores) > threshold

    def with_transparency(self, scores, deficit):
        """``scores``, raised where sources are missing.

        A deficit of ``z`` sigmas scores ``z / z_fpr`` times the threshold
        of the default ``fpr``, where ``z_fpr`` is the deficit that a clean
        sky shows with probability ``fpr``: both terms then mask at the
        same rate.
        """
        threshold = self.default_threshold()
        if threshold is None:
            return scores
        fpr = self.options.fpr
        equivalent = threshold * deficit / ndtri(1.0 - fpr)
        raise_it = np.isfinite(deficit) & (deficit > 0)
        return np.where(raise_it, np.fmax(scores, equivalent), scores)

    # -- a frame's scores ---------------------------------------------------

    def score(self, prepared, *, progress_bar=False, trails=False):
        """The `FrameScores` of a prepared frame."""
        parts = self.parts(
            prepared,
            with_psf=self.calibration.psf_scale is not None,
            progress_bar=progress_bar,
            trails=trails,
        )
        mae, raw, sky = self.mae_scores(parts, prepared.info)
        raw_scores = None if raw is None else self.combine(raw, parts["psf"])
        scores = self.combine(mae, parts["psf"])
        deficit = None
        if self.camera is not None:  # the transparency term needs the camera's star density
            coverage = _coverage(prepared.footprint, prepared.shape, self.patch_size)
            # Patches whose sky alone is masked (a lit or dark cloud) are left
            # out of their neighbours' star counts: the stars a cloud hides do
            # not make the clear sky beside it look dimmed. Patches masked for
            # their structure (doubled or defocused stars) stay in: their
            # missing sources are the defect's, and raise its neighbours.
            parts["coverage"] = np.where(self.above_default_threshold(sky), 0.0, coverage)
            deficit = self.transparency(parts, prepared.info)
        if deficit is not None:
            scores = self.with_transparency(scores, deficit)
        return FrameScores(
            scores=scores,
            n_valid=parts["n_valid"],
            residual=parts["residual"],
            raw_scores=raw_scores,
            transparency=deficit,
            trails=parts["trails"],
        )

    def threshold(self, patch_scores, *, threshold, fpr):
        """The threshold of a frame's patch scores, the fpr it was calibrated for and how it was chosen."""
        if threshold is not None and fpr is not None:
            msg = "give either threshold or fpr, not both"
            raise ValueError(msg)
        if threshold is not None:
            threshold = float(threshold)
            if not np.isfinite(threshold):
                msg = f"threshold must be a finite number, got {threshold}"
                raise ValueError(msg)
            return threshold, None, "explicit"
        fpr = self.options.fpr if fpr is None else check_fpr(fpr)
        if not self.calibration.calibrated:
            return robust_threshold(patch_scores), None, "robust"
        calibrated = self.calibration.threshold(fpr, default_fpr=self.options.fpr)
        if self.camera is None and _fraction_above(patch_scores, calibrated) > 0.5:
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
                stacklevel=5,  # from evaluate() through mask()
            )
            return own, None, "self"
        return calibrated, fpr, "fpr"

    def mask(self, prepared, scored, *, threshold, fpr, morphology):
        """The `FrameMask` of a frame's scores: threshold, morphology, pixels, trails."""
        patch_scores = scored.scores
        threshold, used_fpr, method = self.threshold(patch_scores, threshold=threshold, fpr=fpr)
        with np.errstate(invalid="ignore"):
            raw_mask = patch_scores > threshold
        patch_mask = clean_patch_mask(raw_mask, opening=morphology[0], closing=morphology[1])
        shape = scored.residual.shape
        pixel_mask = patch_mask_to_pixel_mask(patch_mask, self.patch_size, shape)
        footprint = prepared.footprint
        if footprint is not None:
            pixel_mask &= footprint
        trails, trail_pixels = scored.trails, None
        if trails is not None and len(trails):
            trail_pixels = trail_mask(shape, trails)
            if footprint is not None:
                trail_pixels &= footprint
            pixel_mask |= trail_pixels
        if self.camera is None and method == "fpr":
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
                    stacklevel=4,
                )
        star_kept = np.zeros(shape, bool)
        if scored.raw_scores is not None:
            with np.errstate(invalid="ignore"):
                kept = (scored.raw_scores > threshold) & ~patch_mask
            star_kept = patch_mask_to_pixel_mask(kept, self.patch_size, shape)
        return FrameMask(
            threshold, used_fpr, method, patch_mask, pixel_mask, trail_pixels, star_kept
        )

    # -- calibration --------------------------------------------------------

    def grid_shifts(self, n_frames, first):
        """Patch grid origins to sample each clean frame on: half-shifted grids too when few."""
        shape = first.shape
        n_patches = n_frames * int(np.count_nonzero(_coverage(first.valid, shape, self.patch_size)))
        need = needed_references(self.options.fpr)
        half = self.patch_size // 2
        shifts = [(0, 0)]
        if n_patches < 4 * need and half > 0:
            shifts += [(half, 0), (0, half), (half, half)]
        return shifts

    def frame_records(self, frames, first, read, progress_bar=False):
        """Calibration records of clean frames, scored one at a time (a set can be large).

        ``first`` holds the frames already prepared (they are freed once
        used), ``read`` reads the others.
        """
        shifts = self.grid_shifts(len(frames), first[0])
        records = []
        for index, frame in enumerate(frames):
            if index < len(first):
                prepared, first[index] = first[index], None
            else:
                prepared = self.prepare(read(frame))
            parts = self.parts(prepared, progress_bar=progress_bar, local_background=self.sky_term)
            records += [self.record(prepared, parts, shift) for shift in shifts]
        return records

    def record(self, prepared, parts, shift=(0, 0), inside=None):
        """What calibration keeps of a scored clean frame: patch-level parts, on a grid moved by ``shift``."""
        info = prepared.info
        camera = None
        if shift != (0, 0):
            parts = self.shifted_parts(prepared, parts, shift)
        else:
            parts = {k: v for k, v in parts.items() if k not in ("residual", "star_pixels")}
            coverage = _coverage(prepared.footprint, prepared.shape, self.patch_size)
            parts["coverage"] = coverage
            if parts["sky"] is not None:
                camera = {
                    "level": prepared.stats.level,
                    "noise": prepared.stats.noise,
                    "exptime": prepared.exptime,
                    "patch_sky": _patch_sky_level(parts["sky"], prepared.stats),
                    "coverage": coverage,
                    "shape": prepared.shape,
                    "star_counts": parts["star_counts"],
                }
        return {"parts": parts, "info": info, "shift": shift, "inside": inside, "camera": camera}

    def shifted_parts(self, prepared, parts, shift):
        """The patch-level parts of a frame on a patch grid moved by ``shift`` (same residual)."""
        dy, dx = shift
        moved = replace(prepared, data=prepared.data[dy:, dx:], valid=prepared.valid[dy:, dx:])
        residual = parts["residual"][dy:, dx:].copy()
        star_pixels = None if parts["star_pixels"] is None else parts["star_pixels"][dy:, dx:]
        mae, sky, raw_mae, raw_sky, n_valid = self.band(
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
                    self.reference_fwhm,
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
                None if prepared.footprint is None else prepared.footprint[dy:, dx:],
                residual.shape,
                self.patch_size,
            ),
        }

    def held_out_records(self, frames, val_patches, crop_size, *, progress_bar):
        """Calibration records of the patches of training frames that lie inside held-out tiles."""
        # Patches that lie entirely inside a held-out training tile were never
        # seen in training: their scores calibrate the thresholds. The camera
        # reference is learnt from the whole of these frames (the sky is not
        # what the network learns).
        held_out = {}
        for index, y0, x0 in val_patches:
            held_out.setdefault(index, []).append((y0, x0))
        records = []
        p, t = self.patch_size, crop_size
        for index, origins in held_out.items():
            parts = self.parts(
                frames[index], progress_bar=progress_bar, local_background=self.sky_term
            )
            inside = np.zeros(parts["mae"].shape, bool)
            for y0, x0 in origins:
                iy0, ix0 = -(-y0 // p), -(-x0 // p)
                inside[iy0 : (y0 + t) // p, ix0 : (x0 + t) // p] = True
            records.append(self.record(frames[index], parts, inside=inside))
        return records

    def calibrate(self, records):
        """The `~astro_aeqa.calibration.Calibration` of clean frames' records.

        The camera reference first (the terms are taken against it), then
        the PSF-term scale, the reference scores and, with the transparency
        term, the reference scores with it.
        """
        cameras = [r["camera"] for r in records if r["camera"] is not None]
        camera = CameraReference.from_frames(cameras, self.patch_size) if cameras else None
        scorer = self.with_calibration(Calibration(camera=camera))
        parts, deficits = [], []
        for record in records:
            mae, _, _ = scorer.mae_scores(record["parts"], record["info"], shift=record["shift"])
            psf = record["parts"]["psf"]
            deficit = scorer.transparency(record["parts"], record["info"], shift=record["shift"])
            inside = record["inside"]
            if inside is not None:
                mae, psf = mae[inside], None if psf is None else psf[inside]
                deficit = None if deficit is None else deficit[inside]
            parts.append((mae, psf))
            deficits.append(deficit)
        return scorer.calibrate_parts(parts, deficits=deficits)

    def calibrate_parts(self, parts, deficits=None):
        """The PSF-term scale, then the reference scores, from clean patches' ``(mae, psf)`` parts."""
        mae = np.concatenate([m.ravel() for m, _ in parts]) if parts else np.array([])
        finite = np.isfinite(mae)
        psf_scale = None
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
                psf_scale = scale
            else:
                log.warning(
                    "psf_term: too few stars on the clean frames (%d patches near one) to "
                    "calibrate the PSF term; it is not used",
                    psf.size,
                )
        scorer = self.with_calibration(Calibration(camera=self.camera, psf_scale=psf_scale))
        scores = [scorer.combine(m.ravel(), None if q is None else q.ravel()) for m, q in parts]
        scores = np.concatenate(scores) if scores else np.array([])
        fpr = self.options.fpr
        calibration = Calibration.from_scores(
            scores[np.isfinite(scores)], fpr=fpr, camera=self.camera, psf_scale=psf_scale
        )
        if deficits and all(d is not None for d in deficits) and calibration.calibrated:
            # the transparency term maps onto the scores just calibrated
            deficit = np.concatenate([d.ravel() for d in deficits])
            scores = scorer.with_calibration(calibration).with_transparency(scores, deficit)
            calibration = Calibration.from_scores(
                scores[np.isfinite(scores)], fpr=fpr, camera=self.camera, psf_scale=psf_scale
            )
        return calibration


# -- helpers -----------------------------------------------------------------


def check_options(
    multiple, *, patch_size, tile_size, crop_size, overlap, normalization, aggregate, sky_term
):
    """
    The evaluator's sizes and scoring choices, checked, with their defaults.

    ``multiple`` is the tile side unit of the network. ``patch_size='auto'``
    gives None (set by ``fit`` from the references' FWHM).
    """
    if isinstance(patch_size, str) and patch_size == "auto":
        patch_size = None  # set by fit from the references' FWHM
        sizing = _AUTO_PATCH_MAX
    else:
        patch_size = sizing = check_int(patch_size, "patch_size", minimum=2)
    tile_size = check_tile(
        max(512, 2 * sizing) if tile_size is None else tile_size, "tile_size", multiple
    )
    crop_size = check_tile(
        max(128, 2 * sizing) if crop_size is None else crop_size, "crop_size", multiple
    )
    # The image score changes by < 0.3 % from 32 to 48 pixels of margin
    # (benchmarks/evaluator_quality.py); narrower margins keep tile-edge pixels.
    given_overlap = overlap
    overlap = check_int(
        min(32, tile_size // 4) if overlap is None else overlap, "overlap", minimum=0
    )
    if 2 * overlap >= tile_size:
        msg = f"overlap must be less than half of tile_size ({tile_size}), got {given_overlap}"
        raise ValueError(msg)
    if normalization not in NORMALIZATIONS:
        msg = f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}"
        raise ValueError(msg)
    if aggregate not in AGGREGATES:
        msg = f"aggregate must be one of {AGGREGATES}, got {aggregate!r}"
        raise ValueError(msg)
    if sky_term is None:
        sky_term = normalization == "noise"
    if sky_term and normalization != "noise":
        msg = "sky_term needs normalization='noise': min-max scaled tiles have no common sky level"
        raise ValueError(msg)
    return {
        "patch_size": patch_size,
        "tile_size": tile_size,
        "crop_size": crop_size,
        "overlap": overlap,
        "normalization": normalization,
        "aggregate": aggregate,
        "sky_term": bool(sky_term),
    }


def check_tile(value, name, unit):
    """A tile or crop side, checked to be a multiple of the network's ``unit``."""
    value = check_int(value, name, minimum=unit)
    if value % unit:
        msg = f"{name} must be a multiple of {unit} for this model, got {value}"
        raise ValueError(msg)
    return value


def check_patch_fits(shape, patch_size):
    """Raise `~astro_aeqa.exceptions.InputDataError` if a frame is smaller than one patch."""
    ny, nx = shape
    if patch_size is not None and (ny < patch_size or nx < patch_size):
        msg = (
            f"image of {ny}x{nx} pixels is smaller than one patch of "
            f"{patch_size}x{patch_size}; use a smaller patch_size"
        )
        raise InputDataError(msg)


def check_fpr(fpr):
    """``fpr`` as a float, checked to lie strictly between 0 and 1."""
    fpr = float(fpr)
    if not 0.0 < fpr < 1.0:
        msg = f"fpr must lie strictly between 0 and 1, got {fpr}"
        raise ValueError(msg)
    return fpr


def reference_fwhm(frames, fwhm, patch_size):
    """
    The reference PSF FWHM of prepared frames, and the patch size.

    The FWHM is the median over the first five frames that have a star to
    measure (``fwhm``, the former value, when none has); ``patch_size=None``
    ('auto') is chosen from it. Every frame must hold a patch.
    """
    fwhms = [frame_fwhm(frame) for frame in frames[:5]]
    fwhms = [f for f in fwhms if f is not None]
    if fwhms:
        fwhm = float(np.median(fwhms))
    if patch_size is None:
        if fwhm is None:
            msg = (
                "patch_size='auto' needs isolated bright stars in the reference frames to "
                "measure the PSF FWHM on, and none was found; give an explicit patch_size"
            )
            raise InputDataError(msg)
        patch_size = auto_patch_size(fwhm, maximum=_AUTO_PATCH_MAX)
        log.info(
            "patch_size='auto': %d pixels for a reference FWHM of %.2f pixels", patch_size, fwhm
        )
    for frame in frames:
        check_patch_fits(frame.shape, patch_size)
    return fwhm, patch_size


def frame_fwhm(prepared):
    """The PSF FWHM of a prepared frame, or None without a star to measure."""
    try:
        return measure_fwhm(prepared.data, prepared.valid, stats=prepared.stats)
    except (InputDataError, ValueError):
        return None


def _find_trails(prepared):
    """Trails in a prepared frame, searched on its S/N, ``(data - level) / noise``."""
    stats = prepared.stats
    # made where it is used, never whole on a large frame (4 bytes a pixel)
    return find_trails(ScaledSNR(prepared.data, prepared.valid, stats.level, stats.noise))


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


def _fraction_above(scores, threshold):
    """Fraction of the finite scores above ``threshold``."""
    finite = scores[np.isfinite(scores)]
    return float(np.mean(finite > threshold)) if finite.size else 0.0


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


def _saturation_level(meta):
    for key in ("SATURATE", "SATLEVEL", "SATURATION"):
        value = meta.get(key) if meta is not None else None
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None
