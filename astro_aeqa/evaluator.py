# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The evaluator: learn "good" from reference frames, score new frames patch by
patch, and mask the patches that the autoencoder cannot reconstruct.

`AEQualityEvaluator` is a facade: the network runs in
`astro_aeqa.nn.Reconstructor`, the scores are made by the pipeline of
``astro_aeqa._scoring``, and the calibration is an
`astro_aeqa.calibration.Calibration`.
"""

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, NDData

from . import _model_file
from . import io as aeqa_io
from ._model_file import default_model_path
from ._result import QualityResult
from ._scoring import Scorer, ScoringOptions, check_fpr, check_options, reference_fwhm
from .calibration import Calibration
from .config import conf
from .exceptions import InputDataError
from .nn import Reconstructor, build_model, load_model, save_model, train_autoencoder, weights_sha
from .utils import file_sha256, forwarded_property, release_free_memory, write_hdulist_atomic

__all__ = ["AEQualityEvaluator", "QualityResult", "aeqa_mask", "default_model_path"]


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
        reference frames (``astro_aeqa._stars.auto_patch_size``).
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
        FWHM; see ``astro_aeqa._stars.bright_star_mask``), and take its sky
        term without their wings, so that a patch whose high score a bright
        star explains is not masked. Trails, smeared, doubled and defocused
        stars are not such stars and still count. Default `True` (the
        quality benchmark).
    psf_term : bool, optional
        Also score the shape of the stars around each patch
        (``astro_aeqa._stars.psf_shape_map``: how much broader or more
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
        natively (``native_bfloat16``), else float32. Training
        is always float32 (mixed precision on CUDA).
    compile : bool, optional
        Run inference through `torch.compile`. It fuses the normalisation
        and activation layers: about 1.5-2x faster on a CPU once compiled,
        but the first frame waits tens of seconds for the compilation, so it
        pays for batches of frames, not for one. Default `False`.

    Attributes
    ----------
    calibration_ : `~astro_aeqa.calibration.Calibration`
        The calibration on clean frames (set by `fit`, `calibrate`, `load`).
    reconstructor_ : `~astro_aeqa.nn.Reconstructor`
        Runs the network: device, precision, compilation, batches of tiles.

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
        self.model_name, config = _model_file.model_config(model)
        for name, value in check_options(
            config.multiple,
            patch_size=patch_size,
            tile_size=tile_size,
            crop_size=crop_size,
            overlap=overlap,
            normalization=normalization,
            aggregate=aggregate,
            sky_term=sky_term,
        ).items():
            setattr(self, name, value)
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

    # the network and how it runs (nn.Reconstructor), and the calibration
    model_ = forwarded_property("reconstructor_", "model", "The network.")
    device = forwarded_property("reconstructor_", "device", "Its `torch.device`.", False)
    batch_size = forwarded_property("reconstructor_", "batch_size", "Tiles per forward pass.")
    precision = forwarded_property("reconstructor_", "precision", "Forward-pass arithmetic.")
    compile = forwarded_property("reconstructor_", "compile", "Whether `torch.compile` runs.")
    reference_scores_ = forwarded_property("calibration_", "reference_scores", "Clean scores.")
    n_reference_ = forwarded_property("calibration_", "n_reference", "Their number.", False)
    camera_ = forwarded_property("calibration_", "camera", "The camera reference.", False)
    psf_calibration_ = forwarded_property("calibration_", "psf_scale", "The PSF term's scale.")

    def _scorer(self, calibration=None):
        """The scoring pipeline of the current options (and calibration)."""
        options = ScoringOptions.of(self)
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
        history = train_autoencoder(
            self.model_,
            [frame.x for frame in frames],
            weights=[frame.valid.astype(np.float32) for frame in frames],
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
        self.training_ = _model_file.training_summary(
            self, history, frames, learning_rate, batch_size
        )
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
        # the FWHM sizes auto patches and tells star-aware scoring and the PSF
        # term what a well-modelled star looks like
        self.reference_fwhm_, self.patch_size = reference_fwhm(
            frames, self.reference_fwhm_, self.patch_size
        )

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
        records = scorer.frame_records(
            frames, first, lambda frame: aeqa_io.read_image(frame, hdu=hdu), progress_bar
        )
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
        release_free_memory()  # the heap's free blocks back to the system (utils._memory)
        scored = scorer.score(prepared, progress_bar=progress_bar, trails=self.trails)
        release_free_memory()
        masks = scorer.mask(
            prepared, scored, threshold=threshold, fpr=fpr, morphology=self.morphology
        )
        return QualityResult.of_frame(
            prepared, scored, masks, self.calibration_, wcs=ccd.wcs, patch_size=self.patch_size
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

    def write_masked(
        self, image, path, *, threshold=None, fpr=None, hdu=None, overwrite=False, compress=False
    ):
        """
        Evaluate ``image`` and write the FITS layout of `astro_aeqa.io`:
        the data unchanged, ``MASK``, ``AEQA_SCORE`` and ``AEQA_FLAGS``.

        Parameters
        ----------
        image : str, `~pathlib.Path`, `~astropy.nddata.CCDData`, HDU or array
            The frame, as `evaluate` takes it.
        path : str or `~pathlib.Path`
            The output file; never the input file. It is written atomically.
        threshold, fpr, hdu : optional
            As in `evaluate`.
        overwrite : bool, optional
            Replace an existing ``path``. Default `False`.
        compress : bool, optional
            Write ``MASK`` and ``AEQA_FLAGS`` tile-compressed (lossless; see
            `astro_aeqa.io.write_aeqa_fits`). Default `False`.

        Returns
        -------
        result : `QualityResult`
        """
        frame = self._read_for_output(image, path, hdu=hdu, overwrite=overwrite)
        result = self._evaluate_ccd(frame.ccd, threshold=threshold, fpr=fpr)
        hdulist = self._output_hdulist(frame, result, image, compress=compress)
        self._write_output(hdulist, path, overwrite=overwrite)
        return result

    # The steps of write_masked. A batch writes one output on a second thread
    # while it scores the next frame: only the write of the finished HDUList
    # goes there, as reading and building set warning filters, which are
    # process-wide and not thread-safe.

    def _read_for_output(self, image, path, *, hdu, overwrite):
        """Check the output path, then read the input once (`astro_aeqa.io.Frame`)."""
        path = Path(path)
        aeqa_io.check_output_path(path, inputs=[image])  # never replace the input
        if path.exists() and not overwrite:
            msg = f"{path}: file exists; pass overwrite=True to replace it"
            raise FileExistsError(msg)
        self._check_fitted()
        return aeqa_io.read_frame(image, hdu=hdu)  # read once: pixels, original array, header

    def _output_hdulist(self, frame, result, image, *, compress=False):
        """The output of ``result`` for a frame read by `_read_for_output`."""
        return aeqa_io._result_hdulist(
            frame,
            result,
            source=image,
            model=(self.model_name, self.model_sha),
            workers=min(2, self.reconstructor_.n_threads()),
            compress=compress,
        )

    @staticmethod
    def _write_output(hdulist, path, *, overwrite):
        """Write an output list atomically; sets no warning filter (thread-safe)."""
        write_hdulist_atomic(hdulist, path, overwrite=overwrite)
        aeqa_io.log.info("wrote %s", path)  # as write_aeqa_fits logs it

    # -- files --------------------------------------------------------------

    def save(self, path, *, overwrite=False):
        """
        Save the network, its configuration and its calibration to one
        ``.safetensors`` file (no pickle).
        """
        if not self.is_fitted:
            msg = "the evaluator is untrained: fit it before saving"
            raise RuntimeError(msg)
        path = save_model(path, self.model_, _model_file.metadata(self), overwrite=overwrite)
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
        options = _model_file.options(meta, path, patch_size=patch_size, **kwargs)
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
