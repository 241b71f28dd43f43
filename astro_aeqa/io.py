# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Reading images and writing the AEQA FITS products.

This is the only module that knows FITS extension and keyword names.

* ``read_image`` is the one input parser: a FITS path, an HDU, an HDUList, a
  `~astropy.nddata.CCDData`, an `~astropy.nddata.NDData`, a numpy array or an
  ``(array, WCS)`` tuple all become a new `~astropy.nddata.CCDData` with
  float32 data.
* `~astro_aeqa.io.write_aeqa_fits` writes the output layout (atomically)::

      PRIMARY     the data, unchanged; WCS; AEQA* keywords; HISTORY
      MASK        uint8, the input mask OR the AEQA mask (CCDData convention)
      UNCERT      the uncertainty, if any (CCDData convention)
      AEQA_SCORE  float32 patch score map, with the WCS of the patch grid
      AEQA_FLAGS  bit plane (bits of `astro_aeqa.flags.AEQAFlags`), uint8
      AEQA_TRAILS the trails found (a binary table), when there are any

  `~astropy.nddata.CCDData.read` still reads such a file (it ignores the
  extra extensions), and `read_aeqa_fits` reads all of it back.
"""

import copy
import logging
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.nddata import (
    CCDData,
    InverseVariance,
    NDData,
    StdDevUncertainty,
    UnknownUncertainty,
    VarianceUncertainty,
)
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning

from ._masking import combine_masks, negated
from .exceptions import AEQAWarning, InputDataError, OutputPathError
from .flags import flag_header_cards
from .utils import thread_pool, write_hdulist_atomic

__all__ = ["read_aeqa_fits", "write_aeqa_fits", "AEQAProducts"]

log = logging.getLogger(__name__)

MASK_EXTNAME = "MASK"
UNCERT_EXTNAME = "UNCERT"
SCORE_EXTNAME = "AEQA_SCORE"
FLAGS_EXTNAME = "AEQA_FLAGS"
TRAILS_EXTNAME = "AEQA_TRAILS"

#: The AEQA header keywords: argument name -> (keyword, comment).
AEQA_KEYWORDS = {
    "version": ("AEQAVER", "astro_aeqa version"),
    "model_name": ("AEQAMOD", "AEQA model name"),
    "model_sha": ("AEQASHA", "SHA-256 of the model file (first 16 hex)"),
    "score": ("AEQASCOR", "AEQA image score (mean patch score)"),
    "threshold": ("AEQATHR", "AEQA patch score threshold of the mask"),
    "fpr": ("AEQAFPR", "AEQA target false-mask rate"),
    "patch_size": ("AEQAPSZ", "[pix] AEQA patch size"),
    "masked_fraction": ("AEQAMFR", "AEQA masked fraction of pixels"),
    "n_trails": ("AEQATRN", "AEQA number of trails (AEQA_TRAILS table)"),
}
#: The header keywords of a sky quality map (`astro_aeqa.skymap`): name -> (keyword, comment).
SKYMAP_KEYWORDS = {
    "combine": ("AEQACOMB", "how overlapping frames were combined"),
    "n_frames": ("AEQANFRM", "number of frames in the map"),
    "max_coverage": ("AEQAMAXC", "most frames on one map pixel"),
}
#: The AEQA header keywords by argument name (``KEYWORDS["score"] == "AEQASCOR"``),
#: the sky quality map's included.
KEYWORDS = {arg: keyword for arg, (keyword, _) in (AEQA_KEYWORDS | SKYMAP_KEYWORDS).items()}
_SHA_LENGTH = 16

_OUR_EXTNAMES = (MASK_EXTNAME, UNCERT_EXTNAME, SCORE_EXTNAME, FLAGS_EXTNAME, TRAILS_EXTNAME)
_UNCERTAINTIES = {
    "StdDevUncertainty": StdDevUncertainty,
    "VarianceUncertainty": VarianceUncertainty,
    "InverseVariance": InverseVariance,
}
_STRUCTURAL = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BZERO|BSCALE|BLANK|"
    r"CHECKSUM|DATASUM|ZIMAGE|ZBITPIX|ZNAXIS\d*|ZTILE\d*|ZCMPTYPE|ZNAME\d*|ZVAL\d*|"
    r"ZQUANTIZ|ZDITHER0|ZSIMPLE|ZEXTEND|ZBLOCKED|ZTENSION|ZPCOUNT|ZGCOUNT|ZHECKSUM|"
    r"ZDATASUM|THEAP|TFIELDS|TTYPE\d*|TFORM\d*)$"
)
_SIP_KEY = re.compile(r"^(A|B|AP|BP)_(ORDER|DMAX|\d+_\d+)$")
# DSS plate solutions: wcslib turns them into a TPD distortion; a header that
# holds both crashes wcslib, so they go once a WCS has been derived.
_DSS_KEY = re.compile(
    r"^(AMD[XY]\d+|PLTRA[HMS]|PLTDEC(SN|D|M|S)|PPO\d+|CNPIX\d|XPIXELSZ|YPIXELSZ|PLTSCALE)$"
)
_WCS_EXTRA = re.compile(
    r"^(CD\d_\d|PC\d_\d|CROTA\d|WCSAXES|LONPOLE|LATPOLE|RADESYS|EQUINOX|EPOCH)$"
)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class AEQAProducts:
    """
    What `read_aeqa_fits` returns.

    Attributes
    ----------
    ccd : `~astropy.nddata.CCDData`
        The image (float32), with the written mask (True = bad) and
        uncertainty.
    score_map : `~astropy.nddata.NDData`
        The patch score map, with the WCS of the patch grid (or None).
    flags : `~numpy.ndarray`
        The ``AEQA_FLAGS`` plane (uint8; uint16 in files written by
        astro_aeqa 0.3 and earlier).
    header : `~astropy.io.fits.Header`
        The primary header (with the AEQA* keywords).
    trails : `~astropy.table.Table` or None
        The ``AEQA_TRAILS`` table (one row per trail found), or None when
        the file has none.
    """

    ccd: CCDData
    score_map: NDData
    flags: np.ndarray
    header: fits.Header
    trails: object = None


def _describe(source):
    return str(source) if isinstance(source, str | Path) else f"the {type(source).__name__} input"


def _is_image_hdu(hdu):
    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU)


def _has_data(hdu):
    if not _is_image_hdu(hdu):
        return False
    naxis = hdu.header.get("NAXIS", 0)
    if isinstance(hdu, fits.CompImageHDU):
        return True
    return naxis > 0 and all(hdu.header.get(f"NAXIS{i}", 0) > 0 for i in range(1, naxis + 1))


def _hdu_shape(hdu):
    naxis = hdu.header.get("NAXIS", 0)
    return tuple(hdu.header.get(f"NAXIS{i}", 0) for i in range(naxis, 0, -1))


def _hdu_table(hdul):
    rows = []
    for i, hdu in enumerate(hdul):
        rows.append(
            f"  {i}: {hdu.name or '(no name)'} {type(hdu).__name__} shape={_hdu_shape(hdu)}"
        )
    return "\n".join(rows)


def _select_hdu(hdul, hdu, name):
    """Return the index of the image HDU to read."""
    if hdu is not None:
        if isinstance(hdu, str):
            same = [i for i, h in enumerate(hdul) if h.name.upper() == hdu.upper()]
            if len(same) > 1:
                listing = ", ".join(f"{i} ({hdu!r}, {hdul[i].ver})" for i in same)
                msg = (
                    f"{name} has {len(same)} HDUs named {hdu!r}: {listing}; pass hdu= an index "
                    f"or a (name, EXTVER) pair such as hdu=({hdu!r}, {hdul[same[0]].ver})"
                )
                raise InputDataError(msg)
        try:
            index = hdul.index_of(hdu)
            selected = hdul[index]
        except (KeyError, IndexError, TypeError) as exc:
            msg = f"{name} has no HDU {hdu!r}; it holds:\n{_hdu_table(hdul)}"
            raise InputDataError(msg) from exc
        if not _is_image_hdu(selected) or not _has_data(selected):
            msg = f"HDU {hdu!r} of {name} holds no image data; it holds:\n{_hdu_table(hdul)}"
            raise InputDataError(msg)
        return index
    if len(hdul) and _has_data(hdul[0]):
        return 0
    candidates = [
        i
        for i, h in enumerate(hdul)
        if i > 0 and _has_data(h) and h.name.upper() not in _OUR_EXTNAMES
    ]
    compressed = [i for i in candidates if isinstance(hdul[i], fits.CompImageHDU)]
    if compressed:
        return compressed[0]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        msg = f"{name} has no image HDU with data; it holds:\n{_hdu_table(hdul)}"
        raise InputDataError(msg)
    listing = "\n".join(
        f"  {i}: {hdul[i].name or '(no name)'} (EXTVER {hdul[i].ver}) shape={_hdu_shape(hdul[i])}"
        for i in candidates
    )
    msg = (
        f"{name} has {len(candidates)} image extensions with data; pass hdu= "
        f"(an index, a name or a (name, EXTVER) pair; on the command line --hdu) to choose one:\n{listing}"
    )
    raise InputDataError(msg)


def _clean_meta(header, wcs=None):
    """A copy of ``header`` without structural and WCS keywords."""
    meta = fits.Header()
    for card in header.cards:
        key = card.keyword
        if _STRUCTURAL.match(key):
            continue
        meta.append(card, end=True)
    if wcs is not None:
        keys = set(wcs.to_header(relax=True).keys())
        for key in list(meta.keys()):
            if key in keys or _SIP_KEY.match(key) or _WCS_EXTRA.match(key) or _DSS_KEY.match(key):
                meta.remove(key, ignore_missing=True, remove_all=True)
    return meta


def _wcs_from_header(header, name):
    """A 2-D WCS from a header, None if absent; a broken WCS warns and gives None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header, naxis=2, relax=True)
            if not any(ctype.strip() for ctype in wcs.wcs.ctype):
                return None
            wcs.wcs.set()
            wcs.pixel_to_world_values(0.0, 0.0)
    except Exception as exc:  # wcslib raises many kinds; all mean "unusable"
        msg = f"{name}: the WCS in the header cannot be used and is ignored ({exc})"
        warnings.warn(msg, AEQAWarning)
        return None
    return wcs


