# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Tests of astro_aeqa.io: the input parser and the AEQA FITS products."""

import bz2
import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
from _paths import REAL_DATA
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty
from astropy.wcs import WCS

from astro_aeqa._masking import build_flag_plane
from astro_aeqa._wcs import score_map_wcs
from astro_aeqa.exceptions import AEQAWarning, InputDataError
from astro_aeqa.flags import flag_header_cards
from astro_aeqa.io import (
    AEQA_KEYWORDS,
    aeqa_header_cards,
    read_aeqa_fits,
    read_image,
    read_original_data,
    write_aeqa_fits,
)

RAW = REAL_DATA / "ccdproc_a8280271.fits.bz2"  # a real raw frame (tests/data/README.rst)
M67_HEADER = REAL_DATA / "M6707HH_header.txt"  # a real DSS plate header
DECAM = next((REAL_DATA / "legacypipe_cutouts" / "testcase8" / "images").rglob("*.fits"))


@pytest.fixture(scope="module")
def M67(tmp_path_factory):
    """The DSS plate header of M67 around synthetic int16 pixels."""
    header = fits.Header.fromtextfile(M67_HEADER)
    rng = np.random.default_rng(67)
    data = rng.integers(3000, 9000, (header["NAXIS2"], header["NAXIS1"])).astype(np.int16)
    path = tmp_path_factory.mktemp("m67") / "M6707HH.fits"
    fits.PrimaryHDU(data=data, header=header).writeto(path)
    return path


@pytest.fixture(scope="module")
def MEF(tmp_path_factory):
    """A raw multi-extension frame like an LCO Sinistro one: 4 amplifiers, uint16 via BZERO."""
    rng = np.random.default_rng(4)
    primary = fits.PrimaryHDU()
    primary.header["INSTRUME"] = ("fa03", "synthetic 4-amplifier camera")
    hdus = [primary]
    for ver in range(1, 5):
        data = rng.integers(0, 65535, (22, 24)).astype(np.uint16)
        hdu = fits.ImageHDU(data=data, name="SCI", ver=ver)
        hdu.header["CCDSEC"] = f"[1:24,1:22] amp {ver}"
        hdus.append(hdu)
    path = tmp_path_factory.mktemp("mef") / "mef_raw_test_frame.fits"
    fits.HDUList(hdus).writeto(path)
    return path


def tan_wcs(shape=(96, 128), scale=1.0 / 3600):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    w.wcs.cdelt = [-scale, scale]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.pc = [[0.96, -0.28], [0.28, 0.96]]
    w.pixel_shape = shape[::-1]
    return w


@pytest.fixture
def image():
    rng = np.random.default_rng(5)
    return rng.normal(100.0, 5.0, size=(96, 128)).astype(np.float32)


@pytest.fixture
def ccd(image):
    mask = np.zeros(image.shape, bool)
    mask[3:7, 10:20] = True
    meta = fits.Header()
    meta["OBJECT"] = "field"
    meta["EXPTIME"] = 15.0
    return CCDData(
        image.copy(),
        unit="electron",
        mask=mask,
        uncertainty=StdDevUncertainty(np.full(image.shape, 2.0, np.float32)),
        wcs=tan_wcs(image.shape),
        meta=meta,
    )


def _snapshot(obj):
    return (
        np.array(obj.data, copy=True),
        None if obj.mask is None else np.array(obj.mask, copy=True),
        copy.deepcopy(dict(obj.meta)),
    )


def _assert_same(obj, snap):
    np.testing.assert_array_equal(obj.data, snap[0])
    if snap[1] is not None:
        np.testing.assert_array_equal(obj.mask, snap[1])
    assert dict(obj.meta) == snap[2]


# ----------------------------------------------------------------- read_image: kinds


