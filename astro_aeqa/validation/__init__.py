# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Photometric validation of masks against a reference catalogue (Gaia DR3).

Aperture photometry calibrated on Gaia shows whether a mask is right: the
photometric error of a star grows with the score of its patch, and the
masked stars are the ones with bad photometry (Jia et al. 2024, Figs. 7,
9-11). The tools take any `~astropy.nddata.CCDData` with a ``mask``, so
they judge any mask, not only ours. This subpackage never imports the
evaluator or torch; astroquery is imported only when Gaia is queried.
"""

from .calibration import CURVES, ZeroPointFit, crossmatch, fit_zero_point
from .catalogs import (
    COLUMN_ALIASES,
    GAIA_COLUMNS,
    REQUIRED_COLUMNS,
    footprint,
    load_catalog,
    propagate_epoch,
    query_gaia,
    reference_stars,
    sky_tiles,
)
from .measure import measure_frame, patch_scores_at
from .photometry import aperture_photometry_table, detect_stars, effective_gain, saturation_level
from .proxy import background_rms_score_map, score_map_from_array
from .studies import (
    error_vs_score,
    light_curve_study,
    mask_ratio_study,
    masked_vs_unmasked,
    monotonic_rise,
)

# The API; the other names are imported from here by the package and its
# command line, and may change.
__all__ = [
    "measure_frame",
    "load_catalog",
    "query_gaia",
    "reference_stars",
    "detect_stars",
    "aperture_photometry_table",
    "crossmatch",
    "fit_zero_point",
    "ZeroPointFit",
    "error_vs_score",
    "masked_vs_unmasked",
    "mask_ratio_study",
    "light_curve_study",
]