def _unit_from(value, name, *, what="BUNIT"):
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return u.Unit(value)
    except (ValueError, TypeError) as exc:
        msg = f"{name}: unit {value!r} from {what} is not understood ({exc}); using adu"
        warnings.warn(msg, AEQAWarning)
        return None


def _as_2d(data, name, where):
    data = np.asanyarray(data)
    if data.ndim > 2 and all(n == 1 for n in data.shape[:-2]):
        data = data.reshape(data.shape[-2:])
    if data.ndim != 2:
        if data.ndim > 2:
            msg = (
                f"{where} of {name} holds data of shape {data.shape}, a {data.ndim}-D cube; "
                "select one plane, e.g. read_image((cube[0], wcs)), or write it as a 2-D image"
            )
        else:
            msg = f"{where} of {name} holds data of shape {data.shape}; a 2-D image is needed"
        raise InputDataError(msg)
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        msg = f"{where} of {name} holds non-numeric data (dtype {data.dtype})"
        raise InputDataError(msg)
    if np.issubdtype(data.dtype, np.complexfloating):
        msg = (
            f"{where} of {name} holds complex data (dtype {data.dtype}); an image of real "
            "pixel values is needed: pass its real part or its modulus (np.abs)"
        )
        raise InputDataError(msg)
    return data


def _to_float32(data):
    """A new float32 array (masked arrays: the data only)."""
    return np.array(np.ma.getdata(data), dtype=np.float32, copy=True)