def test_read_ccddata_is_a_new_object(ccd):
    snap = _snapshot(ccd)
    out = read_image(ccd)
    assert isinstance(out, CCDData) and out is not ccd
    assert out.data.dtype == np.float32 and out.unit == u.electron
    np.testing.assert_array_equal(out.data, ccd.data)
    np.testing.assert_array_equal(out.mask, ccd.mask)
    np.testing.assert_array_equal(out.uncertainty.array, ccd.uncertainty.array)
    assert out.wcs is not None and out.wcs is not ccd.wcs
    assert out.meta["OBJECT"] == "field"
    # changing the output never changes the input
    out.data[:] = 0
    out.mask[:] = True
    out.uncertainty.array[:] = 0
    out.meta["OBJECT"] = "changed"
    out.wcs.wcs.crval = [0, 0]
    _assert_same(ccd, snap)
    assert ccd.uncertainty.array[0, 0] == 2.0
    assert ccd.wcs.wcs.crval[0] == 150.0


def test_read_nddata_default_unit_and_override(image):
    nd = NDData(image.astype(np.float64), mask=np.zeros(image.shape, int), meta={"A": 1})
    snap = _snapshot(nd)
    out = read_image(nd)
    assert out.unit == u.adu and out.mask.dtype == bool and not out.mask.any()
    assert out.meta["A"] == 1
    assert read_image(nd, unit="electron").unit == u.electron
    out.data[:] = -1
    _assert_same(nd, snap)


def test_read_arrays_and_tuples(image):
    original = image.copy()
    out = read_image(image)
    assert out.data.dtype == np.float32 and out.wcs is None and out.mask is None
    assert not np.shares_memory(out.data, image)
    out.data[:] = 0
    np.testing.assert_array_equal(image, original)
    ints = np.arange(12, dtype=np.uint16).reshape(3, 4)
    np.testing.assert_array_equal(read_image(ints).data, ints.astype(np.float32))
    masked = np.ma.masked_greater(image, 105)
    assert read_image(masked).mask.sum() == (image > 105).sum()
    w = tan_wcs(image.shape)
    out = read_image((image, w))
    assert out.wcs is not None and out.wcs is not w
    assert out.wcs.wcs.crval[0] == 150.0
    out = read_image((image, w.to_header()))
    assert out.wcs.wcs.ctype[0] == "RA---TAN"
    assert "CTYPE1" not in out.meta  # WCS keywords live in .wcs, as with CCDData.read
    out = read_image(image[None])  # (1, ny, nx) is squeezed
    assert out.shape == image.shape


def test_read_hdus_and_hdulist(image):
    w = tan_wcs(image.shape)
    header = w.to_header()
    header["BUNIT"] = "electron"
    for hdu in (
        fits.PrimaryHDU(image, header=header),
        fits.ImageHDU(image, header=header),
        fits.CompImageHDU(image, header=header, quantize_level=0, compression_type="GZIP_2"),
    ):
        before = np.array(hdu.data, copy=True)
        out = read_image(hdu)
        np.testing.assert_array_equal(out.data, image)
        assert out.unit == u.electron and out.wcs is not None
        out.data[:] = 0
        np.testing.assert_array_equal(hdu.data, before)
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="SCI")])
    np.testing.assert_array_equal(read_image(hdul).data, image)
    np.testing.assert_array_equal(read_image(hdul, hdu="SCI").data, image)


def test_read_compressed_file(tmp_path, image):
    path = tmp_path / "comp.fits"
    comp = fits.CompImageHDU(image, quantize_level=0, compression_type="GZIP_2")
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(path)
    np.testing.assert_array_equal(read_image(path).data, image)
    np.testing.assert_array_equal(read_image(str(path)).data, image)


def test_read_ccddata_file_with_mask_and_uncertainty(tmp_path, ccd):
    path = tmp_path / "ccd.fits"
    ccd.write(path, hdu_mask="MASK", hdu_uncertainty="UNCERT")
    out = read_image(path)
    np.testing.assert_array_equal(out.mask, ccd.mask)
    assert isinstance(out.uncertainty, StdDevUncertainty)
    np.testing.assert_array_equal(out.uncertainty.array, ccd.uncertainty.array)
    assert out.unit == u.electron
    assert out.wcs.wcs.ctype[0] == "RA---TAN"


def test_read_blank_pixels_become_nan_and_masked(tmp_path):
    data = np.arange(20, dtype=np.int16).reshape(4, 5)
    hdu = fits.PrimaryHDU(data)
    hdu.header["BLANK"] = 7
    path = tmp_path / "blank.fits"
    hdu.writeto(path)
    out = read_image(path)
    assert np.isnan(out.data[1, 2]) and out.mask[1, 2] and out.mask.sum() == 1


