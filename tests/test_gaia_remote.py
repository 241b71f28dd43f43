# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Live Gaia DR3 query (needs the network: pytest --remote-data)."""

import pytest
from astropy import units as u

from astro_aeqa.validation import query_gaia
from astro_aeqa.validation._synthetic import make_star_field


@pytest.mark.remote_data
def test_query_gaia_live(tmp_path):
    ccd, _, _ = make_star_field(
        (256, 256), n_stars=5, seed=0
    )  # 256" square around M67 (132.8, +11.8)
    cat = query_gaia(ccd, g_range=(None, 19), cache_dir=tmp_path)
    assert len(cat) > 10
    assert cat["ra"].unit == u.deg and "bp_rp" in cat.colnames
    assert (cat["phot_g_mean_mag"].value <= 19).all()