def _read_hdulist(hdul, hdu, name, unit):
    index = _select_hdu(hdul, hdu, name)
    selected = hdul[index]
    header = selected.header.copy()
    if index > 0 and header.get("INHERIT", False):
        merged = _clean_meta(hdul[0].header)
        merged.extend(header, update=True)
        header = merged
    where = f"HDU {index} ({selected.name or 'PRIMARY'})"
    raw = _as_2d(selected.data, name, where)
    data = _to_float32(raw)
    mask = None
    blank = header.get("BLANK")
    if blank is not None:
        if raw.dtype.kind in "iu":  # astropy left the BLANK values in
            bad = raw == blank * header.get("BSCALE", 1.0) + header.get("BZERO", 0.0)
        else:  # astropy already turned them into NaN
            bad = np.isnan(data)
        if bad.any():
            data[bad] = np.nan
            mask = bad
    wcs = _wcs_from_header(header, name)
    meta = _clean_meta(header, wcs)
    uncertainty = None
    names = [h.name.upper() for h in hdul]
    if MASK_EXTNAME in names and index != names.index(MASK_EXTNAME):
        m = np.asarray(hdul[MASK_EXTNAME].data)
        if m.shape == data.shape:
            mask = (m != 0) if mask is None else (mask | (m != 0))
    if UNCERT_EXTNAME in names and index != names.index(UNCERT_EXTNAME):
        uhdu = hdul[UNCERT_EXTNAME]
        if uhdu.data is not None and uhdu.data.shape == data.shape:
            cls = _UNCERTAINTIES.get(
                uhdu.header.get("UTYPE", "StdDevUncertainty"), UnknownUncertainty
            )
            uunit = _unit_from(uhdu.header.get("BUNIT"), name)
            uncertainty = cls(np.array(uhdu.data, copy=True), unit=uunit)
    file_unit = _unit_from(header.get("BUNIT"), name)
    return CCDData(
        data,
        unit=unit or file_unit or u.adu,
        mask=mask,
        uncertainty=uncertainty,
        wcs=wcs,
        meta=meta,
    )


