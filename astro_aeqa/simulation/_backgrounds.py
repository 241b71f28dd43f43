# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""Complex backgrounds and their truth maps (private)."""

import numpy as np

from ._screens import phase_screen

__all__ = ["BACKGROUNDS", "MOON_MAX", "cloud", "moon", "shutter", "trail", "ramp"]

BACKGROUNDS = ("cloud", "moon", "shutter", "trail", "spikes")
MOON_MAX = 3.0  # at level 1 the moon adds three times the dark sky at the bright side


def cloud(screen, level, threshold=0.0):
    """Extinction fraction (the cloud truth map) from a [0, 1] screen."""
    cover = screen if threshold <= 0 else np.clip((screen - threshold) / (1 - threshold), 0, 1)
    return (level * cover).astype(np.float32)


def ramp(shape, rng, *, power=1.0):
    """A smooth [0, 1] ramp along a random direction (0 at one side, 1 at the other)."""
    ny, nx = shape
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.ogrid[:ny, :nx]
    d = np.cos(angle) * xx + np.sin(angle) * yy
    d = (d - d.min()) / max(d.max() - d.min(), 1e-30)
    return (d**power).astype(np.float32)


def moon(shape, level, rng):
    """Fractional extra sky divided by ``MOON_MAX``: the moon truth map."""
    return (level * ramp(shape, rng, power=rng.uniform(1.0, 2.0))).astype(np.float32)


def shutter(shape, level, rng):
    """Lost exposure fraction (1 - exposure / nominal): the shutter truth map."""
    ny, nx = shape
    side = rng.integers(4)
    frac = (
        (np.arange(nx) / max(nx - 1, 1))[None, :]
        if side < 2
        else (np.arange(ny) / max(ny - 1, 1))[:, None]
    )
    if side % 2:
        frac = 1 - frac
    return np.broadcast_to(level * frac, shape).astype(np.float32)


def trail(shape, level, rng, *, width, peak, n_trails=1):
    """Satellite trails: (light in e-, truth map 1 on the trails)."""
    ny, nx = shape
    light = np.zeros(shape, np.float32)
    truth = np.zeros(shape, np.float32)
    yy, xx = np.ogrid[:ny, :nx]
    sigma = width / 2.3548
    for _ in range(n_trails):
        y0, x0 = rng.uniform(0.2, 0.8) * ny, rng.uniform(0.2, 0.8) * nx
        angle = rng.uniform(0, np.pi)
        d = np.abs(-(xx - x0) * np.sin(angle) + (yy - y0) * np.cos(angle))
        light += (level * peak * np.exp(-0.5 * (d / sigma) ** 2)).astype(np.float32)
        truth[d <= 1.5 * width] = 1.0
    return light, truth


def screen_for(shape, rng, outer_scale):
    """The default cloud screen of a frame."""
    if outer_scale is None:
        outer_scale = max(shape)
    return phase_screen(shape, rng, outer_scale=outer_scale)
