# Your copy of the course library: labcode/synth/textures.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Textures: each maps surface coordinates (metres, u along, v up, 0..extent) to colours (n, 3)."""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from labcode.synth.scene import Material
from labcode.synth.styles import _BRIGHTS, _FABRICS, _PAINTS


@functools.lru_cache(maxsize=1)
def _noise_fields() -> tuple[np.ndarray, np.ndarray]:
    """Two periodic smooth noise images (coarse, fine), zero mean and unit variance."""
    rng, n = np.random.default_rng(20240601), 256
    freq = np.fft.fftfreq(n)
    radius2 = freq[:, None] ** 2 + freq[None, :] ** 2
    fields = []
    for sigma in (6.0, 1.2):
        spectrum = np.fft.fft2(rng.standard_normal((n, n))) * np.exp(-radius2 * (2 * np.pi * sigma) ** 2 / 2)
        img = np.fft.ifft2(spectrum).real
        fields.append(((img - img.mean()) / img.std()).astype(np.float32))
    return fields[0], fields[1]


def _noise(u: np.ndarray, v: np.ndarray, fine: bool = False) -> np.ndarray:
    """Bilinear sample of a noise field at texel coordinates (u, v), wrapping around."""
    img = _noise_fields()[int(fine)]
    n = img.shape[0]
    x0, y0 = np.floor(u), np.floor(v)
    fx, fy = (u - x0).astype(np.float32), (v - y0).astype(np.float32)
    x0, y0 = x0.astype(np.int64) & (n - 1), y0.astype(np.int64) & (n - 1)
    x1, y1 = (x0 + 1) & (n - 1), (y0 + 1) & (n - 1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def _hash(i: np.ndarray, j: np.ndarray | int = 0, salt: int = 0) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) from integer cells."""
    h = (np.atleast_1d(np.asarray(i, np.int64)) * 73856093) ^ (np.asarray(j, np.int64) * 19349663) ^ (salt * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 9) & 0xFFFF).astype(np.float32) / 65536.0


def _rgb(color, k: np.ndarray | float = 1.0) -> np.ndarray:
    return np.asarray(color, np.float32)[None, :] * np.asarray(k, np.float32).reshape(-1, 1)


def _tex_paint(u, v, m: Material, ext):
    k = 1 + m.contrast * (0.7 * _noise(u * 8 / m.scale + m.salt, v * 8 / m.scale) + 0.3 * _noise(u * 90, v * 90, True))
    return _rgb(m.color, k)


def _tex_fabric(u, v, m: Material, ext):
    coarse = _noise(u * 20 * m.scale + m.salt, v * 20 * m.scale)
    k = 1 + m.contrast * (0.5 * coarse + 0.6 * _noise(u * 200, v * 200, True))
    return _rgb(m.color, k)


def _tex_carpet(u, v, m: Material, ext):
    tile = _hash(np.floor(u / m.scale), np.floor(v / m.scale), m.salt) - 0.5
    k = 1 + m.contrast * (0.5 * _noise(u * 10, v * 10) + 0.4 * _noise(u * 160, v * 160, True)) + 0.1 * tile
    return _rgb(m.color, k)


def _tex_tiles(u, v, m: Material, ext):
    cu, cv = u / m.scale, v / m.scale
    fu, fv = cu - np.floor(cu), cv - np.floor(cv)
    gap = 0.012 / m.scale
    grout = (np.minimum(fu, 1 - fu) < gap) | (np.minimum(fv, 1 - fv) < gap)
    k = 1 + m.contrast * (2 * (_hash(np.floor(cu), np.floor(cv), m.salt) - 0.5) + 0.5 * _noise(u * 120, v * 120, True))
    return np.where(grout[:, None], _rgb(m.color2), _rgb(m.color, k))


def _tex_planks(u, v, m: Material, ext):
    row = np.floor(v / m.scale)
    seg = np.floor(u / 1.2 + _hash(row, 0, m.salt) * 3)
    tint = _hash(row, seg, m.salt) - 0.5
    grain = np.sin(v * 160 + 6 * _noise(u * 6, v * 30 + row * 17))
    k = 1 + 2 * m.contrast * tint + 0.06 * grain
    edge = (v / m.scale - row) < 0.04
    return np.where(edge[:, None], _rgb(m.color2), _rgb(m.color, k))


def _tex_books(u, v, m: Material, ext):
    """A bookcase front: a frame, shelves every ``scale`` metres, books of random colours and heights."""
    width, height = ext
    shelf = np.floor(v / m.scale)
    fv = v / m.scale - shelf
    frame = (u < 0.03) | (u > width - 0.03) | (fv < 0.08) | (v > height - 0.03)
    book = np.floor(u / (0.025 + 0.035 * _hash(shelf, 1, m.salt)) + 7 * shelf)
    tall = fv < 0.55 + 0.4 * _hash(book, shelf, m.salt + 1)
    present = _hash(book, shelf, m.salt + 2) > 0.2 * (1 - m.contrast)
    hue = _hash(book, shelf, m.salt + 3)
    palette = np.vstack([_BRIGHTS, _FABRICS, _PAINTS[:3]]).astype(np.float32)
    colors = palette[(hue * len(palette)).astype(np.int64)] * (0.7 + 0.3 * _hash(book, 5, m.salt))[:, None]
    back = _rgb(m.color, 0.45)
    out = np.where((tall & present)[:, None], colors, back)
    return np.where(frame[:, None], _rgb(m.color), out)


def _tex_glass(u, v, m: Material, ext):
    """Outdoor light through a window: sky and buildings, mullions every ``scale`` metres, sometimes blinds."""
    width, height = ext
    sky = _rgb(m.color, 1.05 + 0.1 * v / max(height, 1e-3))
    ground = _rgb((0.45, 0.5, 0.45), 1 + 0.25 * _noise(u * 6 + m.salt, v * 6))
    horizon = height * (0.1 + 0.15 * _hash(m.salt)) + 0.25 * _noise(u * 3 + m.salt, 1.0)
    out = np.where((v < horizon)[:, None], ground, sky)
    if m.contrast > 0.5:  # blinds
        out = out * (0.75 + 0.25 * (np.sin(v * 90) > 0))[:, None]
    frame = (u < 0.05) | (u > width - 0.05) | (v < 0.05) | (v > height - 0.05)
    frame |= np.abs((u / m.scale) - np.round(u / m.scale)) * m.scale < 0.025
    return np.where(frame[:, None], _rgb(m.color2) * 0.6, out)


def _tex_board(u, v, m: Material, ext):
    """A whiteboard (or a green chalkboard, ``contrast`` 1) with a dark frame and rows of writing."""
    width, height = ext
    frame = (u < 0.06) | (u > width - 0.06) | (v < 0.06) | (v > height - 0.06)
    row = np.floor(v / 0.09)
    band = np.abs(v / 0.09 - row - 0.5) < 0.18
    words = _noise(u * 30 + m.salt, row * 13.0) > 0.6
    line_end = width * (0.4 + 0.6 * _hash(row, 1, m.salt))
    written = band & words & (_hash(row, 0, m.salt) < 0.6) & (u > 0.1) & (u < line_end)
    ink = _rgb(np.array([(0.1, 0.15, 0.5), (0.12, 0.12, 0.12), (0.55, 0.1, 0.1)])[m.salt % 3])
    surface = _rgb(m.color, 1 + 0.02 * _noise(u * 5, v * 5) + m.contrast * 0.15 * _noise(u * 150, v * 150, True))
    out = np.where(written[:, None], ink if m.contrast < 0.5 else _rgb((0.9, 0.9, 0.85)), surface)
    return np.where(frame[:, None], _rgb(m.color2), out)


def _tex_door(u, v, m: Material, ext):
    width, height = ext
    frame = (u < 0.06) | (u > width - 0.06) | (v > height - 0.06)
    leaf = np.abs(u - width / 2) < 0.01 if width > 1.4 else np.zeros_like(u, dtype=bool)
    handle = (np.abs(v - 1.0) < 0.03) & (np.abs(u - (width / 2 - 0.12 if width > 1.4 else width - 0.15)) < 0.07)
    k = 1 + 0.05 * _noise(u * 10 + m.salt, v * 10) + 0.03 * np.sin(v * 70 + 3 * _noise(u * 5, v * 20))
    out = np.where((leaf | handle)[:, None], _rgb(m.color2, 0.5), _rgb(m.color, k))
    return np.where(frame[:, None], _rgb(m.color2), out)


def _tex_opening(u, v, m: Material, ext):
    """An open door: the dim room behind it, framed."""
    width, height = ext
    frame = (u < 0.06) | (u > width - 0.06) | (v > height - 0.06)
    inside = _rgb(m.color, 0.7 + 0.5 * v / max(height, 1e-3) + 0.2 * _noise(u * 4 + m.salt, v * 4))
    return np.where(frame[:, None], _rgb(m.color2), inside)


def _tex_poster(u, v, m: Material, ext):
    width, height = ext
    cells = _hash(np.floor(u / max(width, 1e-3) * 3), np.floor(v / max(height, 1e-3) * 4), m.salt)
    colors = np.vstack([_BRIGHTS, _FABRICS[:2]]).astype(np.float32)  # no wall paint in a poster
    out = colors[(cells * len(colors)).astype(np.int64)]
    border = (u < 0.03) | (u > width - 0.03) | (v < 0.03) | (v > height - 0.03)
    return np.where(border[:, None], _rgb(m.color2, 0.6), out)


def _tex_screen(u, v, m: Material, ext):
    width, height = ext
    bezel = (u < 0.02) | (u > width - 0.02) | (v < 0.02) | (v > height - 0.02)
    glow = _rgb(m.color, 1 + 2.5 * (_noise(u * 8 + m.salt, v * 8) > 0.8))
    return np.where(bezel[:, None], _rgb(m.color2), glow)


_TEXTURES: dict[str, Callable] = {
    "paint": _tex_paint, "fabric": _tex_fabric, "carpet": _tex_carpet, "tiles": _tex_tiles, "planks": _tex_planks,
    "books": _tex_books, "glass": _tex_glass, "board": _tex_board, "door": _tex_door, "opening": _tex_opening,
    "poster": _tex_poster, "screen": _tex_screen,
}
_EMISSIVE = {"glass", "screen"}
