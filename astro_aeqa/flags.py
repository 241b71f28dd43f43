# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
The bits of the ``AEQA_FLAGS`` plane, defined once.

The verdict travels in the boolean ``mask`` of a `~astropy.nddata.CCDData`
while it is processed (flags are dropped by slicing and arithmetic); the
flag plane is written at the end, by `astro_aeqa.io`.
"""

import numpy as np
from astropy.nddata.bitmask import BitFlagNameMap

__all__ = ["AEQAFlags", "decode_flags", "flag_plane_dtype"]


class AEQAFlags(BitFlagNameMap):
    """Bit flags of the ``AEQA_FLAGS`` extension (the narrowest unsigned integer
    type that holds them: uint8 while there are eight)."""

    LOW_QUALITY = 1, "score above the threshold: masked by AEQA"
    NON_FINITE = 2, "NaN or inf in the input"
    SATURATED = 4, "at or above the saturation level"
    INPUT_MASKED = 8, "masked in the input"
    EDGE = 16, "in a patch cut by the frame edge"
    STAR_KEPT = 32, "bright star explains the score: kept"
    OUTSIDE_FOOTPRINT = 64, "outside the illuminated footprint: not scored"
    TRAIL = 128, "on a linear trail (satellite, aircraft, meteor)"


def flag_descriptions():
    """
    Return the flags as ``(name, value, description)`` tuples, lowest bit first.

    Examples
    --------
    >>> from astro_aeqa.flags import flag_descriptions
    >>> flag_descriptions()[0]
    ('LOW_QUALITY', 1, 'score above the threshold: masked by AEQA')
    """
    rows = []
    for name in AEQAFlags.__dict__:
        value = getattr(AEQAFlags, name)
        if name.isupper() and isinstance(value, int):
            rows.append((name, int(value), value.__doc__ or ""))
    return sorted(rows, key=lambda row: row[1])


def flag_plane_dtype():
    """
    The dtype of a flag plane: the narrowest unsigned integer type that holds every bit.

    Examples
    --------
    >>> from astro_aeqa.flags import flag_plane_dtype
    >>> flag_plane_dtype()
    dtype('uint8')
    """
    return np.min_scalar_type(2 * flag_descriptions()[-1][1] - 1)


def flag_header_cards():
    """
    Return FITS header cards that document each bit, for the flag extension.

    Returns
    -------
    cards : list of tuple
        ``(keyword, value, comment)`` with keywords ``AEQAFB0``, ``AEQAFB1``...
    """
    return [
        (f"AEQAFB{int(np.log2(value))}", name, descr) for name, value, descr in flag_descriptions()
    ]


def decode_flags(flags, name):
    """
    Return a boolean array that is True where bit ``name`` is set.

    Examples
    --------
    >>> import numpy as np
    >>> from astro_aeqa.flags import AEQAFlags, decode_flags
    >>> plane = np.array([0, AEQAFlags.LOW_QUALITY | AEQAFlags.EDGE], dtype=np.uint16)
    >>> decode_flags(plane, "EDGE").tolist()
    [False, True]
    """
    bit = getattr(AEQAFlags, name.upper(), None)
    if bit is None:
        known = ", ".join(row[0] for row in flag_descriptions())
        msg = f"unknown flag {name!r}; known flags are {known}"
        raise ValueError(msg)
    return (np.asarray(flags) & int(bit)) != 0