def test_read_raw_uint16_values_preserved():
    out = read_image(RAW)
    raw = fits.getdata(RAW)
    assert raw.dtype == np.uint16
    assert out.shape == (520, 536) and out.data.dtype == np.float32
    np.testing.assert_array_equal(out.data, raw.astype(np.float32))
    assert out.unit == u.adu and out.wcs is None
    assert "BZERO" not in out.meta and "NAXIS1" not in out.meta


def test_read_mef_select_and_ambiguous(MEF):
    with pytest.raises(InputDataError) as info:
        read_image(MEF)
    msg = str(info.value)
    assert str(MEF) in msg and "hdu=" in msg and "--hdu" in msg
    for i in (1, 2, 3, 4):
        assert f"{i}: SCI" in msg
    assert "(22, 24)" in msg
    with fits.open(MEF) as hdul:
        expected = hdul[3].data.astype(np.float32)
        out = read_image(hdul, hdu=3)
    np.testing.assert_array_equal(out.data, expected)
    np.testing.assert_array_equal(read_image(MEF, hdu=("SCI", 3)).data, expected)
    # BZERO applied: the stored int16 values plus 32768, as uint16 without overflow
    with fits.open(MEF, do_not_scale_image_data=True) as hdul:
        stored = hdul[3].data.astype(np.int64)
    assert fits.getheader(MEF, 3)["BZERO"] == 32768
    np.testing.assert_array_equal(out.data, (stored + 32768).astype(np.float32))
    with pytest.raises(InputDataError, match=r"4 HDUs named 'SCI'.*\('SCI', 1\)"):
        read_image(MEF, hdu="SCI")
    with pytest.raises(InputDataError, match="no HDU 9"):
        read_image(MEF, hdu=9)
    with pytest.raises(InputDataError, match="holds no image data"):
        read_image(MEF, hdu=0)


def test_read_real_wcs(M67):
    out = read_image(M67)
    assert out.wcs is not None and out.wcs.has_celestial
    assert not any(k.startswith("AMDX") for k in out.meta)


# ----------------------------------------------------------------- read_image: errors


def test_read_missing_file(tmp_path):
    path = tmp_path / "nope.fits"
    with pytest.raises(FileNotFoundError, match="nope.fits"):
        read_image(path)


def test_read_random_bytes(tmp_path):
    path = tmp_path / "random.fits"
    path.write_bytes(np.random.default_rng(0).bytes(8000))
    with pytest.raises(InputDataError, match=r"random\.fits is not a readable FITS file"):
        read_image(path)


@pytest.mark.parametrize("fraction", [0.5, 0.001])
def test_read_truncated_file(tmp_path, fraction):
    blob = bz2.decompress(RAW.read_bytes())
    path = tmp_path / "truncated.fits"
    path.write_bytes(blob[: int(len(blob) * fraction)])
    with pytest.raises(InputDataError, match=r"truncated\.fits is not a readable FITS file"):
        read_image(path)


def test_read_no_image_hdu(tmp_path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=[1.0])])
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    with pytest.raises(InputDataError, match="table.fits has no image HDU"):
        read_image(path)


def test_read_cube(tmp_path):
    path = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((3, 8, 9), np.float32)).writeto(path)
    with pytest.raises(InputDataError, match=r"HDU 0 .*cube.fits.*\(3, 8, 9\).*select one plane"):
        read_image(path)
    with pytest.raises(InputDataError, match="1-D|2-D image"):
        read_image(np.zeros(5))


def test_read_broken_wcs_warns(image):
    header = fits.Header()
    header["CTYPE1"] = "RA---FOO"
    header["CTYPE2"] = "DEC--FOO"
    with pytest.warns(AEQAWarning, match="WCS"):
        out = read_image(fits.PrimaryHDU(image, header=header))
    assert out.wcs is None


def test_read_hdu_without_data():
    with pytest.raises(InputDataError, match="holds no data"):
        read_image(fits.PrimaryHDU())
    with pytest.raises(InputDataError, match="no image HDU"):
        read_image(fits.HDUList([fits.PrimaryHDU()]))