def _open_and_read(path, hdu, unit, *, frame=False):
    path = Path(path)
    name = str(path)
    if not path.exists():
        msg = f"{name}: no such file"
        raise FileNotFoundError(msg)
    if path.is_dir():
        msg = f"{name} is a directory, not a FITS file"
        raise InputDataError(msg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False) as hdul:
                ccd = _read_hdulist(hdul, hdu, name, unit)
                if frame:
                    ccd = _frame_of_hdulist(ccd, hdul, hdu, name)
        except (InputDataError, FileNotFoundError):
            raise
        except (OSError, ValueError, TypeError, IndexError, EOFError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            truncated = [w for w in caught if "truncated" in str(w.message)]
            if truncated:
                reason = f"{str(truncated[0].message)} ({reason})"
            msg = f"{name} is not a readable FITS file: {reason}"
            raise InputDataError(msg) from exc
    _replay_warnings(caught, name)
    return ccd


def _replay_warnings(caught, name):
    """Astropy's header/verify noise goes to the log; ours and others are re-issued."""
    for w in caught:
        from_fits = "astropy" in str(w.filename) and "fits" in str(w.filename)
        if issubclass(w.category, VerifyWarning | FITSFixedWarning) or (
            from_fits and "truncated" not in str(w.message)
        ):
            log.info("%s: %s", name, w.message)
        elif "truncated" in str(w.message):
            msg = f"{name} is not a readable FITS file: {w.message}"
            raise InputDataError(msg)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _copy_wcs(wcs, name):
    if wcs is None:
        return None
    if isinstance(wcs, WCS):
        return wcs.deepcopy()
    low = getattr(wcs, "low_level_wcs", wcs)
    inner = getattr(low, "_wcs", None)
    if isinstance(inner, WCS) and getattr(low, "pixel_n_dim", 0) == 2 and inner.naxis == 2:
        return inner.deepcopy()
    msg = f"{name}: a {type(wcs).__name__} WCS cannot be stored in a CCDData; the WCS is dropped"
    warnings.warn(msg, AEQAWarning)
    return None


def _copy_uncertainty(unc):
    if unc is None:
        return None
    return type(unc)(np.array(unc.array, copy=True), unit=unc.unit)


def read_image(image, *, hdu=None, unit=None):
    """
    Read any supported image input into a new `~astropy.nddata.CCDData`.

    Parameters
    ----------
    image : str, `~pathlib.Path`, HDU, `~astropy.io.fits.HDUList`, `~astropy.nddata.CCDData`, \
`~astropy.nddata.NDData`, `~numpy.ndarray` or tuple
        A FITS file name; an `~astropy.io.fits.PrimaryHDU`,
        `~astropy.io.fits.ImageHDU` or `~astropy.io.fits.CompImageHDU`; an
        HDUList; a CCDData or NDData; a 2-D array (a masked array keeps its
        mask); or an ``(array, WCS)`` / ``(array, Header)`` tuple.
    hdu : int, str or tuple, optional
        For files and HDULists: the HDU to read (index, EXTNAME or
        ``(EXTNAME, EXTVER)``). By default the primary HDU if it holds data,
        else the first compressed image, else the only image extension with
        data; several candidates raise an error that lists them.
    unit : `~astropy.units.Unit` or str, optional
        Overrides the input's unit. When the input has none (no BUNIT, a
        plain array), the unit is ``adu``.

    Returns
    -------
    ccd : `~astropy.nddata.CCDData`
        A new object that shares no memory with the input: float32 data
        (integer FITS data with BZERO/BSCALE are converted exactly, up to
        float32 precision, i.e. 2**24), a bool mask (from the input's mask,
        a ``MASK`` extension written by CCDData, and pixels equal to BLANK,
        which also become NaN), the uncertainty (or a ``UNCERT`` extension),
        the WCS (None if absent; a broken WCS warns and gives None), and the
        header as ``meta`` without its structural and WCS keywords (as
        `~astropy.nddata.CCDData.read` does).

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    astro_aeqa.exceptions.InputDataError
        If a file is not readable FITS (corrupt, truncated), has no image HDU
        or several candidates, or the data are not 2-D. The message names
        the file.

    Notes
    -----
    Finite values are not checked here; the evaluator does that. Astropy's
    header verification warnings (non-standard cards) go to the log.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.io import read_image
    >>> ccd = read_image(np.arange(6, dtype=np.int16).reshape(2, 3))
    >>> ccd.data.dtype, ccd.unit, ccd.wcs
    (dtype('float32'), Unit("adu"), None)
    """
    unit = None if unit is None else u.Unit(unit)
    if isinstance(image, str | Path):
        return _open_and_read(image, hdu, unit)
    name = _describe(image)
    if isinstance(image, fits.HDUList):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ccd = _read_hdulist(image, hdu, "the HDUList input", unit)
        _replay_warnings(caught, "the HDUList input")
        return ccd
    if _is_image_hdu(image):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if image.data is None:
                msg = f"the {type(image).__name__} input holds no data"
                raise InputDataError(msg)
            ccd = _read_hdulist(_single(image), None, name, unit)
        _replay_warnings(caught, name)
        return ccd
    if isinstance(image, NDData):
        data = _as_2d(image.data, name, "the data")
        mask = None
        if image.mask is not None:
            mask = np.array(np.asarray(image.mask) != 0, dtype=bool)
            if mask.shape != data.shape:
                msg = f"{name}: mask shape {mask.shape} differs from data shape {data.shape}"
                raise InputDataError(msg)
        meta = copy.deepcopy(image.meta) if image.meta is not None else {}
        meta = header_safe_meta(meta, name=name)
        return CCDData(
            _to_float32(data),
            unit=unit or image.unit or u.adu,
            mask=mask,
            uncertainty=_copy_uncertainty(image.uncertainty),
            wcs=_copy_wcs(image.wcs, name),
            meta=meta,
        )
    if isinstance(image, tuple):
        if len(image) != 2:
            msg = f"a tuple input must be (array, WCS) or (array, Header), got {len(image)} items"
            raise TypeError(msg)
        array, wcs = image
        meta = {}
        if isinstance(wcs, fits.Header):
            meta = _clean_meta(wcs)
            wcs = _wcs_from_header(wcs, "the (array, Header) input")
            if wcs is not None:
                meta = _clean_meta(image[1], wcs)
        else:
            wcs = _copy_wcs(wcs, "the (array, WCS) input")
        data = _as_2d(array, "the (array, WCS) input", "the array")
        mask = np.array(np.ma.getmaskarray(data)) if np.ma.isMaskedArray(data) else None
        return CCDData(_to_float32(data), unit=unit or u.adu, mask=mask, wcs=wcs, meta=meta)
    if isinstance(image, np.ndarray | list):
        data = _as_2d(image, "the array input", "the array")
        mask = np.array(np.ma.getmaskarray(data)) if np.ma.isMaskedArray(data) else None
        return CCDData(_to_float32(data), unit=unit or u.adu, mask=mask)
    msg = (
        f"cannot read an image from {type(image).__name__}; pass a FITS file name, an HDU, an "
        "HDUList, a CCDData, an NDData, a 2-D array or an (array, WCS) tuple"
    )
    raise TypeError(msg)


@dataclass(frozen=True, eq=False)
class Frame:
    """
    One input frame, read once (`read_frame`).

    Attributes
    ----------
    ccd : `~astropy.nddata.CCDData`
        As ``read_image`` returns it: float32 pixels, mask, uncertainty, WCS
        and the header as ``meta``.
    original : `~numpy.ndarray` or None
        The stored pixel array in its own dtype (BZERO/BSCALE applied as
        astropy does), to write the data back unchanged; None when the
        input is stored as unscaled float32, so ``ccd.data`` is it.
    header : `~astropy.io.fits.Header` or None
        The header of the HDU read, as stored (INHERIT merged); None for
        inputs that are not FITS.
    """

    ccd: CCDData
    original: np.ndarray | None
    header: fits.Header | None

    @property
    def dtype(self):
        """The input's pixel dtype."""
        return self.ccd.data.dtype if self.original is None else self.original.dtype


def read_frame(image, *, hdu=None, unit=None):
    """
    Read an input once: its pixels, its original array and dtype, and its header.

    Parameters
    ----------
    image, hdu, unit
        As in ``read_image``.

    Returns
    -------
    frame : `Frame`

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.io import read_frame
    >>> frame = read_frame(np.zeros((2, 3), dtype=np.uint16))
    >>> frame.ccd.data.dtype, frame.dtype, frame.header
    (dtype('float32'), dtype('uint16'), None)
    """
    if isinstance(image, str | Path):
        return _open_and_read(image, hdu, None if unit is None else u.Unit(unit), frame=True)
    if isinstance(image, fits.HDUList):
        ccd = read_image(image, hdu=hdu, unit=unit)
        return _frame_of_hdulist(ccd, image, hdu, "the HDUList input")
    ccd = read_image(image, hdu=hdu, unit=unit)
    header = image.header.copy() if _is_image_hdu(image) else None
    return Frame(ccd, None if stored_as_float32(image) else read_original_data(image), header)


def _frame_of_hdulist(ccd, hdul, hdu, name):
    """The `Frame` of the HDU of an open HDUList that ``ccd`` was read from."""
    index = _select_hdu(hdul, hdu, name)
    original = None
    if not _header_is_float32(hdul[index].header):
        original = np.array(_as_2d(hdul[index].data, name, f"HDU {index}"), copy=True)
    return Frame(ccd, original, _selected_header(hdul, hdu, name))


def read_original_data(image, *, hdu=None):
    """
    Return the input's pixel array in its own dtype, for writing it back unchanged.

    ``read_image`` converts to float32; pass this array as ``original_data``
    to `~astro_aeqa.io.write_aeqa_fits` so that, e.g., a raw uint16 frame is written back
    as uint16 (BZERO applied as astropy does).

    Parameters
    ----------
    image, hdu
        As in ``read_image``.

    Returns
    -------
    data : `~numpy.ndarray`
        A new 2-D array (a copy; degenerate leading axes dropped).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.io import read_original_data
    >>> read_original_data(np.zeros((2, 3), dtype=np.uint16)).dtype
    dtype('uint16')
    """
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.exists():
            msg = f"{path}: no such file"
            raise FileNotFoundError(msg)
        try:
            with fits.open(path, memmap=False) as hdul:
                index = _select_hdu(hdul, hdu, str(path))
                data = np.array(_as_2d(hdul[index].data, str(path), f"HDU {index}"), copy=True)
        except (OSError, ValueError, TypeError, IndexError, EOFError) as exc:
            if isinstance(exc, InputDataError):
                raise
            msg = f"{path} is not a readable FITS file: {exc}"
            raise InputDataError(msg) from exc
        return data
    if isinstance(image, fits.HDUList):
        index = _select_hdu(image, hdu, "the HDUList input")
        return np.array(_as_2d(image[index].data, "the HDUList input", f"HDU {index}"), copy=True)
    if isinstance(image, NDData | fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
        return np.array(_as_2d(np.ma.getdata(image.data), _describe(image), "the data"), copy=True)
    if isinstance(image, tuple) and len(image) == 2:
        image = image[0]
    return np.array(
        _as_2d(np.ma.getdata(np.asanyarray(image)), "the input", "the array"), copy=True
    )


def stored_as_float32(image, *, hdu=None):
    """
    Whether the input's pixels are stored as unscaled float32, so that the
    float32 array of ``read_image`` can be written back as they were.

    Reads headers only. `False` when unsure (then use `read_original_data`).

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.io import stored_as_float32
    >>> stored_as_float32(np.zeros((2, 2), np.float32)), stored_as_float32(np.zeros((2, 2)))
    (True, False)
    """
    if isinstance(image, str | Path):
        try:
            with fits.open(image) as hdul:
                return _header_is_float32(hdul[_select_hdu(hdul, hdu, str(image))].header)
        except (OSError, ValueError, TypeError, IndexError, EOFError):
            return False
    if isinstance(image, fits.HDUList):
        return _header_is_float32(image[_select_hdu(image, hdu, "the HDUList input")].header)
    if isinstance(image, fits.PrimaryHDU | fits.ImageHDU):
        return _header_is_float32(image.header)
    if isinstance(image, tuple) and len(image) == 2:
        image = image[0]
    data = image.data if isinstance(image, NDData) else image
    return isinstance(data, np.ndarray) and data.dtype == np.float32


def _header_is_float32(header):
    return (
        header.get("BITPIX") == -32 and header.get("BSCALE", 1) == 1 and header.get("BZERO", 0) == 0
    )


def _single(hdu):
    """An HDUList around a copy of a single HDU (so the input is never touched)."""
    header = _data_header(hdu.header)
    return fits.HDUList([fits.PrimaryHDU(data=hdu.data, header=header)])


def _data_header(header):
    """A header to build a new HDU around already-scaled data."""
    header = header.copy()
    for key in ("BZERO", "BSCALE", "XTENSION", "PCOUNT", "GCOUNT"):
        header.remove(key, ignore_missing=True)
    return header


# --------------------------------------------------------------------------- writing


def _card_problem(key, value):
    """None if ``(key, value)`` makes a valid FITS card, else the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)  # e.g. HIERARCH for long keys
            card = fits.Card(key, value)
            card.verify("exception")
            card.image  # noqa: B018 - formats the card, raises on what cannot be written
    except (ValueError, TypeError, VerifyWarning, fits.VerifyError) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _scalar(value):
    return isinstance(value, str | bytes | int | float | complex | bool | np.generic)


def header_safe_meta(meta, *, name="the input"):
    """
    Return a copy of ``meta`` whose scalar values can all be written as FITS cards.

    A FITS header cannot hold NaN or infinite numbers, nor strings with
    characters other than printable ASCII. Such values are written as
    strings instead (``'nan'``, ``'inf'``; other characters escaped, e.g.
    ``'\\xe9'``), and a keyword that is not a valid FITS keyword is dropped;
    each change is reported in one `~astro_aeqa.exceptions.AEQAWarning`.
    Values that are not scalars (lists, dicts) are left as they are. An
    `~astropy.io.fits.Header` is returned unchanged (it holds only valid
    cards).

    Parameters
    ----------
    meta : dict-like or `~astropy.io.fits.Header`
        Image metadata, for example ``ccd.meta``.
    name : str, optional
        The input, for the warning.

    Returns
    -------
    meta : dict-like
        A new mapping of the same type (the input is not changed).

    Examples
    --------
    >>> import warnings
    >>> from astro_aeqa.io import header_safe_meta
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     header_safe_meta({"EXPTIME": 15.0, "AIRMASS": float("nan")})
    {'EXPTIME': 15.0, 'AIRMASS': 'nan'}
    """
    if meta is None or isinstance(meta, fits.Header):
        return meta
    try:
        items = list(meta.items())
    except (AttributeError, TypeError):
        return meta
    changes, out = [], {}
    for key, value in items:
        if not _scalar(value) or _card_problem(key, value) is None:
            out[key] = value
            continue
        if isinstance(value, np.generic):
            value = value.item()
        fixed = value
        if isinstance(value, float | complex) and not np.isfinite(value):
            fixed = str(value)
        elif isinstance(value, bytes):
            fixed = value.decode("ascii", "backslashreplace")
        if isinstance(fixed, str):
            fixed = fixed.encode("unicode_escape").decode("ascii")
        if _card_problem(key, fixed) is None:
            out[key] = fixed
            changes.append(f"{key}={value!r} written as {fixed!r}")
        else:
            changes.append(f"{key!r} dropped ({_card_problem(key, value)})")
    if not changes:
        return meta
    shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
    msg = f"{name}: metadata that a FITS header cannot hold: {shown}"
    warnings.warn(msg, AEQAWarning)
    try:
        new = type(meta)()
        new.update(out)
    except Exception:  # noqa: BLE001 - an unusual mapping type: a plain dict will do
        new = out
    return new


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist: compare the resolved names
        return Path(a).resolve() == Path(b).resolve()


def check_output_path(output, *, inputs=()):
    """
    Refuse an output file that is one of the inputs.

    The same file is found through symbolic links, hard links and
    different spellings of the path (``os.path.samefile``), so writing with
    ``overwrite=True`` can never replace the frame being read (with all its
    other extensions).

    Parameters
    ----------
    output : str or `~pathlib.Path`
        The file to be written.
    inputs : iterable
        The inputs; those that are not file names (arrays, HDUs, CCDData)
        are ignored.

    Returns
    -------
    output : `~pathlib.Path`

    Raises
    ------
    astro_aeqa.exceptions.OutputPathError
        If ``output`` is one of the input files.

    Examples
    --------
    >>> from astro_aeqa.io import check_output_path
    >>> check_output_path("frame_aeqa.fits", inputs=["frame.fits"]).name
    'frame_aeqa.fits'
    """
    output = Path(output)
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    for source in inputs:
        if isinstance(source, str | Path) and _same_file(output, source):
            same = "" if str(Path(source)) == str(output) else f" (the same file as {source})"
            msg = (
                f"{output}: the output would replace the input file{same}; "
                "write to another file name or directory"
            )
            raise OutputPathError(msg)
    return output


def _source_header(source, hdu):
    """The header of the HDU of ``source`` that was read (INHERIT merged); None if unknown."""
    try:
        if isinstance(source, str | Path):
            with fits.open(source) as hdul:  # headers only: no data are read
                return _selected_header(hdul, hdu, str(source))
        if isinstance(source, fits.HDUList):
            return _selected_header(source, hdu, "the HDUList input")
        if _is_image_hdu(source):
            return source.header.copy()
    except (OSError, ValueError, TypeError, IndexError, EOFError) as exc:
        log.debug("cannot read the source header of %s: %s", _describe(source), exc)
    return None


def _selected_header(hdul, hdu, name):
    index = _select_hdu(hdul, hdu, name)
    header = hdul[index].header.copy()
    if index > 0 and header.get("INHERIT", False):
        merged = _clean_meta(hdul[0].header)
        merged.extend(header, update=True)
        header = merged
    return header


_NOT_RESTORED = frozenset(("EXTNAME", "EXTVER", "INHERIT", "BLANK", "", "HISTORY", "COMMENT"))


def _restore_source_cards(header, source_header, wcs):
    """
    Put back the cards of the input header that writing through the WCS object
    rewrote or dropped (CD matrices, CROTA, EPOCH, DATE-OBS as written, plate
    solutions...), when the output's WCS is still the input's.
    """
    source_wcs = _wcs_from_header(source_header, "the input") if wcs is not None else None
    if wcs is not None:
        if source_wcs is None or not _same_wcs(wcs, source_wcs):
            return header  # the WCS was changed: the cards written from it stand
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            generated = set(wcs.to_header(relax=True).keys())
        for key in generated:
            header.remove(key, ignore_missing=True, remove_all=True)
    for card in source_header.cards:
        key = card.keyword
        if key in _NOT_RESTORED or _STRUCTURAL.match(key) or key in header:
            continue
        header.append(card, end=True)
    return header


def _same_wcs(a, b):
    try:
        same = a.wcs.compare(b.wcs, tolerance=1e-10)
    except (TypeError, ValueError):
        return False
    return same and (a.sip is None) == (b.sip is None)


def _card_value(value, comment):
    """Header-safe value: None and non-finite numbers become FITS undefined."""
    if value is None:
        return fits.card.UNDEFINED, comment
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return fits.card.UNDEFINED, f"{comment} ({value})"
    return value, comment


def _fit_comment(key, value, comment):
    """Shorten ``comment`` so that the card fits in 80 characters."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", VerifyWarning)
        while comment:
            try:
                card = fits.Card(key, value, comment)
                card.image  # noqa: B018 - formats, warns if too long
                return comment
            except VerifyWarning:
                comment = comment[:-1]
    return comment


def aeqa_header_cards(
    *,
    version,
    model_name,
    model_sha,
    score,
    threshold,
    fpr,
    patch_size,
    masked_fraction,
    n_trails=None,
):
    """
    Return the AEQA* header cards as ``(keyword, value, comment)`` tuples.

    A value of None (for example ``fpr`` when an explicit threshold was
    given) or a non-finite number (an infinite threshold: nothing masked) is
    written as a FITS *undefined* value (blank value field; astropy reads it
    back as ``astropy.io.fits.card.UNDEFINED``), with the non-finite value
    noted in the comment. ``model_sha`` is written as its first 16 hex
    digits, so that the card keeps its comment.

    Examples
    --------
    >>> from astro_aeqa.io import aeqa_header_cards
    >>> cards = aeqa_header_cards(version="0.1", model_name="small", model_sha="ab" * 32,
    ...                           score=1.5, threshold=3.5, fpr=None, patch_size=64,
    ...                           masked_fraction=0.25)
    >>> [c[0] for c in cards]  # doctest: +NORMALIZE_WHITESPACE
    ['AEQAVER', 'AEQAMOD', 'AEQASHA', 'AEQASCOR', 'AEQATHR', 'AEQAFPR', 'AEQAPSZ', 'AEQAMFR',
     'AEQATRN']
    >>> cards[2][1]
    'abababababababab'
    """
    values = {
        "version": None if version is None else str(version),
        "model_name": None if model_name is None else str(model_name),
        "model_sha": None if model_sha is None else str(model_sha)[:_SHA_LENGTH],
        "score": None if score is None else float(score),
        "threshold": None if threshold is None else float(threshold),
        "fpr": None if fpr is None else float(fpr),
        "patch_size": None if patch_size is None else int(patch_size),
        "masked_fraction": None if masked_fraction is None else float(masked_fraction),
        "n_trails": None if n_trails is None else int(n_trails),
    }
    cards = []
    for arg, (key, comment) in AEQA_KEYWORDS.items():
        value, comment = _card_value(values[arg], comment)
        cards.append((key, value, _fit_comment(key, value, comment)))
    return cards


def masked_ccd(ccd, result, *, model_name, model_sha):
    """
    A new `~astropy.nddata.CCDData` of ``ccd`` with the AEQA mask of ``result``.

    The input mask is OR-ed with the AEQA mask (and the non-finite pixels);
    the AEQA* cards and a HISTORY line join the header. ``ccd``'s arrays
    are shared, not copied: pass a frame that no caller holds (``read_image``'s).
    """
    from . import __version__

    bad = result.mask | negated(result.finite)  # NaN/inf are bad pixels; a new array
    out = CCDData(
        ccd.data,
        unit=ccd.unit,
        mask=bad if ccd.mask is None else combine_masks(ccd.mask, bad),
        uncertainty=ccd.uncertainty,
        wcs=ccd.wcs,
        meta=ccd.meta.copy(),
    )
    header = out.meta if isinstance(out.meta, fits.Header) else fits.Header(_fits_safe(out.meta))
    for keyword, value, comment in aeqa_header_cards(
        version=__version__,
        model_name=model_name,
        model_sha=model_sha,
        score=result.score,
        threshold=result.threshold,
        fpr=result.fpr,
        patch_size=result.patch_size,
        masked_fraction=result.masked_fraction,
        n_trails=None if result.trails is None else len(result.trails),
    ):
        header[keyword] = (value, comment)
    header.add_history(
        f"astro_aeqa {__version__}: masked {result.masked_fraction:.2%} of pixels "
        f"(score {result.score:.4g}, threshold {result.threshold:.4g}, {result.threshold_method})"
    )
    out.meta = header
    return out


def _result_hdulist(frame, result, *, source, model, workers=1, compress=False):
    """
    The `~astropy.io.fits.HDUList` of the AEQA products of ``result`` for a
    `Frame` read by `read_frame` (as `write_aeqa_fits` writes them).

    The masked CCDData (`masked_ccd`) is built while the flag plane is made
    on another thread (with ``workers=2``); the primary data are the array
    as it was read and the header is the input's plus the AEQA cards.
    ``model`` is ``(model_name, model_sha)``. Building the list sets warning
    filters, which are process-wide and not thread-safe; writing it
    (``write_hdulist_atomic``) does not.
    """
    with thread_pool(workers) as pool:
        flags = pool.submit(result.flag_plane)
        out = masked_ccd(frame.ccd, result, model_name=model[0], model_sha=model[1])
        flags = flags.result()
    return _aeqa_hdulist(
        out,
        score_map=result.score_map,
        flags=flags,
        source=source,  # the output header is the input's plus the AEQA cards
        source_header=frame.header,
        trails=result.trails if result.trails is not None and len(result.trails) else None,
        original_data=frame.original,  # None: the float32 array already read
        compress=compress,
    )


def _fits_safe(meta):
    return {k: v for k, v in dict(meta or {}).items() if isinstance(v, str | int | float | bool)}


def _with_header_meta(ccd):
    """``ccd`` (its arrays not copied) with a meta that is a valid FITS header."""
    meta = ccd.meta
    if isinstance(meta, fits.Header):
        return ccd
    header = fits.Header()
    dropped = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # HIERARCH cards for long keys
        for key, value in header_safe_meta(meta, name="ccd.meta").items():
            if _scalar(value) and _card_problem(key, value) is None:
                value = value.item() if isinstance(value, np.generic) else value
                header.append(fits.Card(key, value))
            else:
                dropped.append(str(key))
    if dropped:
        log.info("ccd.meta entries not written to the FITS header: %s", ", ".join(dropped))
    return CCDData(
        ccd.data,
        unit=ccd.unit,
        mask=ccd.mask,
        uncertainty=ccd.uncertainty,
        wcs=ccd.wcs,
        meta=header,
        copy=False,
    )


def _as_score_nddata(score_map):
    if isinstance(score_map, NDData):
        return np.asarray(score_map.data), score_map.wcs
    return np.asarray(score_map), None


def write_aeqa_fits(
    path,
    ccd,
    *,
    score_map,
    flags,
    overwrite=False,
    original_data=None,
    header_cards=None,
    source=None,
    source_hdu=None,
    trails=None,
    source_header=None,
    compress=False,
):
    """
    Write the AEQA products of one image to a FITS file, atomically.

    Parameters
    ----------
    path : str or `~pathlib.Path`
        Output file.
    ccd : `~astropy.nddata.CCDData`
        The evaluated image: its mask (the input mask OR the AEQA mask) goes
        to ``MASK`` (uint8; all zero when the mask is None), its uncertainty to ``UNCERT``, its WCS, meta
        (including AEQA* keywords and HISTORY) to the primary header.
    score_map : `~astropy.nddata.NDData` or array-like
        The patch score map; its ``wcs`` (the WCS of the patch grid) is written in
        the ``AEQA_SCORE`` header.
    flags : array-like
        The flag plane of the image shape, unsigned integers of at most 16
        bits (`astro_aeqa.QualityResult.flag_plane`). It is written in the
        narrowest unsigned type that holds its values: uint8 for the bits of
        `astro_aeqa.flags.AEQAFlags`.
    overwrite : bool, optional
        Replace an existing file. Default `False`.
    original_data : array-like, optional
        Written as the primary data instead of ``ccd.data``, so the data are
        unchanged (e.g. the original uint16 array of a raw frame).
    header_cards : list of tuple, optional
        Extra ``(keyword, value, comment)`` cards for the primary header
        (e.g. from ``aeqa_header_cards``); they override ``ccd.meta``.
    source : str, `~pathlib.Path`, HDU or `~astropy.io.fits.HDUList`, optional
        The input ``ccd`` was read from. ``path`` must not be that file
        (``check_output_path``), and the output header keeps the input
        header's cards as written: while ``ccd.wcs`` is still the input's
        WCS, the WCS cards (CD matrices, CROTA, EPOCH, DATE-OBS, plate
        solutions...) are the input's own instead of those astropy
        regenerates from the WCS object (PC/CDELT), and cards that
        ``read_image`` moved out of ``meta`` come back.
    source_hdu : int, str or tuple, optional
        The HDU of ``source`` that was read (as ``hdu`` of ``read_image``).
    trails : `~astropy.table.Table`, optional
        The trails found on the image (end points, angle, width, S/N...),
        written as the ``AEQA_TRAILS`` binary table.
    source_header : `~astropy.io.fits.Header`, optional
        The header of the HDU that was read (``Frame.header``), so that
        ``source`` is not opened again.
    compress : bool, optional
        Write ``MASK`` and ``AEQA_FLAGS`` tile-compressed (lossless Rice
        compression, as ``fpack`` writes them): the planes of a 4096x4096
        frame take a few hundred kB instead of 16 MB each, and the write
        takes about as long (compressing costs what the smaller write saves).
        They read back unchanged (`read_aeqa_fits`,
        `~astropy.nddata.CCDData.read`, any FITS reader that knows tile
        compression); the primary data are never compressed. Default `False`.

    Returns
    -------
    path : `~pathlib.Path`

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False. Nothing is written.
    astro_aeqa.exceptions.OutputPathError
        If ``path`` is the ``source`` file (also through a link).
    ValueError
        If a plane does not have the image shape.

    Notes
    -----
    Values of ``ccd.meta`` that a FITS header cannot hold (NaN, infinity,
    non-ASCII text) are written as strings, with a warning (see
    ``header_safe_meta``); non-scalar values are left out.
    """
    path = Path(path)
    if source is not None:
        check_output_path(path, inputs=[source])
    if path.exists() and not overwrite:
        msg = f"{path}: file exists; pass overwrite=True to replace it"
        raise FileExistsError(msg)
    hdul = _aeqa_hdulist(
        ccd,
        score_map=score_map,
        flags=flags,
        original_data=original_data,
        header_cards=header_cards,
        source=source,
        source_hdu=source_hdu,
        trails=trails,
        source_header=source_header,
        compress=compress,
    )
    write_hdulist_atomic(hdul, path, overwrite=overwrite)
    log.info("wrote %s", path)
    return path


def _aeqa_hdulist(
    ccd,
    *,
    score_map,
    flags,
    original_data=None,
    header_cards=None,
    source=None,
    source_hdu=None,
    trails=None,
    source_header=None,
    compress=False,
):
    """The `~astropy.io.fits.HDUList` that `write_aeqa_fits` writes.

    Building it sets warning filters (``warnings.catch_warnings``); writing
    it does not, so the write may run on another thread.
    """
    shape = ccd.data.shape
    flags = np.asarray(flags)
    if flags.shape != shape:
        msg = f"flags must have the image shape {shape}, got {flags.shape}"
        raise ValueError(msg)
    largest = int(flags.max()) if flags.size and flags.dtype.kind in "biu" else 0
    if flags.dtype.kind not in "biu" or largest > 0xFFFF or (flags.size and int(flags.min()) < 0):
        msg = f"flags must be unsigned integers that fit in 16 bits, got dtype {flags.dtype}"
        raise ValueError(msg)
    score_data, score_wcs = _as_score_nddata(score_map)
    if score_data.ndim != 2:
        msg = f"score_map must be 2-D (the patch grid), got shape {score_data.shape}"
        raise ValueError(msg)

    ccd = _with_header_meta(ccd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        hdul = ccd.to_hdu(hdu_mask=None, hdu_uncertainty=UNCERT_EXTNAME, wcs_relax=True)
    # the MASK extension as `CCDData.to_hdu` writes it (uint8), but a boolean
    # mask is viewed, not copied; no mask: an all-good one keeps the layout fixed
    hdul.insert(1, fits.ImageHDU(_mask_bytes(ccd.mask, shape), name=MASK_EXTNAME))
    if compress:
        index = hdul.index_of(MASK_EXTNAME)
        hdul[index] = _compressed(hdul[index])
    primary_header = _data_header(hdul[0].header)
    for key in ("EXTNAME", "EXTVER", "INHERIT", "BLANK"):
        primary_header.remove(key, ignore_missing=True)
    if ccd.wcs is not None:
        for key in list(primary_header.keys()):
            if _DSS_KEY.match(key):
                primary_header.remove(key, ignore_missing=True, remove_all=True)
    if source_header is None and source is not None:
        source_header = _source_header(source, source_hdu)
    if source_header is not None:
        primary_header = _restore_source_cards(primary_header, source_header, ccd.wcs)
    for key in list(primary_header.keys()):
        if key.startswith("AEQA"):
            value, comment = _card_value(primary_header[key], primary_header.comments[key])
            primary_header[key] = (value, comment)
    for key, value, comment in header_cards or ():
        value, comment = _card_value(value, comment)
        primary_header[key] = (value, _fit_comment(key, value, comment))
    data = ccd.data if original_data is None else np.asarray(original_data)
    if data.shape != shape:
        msg = f"original_data must have the image shape {shape}, got {data.shape}"
        raise ValueError(msg)
    hdul[0] = fits.PrimaryHDU(data=data, header=primary_header)

    score_header = fits.Header()
    if score_wcs is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            score_header.extend(score_wcs.to_header(relax=True))
    score_header["COMMENT"] = "AEQA patch scores: one pixel per patch of the primary image."
    patch = primary_header.get(KEYWORDS["patch_size"])
    if isinstance(patch, int):
        score_header[KEYWORDS["patch_size"]] = (patch, AEQA_KEYWORDS["patch_size"][1])
    hdul.append(
        fits.ImageHDU(data=score_data.astype(np.float32), header=score_header, name=SCORE_EXTNAME)
    )
    flag_header = fits.Header()
    for key, value, comment in flag_header_cards():
        flag_header[key] = (value, _fit_comment(key, value, comment))
    flag_header["COMMENT"] = "AEQA flag bits; AEQAFBn names bit n (value 2**n)."
    # uint8 needs neither the byte swap nor the BZERO shift of uint16
    narrow = np.uint8 if largest <= 0xFF else np.uint16
    flag_hdu = fits.ImageHDU(
        data=flags.astype(narrow, copy=False), header=flag_header, name=FLAGS_EXTNAME
    )
    hdul.append(_compressed(flag_hdu) if compress else flag_hdu)
    if trails is not None:
        table = fits.table_to_hdu(Table(trails))
        table.name = TRAILS_EXTNAME
        table.header["COMMENT"] = "AEQA trails: end points (pixels, 0-based), angle, FWHM, S/N."
        hdul.append(table)
    return hdul


def _mask_bytes(mask, shape):
    """A pixel mask as uint8 (1: masked): a view of a C-ordered boolean mask."""
    if mask is None:
        return np.zeros(shape, np.uint8)
    mask = np.asarray(mask)
    if mask.dtype == bool and mask.flags.c_contiguous:
        return mask.view(np.uint8)
    return mask.astype(np.uint8)


def _compressed(hdu):
    """An integer image HDU as a lossless, Rice tile-compressed one (fpack's default)."""
    return fits.CompImageHDU(
        data=hdu.data, header=hdu.header, name=hdu.name, compression_type="RICE_1"
    )


def read_aeqa_fits(path):
    """
    Read a file written by `~astro_aeqa.io.write_aeqa_fits`.

    Parameters
    ----------
    path : str or `~pathlib.Path`

    Returns
    -------
    products : `AEQAProducts`

    Raises
    ------
    astro_aeqa.exceptions.InputDataError
        If the file lacks the ``AEQA_SCORE`` or ``AEQA_FLAGS`` extension
        (it was not written by astro_aeqa), or is not readable FITS.
    """
    ccd = read_image(path, hdu=0)
    name = str(path)
    with fits.open(path, memmap=False) as hdul:
        names = [h.name.upper() for h in hdul]
        missing = [ext for ext in (SCORE_EXTNAME, FLAGS_EXTNAME) if ext not in names]
        if missing:
            msg = (
                f"{name} has no {' and no '.join(missing)} extension: it was not written by "
                "astro_aeqa (write it with astro_aeqa.io.write_aeqa_fits or `aeqa mask`)"
            )
            raise InputDataError(msg)
        header = hdul[0].header.copy()
        shdu = hdul[SCORE_EXTNAME]
        swcs = _wcs_from_header(shdu.header, f"{name}[{SCORE_EXTNAME}]")
        score = NDData(
            np.array(shdu.data, dtype=np.float32, copy=True), wcs=swcs, meta=shdu.header.copy()
        )
        flags = np.array(hdul[FLAGS_EXTNAME].data, copy=True)
        trails = Table.read(hdul[TRAILS_EXTNAME]) if TRAILS_EXTNAME in names else None
    return AEQAProducts(ccd=ccd, score_map=score, flags=flags, header=header, trails=trails)
