# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Live Gaia DR3 query (needs the network: pytest --remote-data)."""

import numpy as np
import pytest
from astropy import units as u

from astro_aeqa.validation import query_gaia
from astro_aeqa.validation._synthetic import make_star_field


@pytest.mark.remote_data
def test_query_gaia_live(tmp_path):
    from astroquery.gaia import Gaia

    row_limit = Gaia.ROW_LIMIT
    ccd, _, _ = make_star_field(
        (256, 256), n_stars=5, seed=0
    )  # 256" square around M67 (132.8, +11.8)
    cat = query_gaia(ccd, g_range=(None, 17), cache_dir=tmp_path, timeout=300)
    assert len(cat) > 10
    assert cat["ra"].unit == u.deg and "bp_rp" in cat.colnames
    assert "phot_variable_flag" in cat.colnames and "ruwe" in cat.colnames
    # the faint limit is 2.5 mag deeper than g_range: the neighbours that blend a star
    assert (cat["phot_g_mean_mag"].value <= 19.5).all()
    assert (cat["phot_g_mean_mag"].value > 17).any()
    assert np.isfinite(cat["pmra"].value).any()
    assert Gaia.ROW_LIMIT == row_limit  # the global client is left alone
    files = sorted(tmp_path.glob("gaia_*.ecsv"))
    assert files
    again = query_gaia(ccd, g_range=(None, 17), cache_dir=tmp_path, client=object())
    assert len(again) == len(cat)  # from the tile cache: the dummy client is never called