def test_read_unsupported_type():
    with pytest.raises(TypeError, match="FITS file name"):
        read_image({"data": 1})


# ----------------------------------------------------------------- score map WCS


def _check_patch_centres(image_wcs, grid_wcs, p, grid_shape, tol_arcsec):
    for i, j in [(0, 0), (grid_shape[0] - 1, grid_shape[1] - 1), (1, grid_shape[1] // 2)]:
        a = grid_wcs.pixel_to_world(j, i)
        b = image_wcs.pixel_to_world(j * p + (p - 1) / 2, i * p + (p - 1) / 2)
        assert a.separation(b).arcsec < tol_arcsec


def test_score_map_wcs_tan_and_sip():
    shape = (96, 128)
    w = tan_wcs(shape)
    s = score_map_wcs(w, 16, shape)
    assert s.array_shape == (6, 8)
    _check_patch_centres(w, s, 16, (6, 8), 1e-6)
    # same as astropy's slicing for a plain linear WCS
    ref = w.slice((slice(None, None, 16), slice(None, None, 16)))
    np.testing.assert_allclose(s.pixel_to_world_values(3, 2), ref.pixel_to_world_values(3, 2))
    # SIP distortion: coefficients must be rescaled too
    header = w.to_header()
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
    header["A_ORDER"] = header["B_ORDER"] = 2
    header["A_2_0"], header["A_0_2"], header["B_1_1"] = 2e-4, -1e-4, 3e-4
    sip = WCS(header)
    s = score_map_wcs(sip, 16, shape)
    _check_patch_centres(sip, s, 16, (6, 8), 1e-4)
    assert score_map_wcs(None, 16, shape) is None
    with pytest.raises(TypeError, match="WCS"):
        score_map_wcs("not a wcs", 16, shape)


def test_score_map_wcs_real_plate(M67):
    w = read_image(M67).wcs  # a DSS plate solution (a TPD distortion in wcslib)
    s = score_map_wcs(w, 64, (1059, 1059))
    assert s.array_shape == (17, 17)
    _check_patch_centres(w, s, 64, (17, 17), 1e-3)


# ----------------------------------------------------------------- header cards


def test_aeqa_header_cards():
    cards = aeqa_header_cards(
        version="0.1.dev1",
        model_name="small",
        model_sha="0123456789abcdef" * 4,
        score=1.25,
        threshold=float("inf"),
        fpr=None,
        patch_size=64,
        masked_fraction=np.float64(0.125),
    )
    keys = [c[0] for c in cards]
    assert keys == [v[0] for v in AEQA_KEYWORDS.values()]
    assert all(len(k) <= 8 and c for k, _, c in cards)
    values = {k: v for k, v, _ in cards}
    assert values["AEQASHA"] == "0123456789abcdef"
    assert values["AEQAFPR"] is fits.card.UNDEFINED
    assert values["AEQATHR"] is fits.card.UNDEFINED
    assert values["AEQAPSZ"] == 64 and values["AEQAMFR"] == 0.125
    header = fits.Header([fits.Card(*c) for c in cards])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = header.tostring()  # no "card too long" warning
    assert "inf" in header.comments["AEQATHR"] and "AEQASCOR" in text


# ----------------------------------------------------------------- write / read products


def _products(ccd, p=16):
    grid = score_map_wcs(ccd.wcs, p, ccd.shape)
    scores = np.arange(np.prod(grid.array_shape), dtype=np.float64).reshape(grid.array_shape)
    score_map = NDData(scores, wcs=grid)
    flags = build_flag_plane(ccd.shape, low_quality=ccd.mask, edge=np.eye(*ccd.shape, dtype=bool))
    return score_map, flags


def _with_cards(ccd, p=16):
    out = ccd.copy()
    for key, value, comment in aeqa_header_cards(
        version="0.1",
        model_name="small",
        model_sha="f" * 64,
        score=0.5,
        threshold=1.5,
        fpr=0.01,
        patch_size=p,
        masked_fraction=float(ccd.mask.mean()),
    ):
        out.meta[key] = (value, comment)
    out.meta["HISTORY"] = "astro_aeqa: masked 1 region"
    return out


def test_compressed_planes_read_back_unchanged(tmp_path, ccd):
    # compress=True tile-compresses MASK and AEQA_FLAGS (lossless); the data stay as they are
    ccd = _with_cards(ccd)
    score_map, flags = _products(ccd)
    flags[40:60, :] |= 128  # a trail across the frame: runs the compression has to keep
    plain = write_aeqa_fits(tmp_path / "plain.fits", ccd, score_map=score_map, flags=flags)
    packed = write_aeqa_fits(
        tmp_path / "packed.fits", ccd, score_map=score_map, flags=flags, compress=True
    )
    with fits.open(packed) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "MASK", "UNCERT", "AEQA_SCORE", "AEQA_FLAGS"]
        assert isinstance(hdul["MASK"], fits.CompImageHDU)
        assert isinstance(hdul["AEQA_FLAGS"], fits.CompImageHDU)
        assert type(hdul[0]) is fits.PrimaryHDU and type(hdul["UNCERT"]) is fits.ImageHDU
        assert hdul["AEQA_FLAGS"].data.dtype == np.uint8
        for key, value, _ in flag_header_cards():
            assert hdul["AEQA_FLAGS"].header[key] == value
    assert packed.stat().st_size < plain.stat().st_size
    a, b = read_aeqa_fits(plain), read_aeqa_fits(packed)
    np.testing.assert_array_equal(b.flags, a.flags)
    np.testing.assert_array_equal(b.flags, flags)
    np.testing.assert_array_equal(b.ccd.data, a.ccd.data)
    np.testing.assert_array_equal(b.ccd.mask, ccd.mask)
    back = CCDData.read(packed)
    np.testing.assert_array_equal(back.data, ccd.data)
    np.testing.assert_array_equal(back.mask, ccd.mask)


def test_write_round_trip(tmp_path, ccd):
    ccd = _with_cards(ccd)
    score_map, flags = _products(ccd)
    snap = _snapshot(ccd)
    path = write_aeqa_fits(tmp_path / "out.fits", ccd, score_map=score_map, flags=flags)
    assert path == tmp_path / "out.fits"
    _assert_same(ccd, snap)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "MASK", "UNCERT", "AEQA_SCORE", "AEQA_FLAGS"]
        assert hdul["MASK"].data.dtype == np.uint8
        assert hdul["AEQA_SCORE"].data.dtype.newbyteorder("=") == np.float32
        assert hdul["AEQA_FLAGS"].data.dtype == np.uint8
        head = hdul[0].header
        assert head["AEQAMOD"] == "small" and head["AEQAPSZ"] == 16 and head["AEQAFPR"] == 0.01
        assert all(head.comments[key] for key, _ in AEQA_KEYWORDS.values())
        assert "masked 1 region" in str(head["HISTORY"])
        assert head["CTYPE1"] == "RA---TAN"
        fhead = hdul["AEQA_FLAGS"].header
        for key, value, _ in flag_header_cards():
            assert fhead[key] == value
        assert "BUNIT" not in hdul["AEQA_SCORE"].header
    # CCDData.read still reads it (and ignores our extensions)
    back = CCDData.read(path)
    np.testing.assert_array_equal(back.data, ccd.data)
    np.testing.assert_array_equal(back.mask, ccd.mask)
    assert back.unit == u.electron
    # so does read_image
    np.testing.assert_array_equal(read_image(path).mask, ccd.mask)
    products = read_aeqa_fits(path)
    np.testing.assert_array_equal(products.flags, flags)
    np.testing.assert_array_equal(products.ccd.mask, ccd.mask)
    np.testing.assert_array_equal(products.score_map.data, score_map.data.astype(np.float32))
    assert products.header["AEQASCOR"] == 0.5
    _check_patch_centres(ccd.wcs, products.score_map.wcs, 16, score_map.data.shape, 1e-6)


