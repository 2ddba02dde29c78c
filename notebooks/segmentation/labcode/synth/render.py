# Your copy of the course library: labcode/synth/render.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Rendering a frame: ray casting the room and its boxes, shading, then the scanner's gaps and the camera's
artefacts."""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from labcode.synth.scene import Box, Room, Shot
from labcode.synth.textures import _EMISSIVE, _TEXTURES


def _camera_basis(shot: Shot) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward, right and up unit vectors of a camera in room coordinates (z up)."""
    cy, sy, cp, sp = np.cos(shot.yaw), np.sin(shot.yaw), np.cos(shot.pitch), np.sin(shot.pitch)
    forward = np.array([cp * cy, cp * sy, sp])
    right = np.array([sy, -cy, 0.0])
    up = np.cross(right, forward)
    cr, sr = np.cos(shot.roll), np.sin(shot.roll)
    return forward, right * cr + up * sr, up * cr - right * sr


def render_frame(room: Room, shot: Shot, size: int, seed_sequence: list[int],
                 gaps: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Ray cast one frame of ``room``.

    Args:
        room: a planned room (from ``plan_area``).
        shot: one of ``room.shots``.
        size: image side in pixels.
        seed_sequence: seeds of the per-frame randomness (light direction, holes, camera artefacts).
        gaps: punch the holes of missing scanner data (label -1); off for a clean frame.

    Returns:
        ``(rgb, label)``: uint8 ``(size, size, 3)`` RGB image and int32 ``(size, size)`` labels, an index into
        ``room.instances`` or -1 where data is missing.
    """
    rng = np.random.default_rng(seed_sequence)
    forward, right, up = _camera_basis(shot)
    focal = size / 2 / np.tan(shot.fov / 2)
    grid = (np.arange(size, dtype=np.float32) + 0.5 - size / 2) / focal
    dirs = (forward[:, None, None] + grid[None, None, :] * right[:, None, None]
            - grid[None, :, None] * up[:, None, None]).astype(np.float32)  # (3, H, W)
    origin = np.asarray(shot.position, np.float32)
    frame = _Frame(
        depth=np.full((size, size), np.inf, np.float32), label=np.zeros((size, size), np.int32),
        albedo=np.empty((size, size, 3), np.float32), normal=np.zeros((3, size, size), np.float32),
        emissive=np.zeros((size, size), bool),
    )
    _cast_room(room, origin, dirs, frame)
    for box in room.boxes:
        _cast_box(box, origin, dirs, (forward, right, up), focal, frame)
    rgb = _shade(room, origin, dirs, frame, rng)
    label = frame.label
    if gaps:
        rgb, label = _scanner_gaps(rgb, label, frame.depth, rng)
    return _camera_effects(rgb, rng), label


class _Frame(NamedTuple):
    """The z-buffer of a frame: per pixel distance along the ray, label, albedo, normal and light emission."""

    depth: np.ndarray     # (H, W) float32
    label: np.ndarray     # (H, W) int32
    albedo: np.ndarray    # (H, W, 3) float32
    normal: np.ndarray    # (3, H, W) float32
    emissive: np.ndarray  # (H, W) bool


def _cast_room(room: Room, origin: np.ndarray, dirs: np.ndarray, frame: _Frame) -> None:
    """Where each ray leaves the room box: walls 0-3, floor 4, ceiling 5 (also their labels), and the wall patches."""
    exits = []
    for k in range(3):
        d = np.where(np.abs(dirs[k]) < 1e-6, np.float32(1e-6), dirs[k])
        exits.append(np.where(d > 0, room.dims[k] - origin[k], -origin[k]) / d)
    ex, ey, ez = exits
    np.minimum(np.minimum(ex, ey), ez, out=frame.depth)
    surface = np.where(ex <= np.minimum(ey, ez), dirs[0] > 0, np.where(ey <= ez, 2 + (dirs[1] > 0), 4 + (dirs[2] > 0)))
    frame.label[...] = surface  # labels 0..5 are the walls, floor and ceiling of every room
    for sid in range(6):
        mask = surface == sid
        if not mask.any():
            continue
        t = frame.depth[mask]
        px, py, pz = (origin[k] + t * dirs[k][mask] for k in range(3))
        frame.normal[sid // 2][mask] = 1.0 if sid % 2 == 0 else -1.0
        if sid >= 4:
            frame.albedo[mask] = _TEXTURES[room.surfaces[sid].kind](px, py, room.surfaces[sid], (1.0, 1.0))
            continue
        s = py if sid < 2 else px
        colors = _TEXTURES[room.surfaces[sid].kind](s, pz, room.surfaces[sid], (1.0, 1.0))
        label, glow = frame.label[mask], np.zeros(len(s), bool)
        for patch in room.patches:
            if patch.wall == sid:
                inside = (s >= patch.s0) & (s <= patch.s1) & (pz >= patch.z0) & (pz <= patch.z1)
                if inside.any():
                    extent = (patch.s1 - patch.s0, patch.z1 - patch.z0)
                    look = _TEXTURES[patch.material.kind]
                    colors[inside] = look(s[inside] - patch.s0, pz[inside] - patch.z0, patch.material, extent)
                    label[inside] = patch.label
                    glow[inside] = patch.material.kind in _EMISSIVE
        frame.albedo[mask], frame.label[mask], frame.emissive[mask] = colors, label, glow


def _cast_box(box: Box, origin: np.ndarray, dirs: np.ndarray, basis, focal: float, frame: _Frame) -> None:
    """Intersect the rays inside the projected rectangle of ``box`` and keep the hits nearer than the z-buffer."""
    size = frame.depth.shape[0]
    c, s = float(np.cos(box.yaw)), float(np.sin(box.yaw))
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    corners = box.center + (_CUBE * box.half) @ rot.T
    rel = corners - origin
    forward, right, up = basis
    z = rel @ forward
    ahead = z > _NEAR
    if not ahead.any():
        return
    if not ahead.all():  # clip the box edges that cross the near plane, keep the crossing points
        i, j = _CUBE_EDGES[ahead[_CUBE_EDGES[:, 0]] != ahead[_CUBE_EDGES[:, 1]]].T
        t = (_NEAR - z[i]) / (z[j] - z[i])
        rel = np.concatenate([rel[ahead], rel[i] + t[:, None] * (rel[j] - rel[i])])
        z = rel @ forward
    px, py = size / 2 + focal * (rel @ right) / z, size / 2 - focal * (rel @ up) / z
    c0, c1 = max(int(px.min()) - 1, 0), min(int(np.ceil(px.max())) + 1, size)
    r0, r1 = max(int(py.min()) - 1, 0), min(int(np.ceil(py.max())) + 1, size)
    if c0 >= c1 or r0 >= r1:
        return
    dx, dy, dz = dirs[0, r0:r1, c0:c1], dirs[1, r0:r1, c0:c1], dirs[2, r0:r1, c0:c1]
    local_dirs = (c * dx + s * dy, c * dy - s * dx, dz)  # rotated into the box frame
    rel_o = origin - box.center
    local_o = (c * rel_o[0] + s * rel_o[1], c * rel_o[1] - s * rel_o[0], rel_o[2])
    t_enter, t_exit = [], []
    for k in range(3):
        inv = 1 / np.where(np.abs(local_dirs[k]) < 1e-6, np.float32(1e-6), local_dirs[k])
        ta, tb = (-box.half[k] - local_o[k]) * inv, (box.half[k] - local_o[k]) * inv
        t_enter.append(np.minimum(ta, tb))
        t_exit.append(np.maximum(ta, tb))
    near = np.maximum(np.maximum(t_enter[0], t_enter[1]), t_enter[2])
    far = np.minimum(np.minimum(t_exit[0], t_exit[1]), t_exit[2])
    depth = frame.depth[r0:r1, c0:c1]
    hit = (near <= far) & (near > 1e-3) & (near < depth)
    if not hit.any():
        return
    near_hit = near[hit]
    face = np.stack([t[hit] for t in t_enter], 1).argmax(1)
    d_hit = np.stack([d[hit] for d in local_dirs], 1)
    n = np.arange(len(face))
    sign = -np.sign(d_hit[n, face])
    local = np.asarray(local_o, np.float32) + near_hit[:, None] * d_hit + box.half.astype(np.float32)  # 0..2 half
    colors = np.empty((len(face), 3), np.float32)
    for axis, (a, b) in enumerate([(1, 2), (0, 2), (0, 1)]):
        on_face = face == axis
        front = on_face & (sign > 0) if axis == 1 and box.front is not None else np.zeros_like(on_face)
        for sel, mat in ((on_face & ~front, box.material), (front, box.front)):
            if sel.any():
                colors[sel] = _TEXTURES[mat.kind](local[sel, a], local[sel, b], mat, (2 * box.half[a], 2 * box.half[b]))
    n_local = np.zeros((len(face), 3), np.float32)
    n_local[n, face] = sign
    n_world = n_local @ rot.T.astype(np.float32)
    depth[hit] = near_hit
    frame.label[r0:r1, c0:c1][hit] = box.label
    frame.albedo[r0:r1, c0:c1][hit] = colors
    for k in range(3):
        frame.normal[k, r0:r1, c0:c1][hit] = n_world[:, k]
    glows = box.front is not None and box.front.kind in _EMISSIVE
    frame.emissive[r0:r1, c0:c1][hit] = glows & (face == 1) & (sign > 0)


_NEAR = 0.02  # metres: the near clipping plane of the bounding rectangles
_CUBE = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], dtype=float)
_CUBE_EDGES = np.array([(a, b) for a in range(8) for b in range(a + 1, 8) if np.abs(_CUBE[a] - _CUBE[b]).sum() == 2])


def _shade(room: Room, origin: np.ndarray, dirs: np.ndarray, frame: _Frame, rng) -> np.ndarray:
    """Ambient + key light + ceiling lamps, darker near corners and under furniture; auto exposure."""
    ambient, key, lamp_power = room.light
    points = [origin[k] + frame.depth * dirs[k] for k in range(3)]
    nx, ny, nz = frame.normal
    angle = rng.uniform(0, 2 * np.pi)
    key_dir = np.array([np.cos(angle), np.sin(angle), rng.uniform(0.5, 1.5)])
    key_dir /= np.linalg.norm(key_dir)
    light = ambient + key * np.clip(nx * key_dir[0] + ny * key_dir[1] + nz * key_dir[2], 0, None)
    light += 0.15 * np.clip(-nz, 0, None)  # light bounced off the floor
    for lamp in room.lamps:
        vx, vy, vz = (lamp[k] - points[k] for k in range(3))
        dist2 = vx * vx + vy * vy + vz * vz + 1e-3
        cos = (nx * vx + ny * vy + nz * vz) / np.sqrt(dist2)
        light += lamp_power * np.clip(cos, 0, None) / (1 + dist2 / 6.0)
    gap = np.full_like(light, 9.0)
    for k in range(3):  # distance to the nearest room plane other than the one a pixel lies on
        for g in (points[k], room.dims[k] - points[k]):
            np.minimum(gap, np.where(g < 0.02, np.float32(9.0), g), out=gap)
    light *= 1 - 0.3 * np.exp(-gap / 0.25)
    floor = frame.label == 4
    if floor.any():
        fx, fy = points[0][floor], points[1][floor]
        shadow = np.ones(len(fx), np.float32)
        for box in room.boxes:
            if box.center[2] - box.half[2] < 0.8:
                c, s = np.cos(box.yaw), np.sin(box.yaw)
                qx, qy = fx - box.center[0], fy - box.center[1]
                out = np.maximum(np.abs(c * qx + s * qy) - box.half[0], np.abs(c * qy - s * qx) - box.half[1])
                np.minimum(shadow, 0.55 + 0.45 * np.clip(out / 0.2, 0, 1), out=shadow)
        light[floor] *= shadow
    rgb = frame.albedo * (light[..., None] * np.asarray(room.white_balance, np.float32))
    rgb[frame.emissive] = frame.albedo[frame.emissive] * 1.1
    sample = rgb[::4, ::4][~frame.emissive[::4, ::4]]
    level = float(np.median(sample.mean(-1))) if len(sample) else 0.5
    return rgb * np.float32(rng.uniform(0.36, 0.44) / max(level, 1e-3))


def _scanner_gaps(rgb: np.ndarray, label: np.ndarray, depth: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """Mark pixels the scanner missed (label -1, nearly black): holes, an edge band, far away surfaces."""
    size = label.shape[0]
    missing = np.zeros((size, size), np.uint8)
    if rng.random() < 0.25:
        for _ in range(rng.integers(1, 4)):
            center = (int(rng.integers(size)), int(rng.integers(size)))
            axes = (int(size * rng.uniform(0.015, 0.07)) + 1, int(size * rng.uniform(0.015, 0.07)) + 1)
            cv2.ellipse(missing, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    if rng.random() < 0.12:
        band = int(size * rng.uniform(0.01, 0.06)) + 1
        side = rng.integers(4)
        [missing[:band], missing[-band:], missing[:, :band], missing[:, -band:]][side][...] = 1
    gone = missing.astype(bool)
    if rng.random() < 0.2:
        gone |= depth > rng.uniform(9.0, 16.0)
    rgb[gone] = rng.uniform(0.0, 0.02)
    label[gone] = -1
    return rgb, label


def _camera_effects(rgb: np.ndarray, rng) -> np.ndarray:
    """Vignetting, tone curve, blur, sensor noise and sometimes JPEG artefacts; returns uint8 RGB."""
    size = rgb.shape[0]
    r = np.linspace(-1, 1, size, dtype=np.float32)
    vignette = 1 - np.float32(rng.uniform(0.1, 0.25)) * (r[None, :] ** 2 + r[:, None] ** 2) / 2
    rgb = 1 - np.exp(-1.6 * np.clip(rgb * vignette[..., None], 0, None))  # soft highlight roll-off
    sigma = rng.uniform(0.2, 0.6) * size / 400
    img = cv2.GaussianBlur(rgb, (0, 0), sigma) if sigma > 0.25 else rgb
    noise = rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0.5, 2.0))
    out = np.clip(img * np.float32(255 / (1 - np.exp(-1.6))) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        _, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 95))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def _misregister(label: np.ndarray, rng) -> np.ndarray:
    """Shift a label map by a few pixels (a badly registered frame), repeating the border."""
    size = label.shape[0]
    dy, dx = (int(v) for v in rng.integers(-1, 2, 2) * max(2, size // 70))
    rows = np.clip(np.arange(size) - dy, 0, size - 1)
    cols = np.clip(np.arange(size) - dx, 0, size - 1)
    return label[rows][:, cols]