def test_write_original_integer_data(tmp_path):
    raw = (np.arange(64 * 80) % 60000).astype(np.uint16).reshape(64, 80)
    ccd = read_image(raw)  # no mask: an all-zero MASK is written
    flags = np.zeros(raw.shape, np.uint16)
    path = write_aeqa_fits(
        tmp_path / "raw.fits", ccd, score_map=np.zeros((4, 5)), flags=flags, original_data=raw
    )
    data = fits.getdata(path)
    assert data.dtype == np.uint16
    np.testing.assert_array_equal(data, raw)
    products = read_aeqa_fits(path)
    assert products.score_map.wcs is None
    assert products.ccd.mask is not None and not products.ccd.mask.any()


def test_flag_plane_written_in_the_narrowest_type(tmp_path, ccd):
    score_map, _ = _products(ccd)
    wide = np.zeros(ccd.shape, np.uint16)
    wide[0, :3] = [1, 255, 128]  # fits uint8: written as uint8, values kept
    path = write_aeqa_fits(tmp_path / "narrow.fits", ccd, score_map=score_map, flags=wide)
    back = read_aeqa_fits(path).flags
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, wide)
    wide[0, 3] = 0x8001  # another caller's bit above 8: uint16 is kept
    path = write_aeqa_fits(tmp_path / "wide.fits", ccd, score_map=score_map, flags=wide)
    back = read_aeqa_fits(path).flags
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, wide)
    with pytest.raises(ValueError, match="16 bits"):
        write_aeqa_fits(
            tmp_path / "neg.fits", ccd, score_map=score_map, flags=-wide.astype(np.int32)
        )


def test_write_no_overwrite_and_overwrite(tmp_path, ccd):
    score_map, flags = _products(ccd)
    path = tmp_path / "out.fits"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_aeqa_fits(path, ccd, score_map=score_map, flags=flags)
    assert path.read_bytes() == b"keep me"
    write_aeqa_fits(path, ccd, score_map=score_map, flags=flags, overwrite=True)
    assert read_aeqa_fits(path).flags.shape == ccd.shape


def test_write_is_atomic(tmp_path, ccd, monkeypatch):
    score_map, flags = _products(ccd)

    def broken_writeto(self, name, *args, **kwargs):
        Path(name).write_bytes(b"SIMPLE  =   half written")
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", broken_writeto)
    with pytest.raises(OSError, match="disk full"):
        write_aeqa_fits(tmp_path / "out.fits", ccd, score_map=score_map, flags=flags)
    assert list(tmp_path.iterdir()) == []


def test_write_shape_errors(tmp_path, ccd):
    score_map, flags = _products(ccd)
    with pytest.raises(ValueError, match="flags"):
        write_aeqa_fits(tmp_path / "a.fits", ccd, score_map=score_map, flags=flags[:10])
    with pytest.raises(ValueError, match="original_data"):
        write_aeqa_fits(
            tmp_path / "b.fits", ccd, score_map=score_map, flags=flags, original_data=np.zeros(3)
        )
    assert list(tmp_path.iterdir()) == []


def test_read_aeqa_fits_rejects_plain_files(tmp_path, image):
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(image).writeto(path)
    with pytest.raises(InputDataError, match="plain.fits has no AEQA_SCORE and no AEQA_FLAGS"):
        read_aeqa_fits(path)


def test_raw_file_written_back_unchanged(tmp_path, MEF):
    ccd = read_image(RAW)
    raw = read_original_data(RAW)
    assert raw.dtype == np.uint16
    ccd.mask = np.zeros(ccd.shape, bool)
    score_map = NDData(np.zeros((9, 9), np.float32), wcs=score_map_wcs(ccd.wcs, 64, ccd.shape))
    path = write_aeqa_fits(
        tmp_path / "raw.fits",
        ccd,
        score_map=score_map,
        flags=np.zeros(ccd.shape, np.uint16),
        original_data=raw,
    )
    np.testing.assert_array_equal(fits.getdata(path), fits.getdata(RAW))
    assert fits.getdata(path).dtype == np.uint16
    with fits.open(MEF) as hdul:
        np.testing.assert_array_equal(read_original_data(hdul, hdu=2), hdul[2].data)
    assert read_original_data(MEF, hdu=("SCI", 2)).dtype == np.uint16
    with pytest.raises(InputDataError, match="hdu="):
        read_original_data(MEF)


# ----------------------------------------------------------------- issue 17


def _flags_and_scores(ccd):
    return np.zeros((2, 2), np.float32), np.zeros(ccd.shape, np.uint16)


def test_output_that_is_the_input_is_refused(tmp_path, MEF):
    """Issue 17: write_masked(path, path, hdu=2, overwrite=True) lost three amplifiers."""
    from astro_aeqa.exceptions import OutputPathError
    from astro_aeqa.io import check_output_path

    frame = tmp_path / "frame.fits"
    frame.write_bytes(MEF.read_bytes())
    (tmp_path / "link.fits").symlink_to(frame)
    os_link = tmp_path / "hard.fits"
    os_link.hardlink_to(frame)
    (tmp_path / "sub").mkdir()
    for output in (frame, tmp_path / "link.fits", os_link, tmp_path / "sub" / ".." / "frame.fits"):
        with pytest.raises(OutputPathError, match="would replace the input file"):
            check_output_path(output, inputs=[frame])
    assert check_output_path(tmp_path / "new.fits", inputs=[frame, np.zeros(3)]).name == "new.fits"
    ccd = read_image(frame, hdu=2)
    score, flags = _flags_and_scores(ccd)
    before = frame.read_bytes()
    with pytest.raises(OutputPathError, match="link.fits: the output would replace"):
        write_aeqa_fits(
            tmp_path / "link.fits", ccd, score_map=score, flags=flags, overwrite=True, source=frame
        )
    assert frame.read_bytes() == before
    with fits.open(frame) as hdul:
        assert len(hdul) == 5


def test_non_finite_meta_is_written_with_a_warning(tmp_path):
    """Issue 17: NaN in ccd.meta gave astropy's bare 'Floating point nan values...'."""
    meta = {"AIRMASS": np.nan, "SKY": np.float32("inf"), "OBSERVER": "Zoë", "GOOD": 1.5}
    ccd = CCDData(np.ones((8, 8), np.float32), unit="adu", meta=meta)
    with pytest.warns(AEQAWarning, match="AIRMASS=nan written as 'nan'"):
        out = read_image(ccd)
    assert out.meta["AIRMASS"] == "nan" and out.meta["OBSERVER"] == "Zo\\xeb"
    assert ccd.meta["AIRMASS"] is meta["AIRMASS"]  # the input is untouched
    score, flags = _flags_and_scores(ccd)
    with pytest.warns(AEQAWarning, match="SKY"):
        path = write_aeqa_fits(tmp_path / "nan.fits", ccd, score_map=score, flags=flags)
    header = fits.getheader(path)
    assert header["AIRMASS"] == "nan" and header["SKY"] == "inf" and header["GOOD"] == 1.5


def test_evaluator_mask_with_non_finite_meta(tiny_evaluator, reference_frames):
    from astro_aeqa import aeqa_mask

    ccd = reference_frames[0].copy()
    ccd.meta = {"AIRMASS": float("nan"), "EXPTIME": 15.0}
    with pytest.warns(AEQAWarning, match="AIRMASS"):
        out = aeqa_mask(ccd, tiny_evaluator)
    assert out.meta["AIRMASS"] == "nan" and "AEQASCOR" in out.meta
    assert np.isnan(ccd.meta["AIRMASS"])


def test_complex_data_are_refused():
    data = np.ones((8, 8), np.complex64)
    with pytest.raises(InputDataError, match="complex data.*np.abs"):
        read_image(data)
    with pytest.raises(InputDataError, match="complex"):
        read_image(NDData(data))
    with pytest.raises(InputDataError, match="complex"):
        read_image((data, WCS(naxis=2)))


def _lost_or_changed(source_header, written):
    skip = {"HISTORY", "COMMENT", "", "EXTNAME", "EXTVER", "INHERIT", "XTENSION", "PCOUNT"}
    skip |= {"GCOUNT", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "SIMPLE", "BZERO"}
    skip |= {"BSCALE", "CHECKSUM", "DATASUM"}
    return {
        key: (source_header[key], written.get(key))
        for key in source_header
        if key not in skip and written.get(key) != source_header[key]
    }


def test_output_header_is_the_input_header_plus_aeqa_cards(tmp_path, M67):
    """CD matrices, EPOCH, CROTA, DATE-OBS and plate solutions are written as they were read."""
    for source, hdu in ((M67, None), (DECAM, None)):
        ccd = read_image(source, hdu=hdu)
        ccd.meta["AEQASCOR"] = (0.5, "AEQA image score (mean patch score)")
        score, flags = _flags_and_scores(ccd)
        path = write_aeqa_fits(
            tmp_path / f"{source.stem}_aeqa.fits",
            ccd,
            score_map=score,
            flags=flags,
            original_data=read_original_data(source),
            source=source,
        )
        with fits.open(source) as hdul:
            index = 0 if hdul[0].data is not None else 1
            src = hdul[0].header.copy() if index == 0 else hdul[0].header.copy()
            if index:
                src.extend(hdul[index].header, update=True)
        written = fits.getheader(path)
        assert _lost_or_changed(src, written) == {}
        assert written["AEQASCOR"] == 0.5
        back = read_image(path)
        x, y = np.array([10.0, 200.0]), np.array([30.0, 250.0])
        np.testing.assert_allclose(
            back.wcs.pixel_to_world_values(x, y), ccd.wcs.pixel_to_world_values(x, y), atol=1e-9
        )
    assert "CD1_1" in written and "PC1_1" not in written
    # without source= the WCS is written from the WCS object (what astropy does)
    path = write_aeqa_fits(tmp_path / "plain.fits", ccd, score_map=score, flags=flags)
    assert "PC1_1" in fits.getheader(path)


def test_atomic_write_creates_the_final_name_exclusively(tmp_path):
    """Issue 17: two runs writing one output both succeeded, one replacing the other."""
    from astro_aeqa.utils import atomic_write

    target = tmp_path / "out.fits"
    with pytest.raises(FileExistsError, match="written meanwhile by another run"):
        with atomic_write(target) as tmp:
            tmp.write_text("mine")
            target.write_text("the other run's")  # the other run finished first
    assert target.read_text() == "the other run's"
    assert [p.name for p in tmp_path.iterdir()] == ["out.fits"]  # no temporary left
    with atomic_write(target, overwrite=True) as tmp:
        tmp.write_text("mine")
    assert target.read_text() == "mine"


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path):
    import os
    import time

    from astro_aeqa.utils import atomic_write

    old = time.time() - 2 * 3600
    stale = tmp_path / ".x_aeqa.fits.aeqa-k1ll3d_0.tmp"
    fresh = tmp_path / ".y_aeqa.fits.aeqa-wr1t1ng.tmp"
    foreign = tmp_path / ".notes.tmp"
    for path in (stale, fresh, foreign):
        path.write_text("partial")
    for path in (stale, foreign):
        os.utime(path, (old, old))
    with atomic_write(tmp_path / "z.fits") as tmp:
        assert tmp.name.startswith(".z.fits.aeqa-") and tmp.name.endswith(".tmp")
        tmp.write_text("done")
    assert not stale.exists() and fresh.exists() and foreign.exists()


def test_check_writable_dir(tmp_path):
    from astro_aeqa.utils import check_writable_dir

    assert check_writable_dir(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="file: exists and is a file"):
        check_writable_dir(tmp_path / "file")
    with pytest.raises(NotADirectoryError, match="is a file, not a directory"):
        check_writable_dir(tmp_path / "file" / "sub")


def test_mask_extension_bytes_view_a_boolean_mask():
    from astro_aeqa.io import _mask_bytes

    mask = np.zeros((4, 6), bool)
    mask[1, 2:5] = True
    as_bytes = _mask_bytes(mask, mask.shape)
    assert as_bytes.dtype == np.uint8
    assert np.shares_memory(as_bytes, mask)  # no frame-sized copy
    np.testing.assert_array_equal(as_bytes, mask.astype(np.uint8))
    # what CCDData.to_hdu writes for other masks: a uint8 copy
    for other in (mask[:, ::2], mask.astype(np.int16) * 3):
        got = _mask_bytes(other, other.shape)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, np.asarray(other).astype(np.uint8))
    np.testing.assert_array_equal(_mask_bytes(None, (2, 3)), np.zeros((2, 3), np.uint8))
