"""Procedural synthetic scenes: the embedded default dataset (pure numpy, seeded, cached).

Each scene is ray cast, fully vectorised over pixels (one numpy pass per primitive), from a
pinhole camera with random focal length, height, pitch, yaw and roll. Two scene kinds:

- ``"objects"``: a textured ground plane, 0-2 far brick walls and 2-6 primitives (spheres,
  yawed boxes, vertical cylinders and cones) with random colours and textures. Classes
  :data:`OBJECT_CLASSES` = sky, ground, wall, sphere, box, cylinder, cone.
- ``"road"``: a straight road with dashed/edge lane marks, raised kerbed sidewalks, grass,
  box buildings with windows, cars (body + cabin), trees and poles. Classes
  :data:`ROAD_CLASSES` = sky, road, sidewalk, building, car, vegetation, pole; the road mask is
  the visible road surface (lane marks included, cars excluded).

Shading: Lambert from a random sun (colour, elevation) plus ambient, cast shadows on ground,
road, sidewalk and walls, distance haze, procedural value-noise textures, sky gradient and
Gaussian pixel noise. Targets come from the same rays: **exact planar z-depth** in metres along
the optical axis (float32, 0 = sky/invalid), the class map, instance ids and a saliency mask (the
largest visible object instance).

Depth exactness: the camera ray of pixel (u, v) is ``d = R_cw K^-1 [u + 0.5, v + 0.5, 1]^T``;
since the camera-frame ray has z = 1, the ray parameter ``t`` of a hit ``C + t d`` *is* the
planar z-depth. For the ground plane y = 0 with the camera at height h this gives
``z = -h / d_y``.
"""

from __future__ import annotations

import colorsys
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bidense._atomic import atomic_open

from .base import DenseDataset, Sample

__all__ = [
    "OBJECT_CLASSES",
    "ROAD_CLASSES",
    "SCENE_KINDS",
    "DEFAULT_NUM_IMAGES",
    "render_scene",
    "generate_scenes",
    "cache_dir",
    "SyntheticScenes",
]

OBJECT_CLASSES: tuple[str, ...] = ("sky", "ground", "wall", "sphere", "box", "cylinder", "cone")
ROAD_CLASSES: tuple[str, ...] = ("sky", "road", "sidewalk", "building", "car", "vegetation",
                                 "pole")
SCENE_KINDS: tuple[str, ...] = ("objects", "road")
DEFAULT_NUM_IMAGES: dict[str, int] = {"train": 2000, "val": 500}
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
#: Bumped whenever rendering changes, so stale caches are never reused.
GENERATOR_VERSION = 1
_EPS = 1e-4


# ----------------------------------------------------------------------------------------------
# Primitives: intersection (t along the unnormalised ray), normals, albedo
# ----------------------------------------------------------------------------------------------
def _rot_y(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _hit_plane(p: dict, O: np.ndarray, D: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (p["y"] - O[..., 1]) / D[..., 1]
    t = np.where(np.isfinite(t) & (t > _EPS), t, np.inf)
    if p.get("radius"):
        P = O + t[..., None] * D
        far = (P[..., 0] - p["cx"]) ** 2 + (P[..., 2] - p["cz"]) ** 2 > p["radius"] ** 2
        t = np.where(far, np.inf, t)
    return t


def _hit_sphere(p: dict, O: np.ndarray, D: np.ndarray) -> np.ndarray:
    oc = O - p["c"]
    a = np.einsum("...i,...i->...", D, D)
    b = 2.0 * np.einsum("...i,...i->...", D, oc)
    c = np.einsum("...i,...i->...", oc, oc) - p["r"] ** 2
    disc = b * b - 4 * a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t0 = (-b - sq) / (2 * a)
    t1 = (-b + sq) / (2 * a)
    t = np.where(t0 > _EPS, t0, t1)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _hit_box(p: dict, O: np.ndarray, D: np.ndarray) -> np.ndarray:
    # Slab test in the box frame (the box is yawed about the vertical axis).
    Ry = p["R"]
    Ol = (O - p["c"]) @ Ry
    Dl = D @ Ry
    h = p["h"]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / Dl
        t1 = (-h - Ol) * inv
        t2 = (h - Ol) * inv
    tmin = np.nanmax(np.minimum(t1, t2), axis=-1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=-1)
    t = np.where(tmin > _EPS, tmin, tmax)
    return np.where((tmax >= tmin) & (t > _EPS), t, np.inf)


def _hit_cylinder(p: dict, O: np.ndarray, D: np.ndarray) -> np.ndarray:
    ox, oz = O[..., 0] - p["cx"], O[..., 2] - p["cz"]
    a = D[..., 0] ** 2 + D[..., 2] ** 2
    b = 2 * (ox * D[..., 0] + oz * D[..., 2])
    c = ox * ox + oz * oz - p["r"] ** 2
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
        y = O[..., 1] + ts * D[..., 1]
        side = np.where((disc >= 0) & (ts > _EPS) & (y >= p["y0"]) & (y <= p["y1"]), ts, np.inf)
        tc = (p["y1"] - O[..., 1]) / D[..., 1]
    cx = ox + tc * D[..., 0]
    cz = oz + tc * D[..., 2]
    cap = np.where(np.isfinite(tc) & (tc > _EPS) & (cx * cx + cz * cz <= p["r"] ** 2), tc, np.inf)
    out = np.minimum(side, cap)
    return np.where(np.isnan(out), np.inf, out)


def _hit_cone(p: dict, O: np.ndarray, D: np.ndarray) -> np.ndarray:
    # (x-cx)^2 + (z-cz)^2 = k^2 (y_apex - y)^2 with y in [y0, y_apex].
    k2 = (p["r"] / (p["y1"] - p["y0"])) ** 2
    ox, oy, oz = O[..., 0] - p["cx"], O[..., 1] - p["y1"], O[..., 2] - p["cz"]
    a = D[..., 0] ** 2 + D[..., 2] ** 2 - k2 * D[..., 1] ** 2
    b = 2 * (ox * D[..., 0] + oz * D[..., 2] - k2 * oy * D[..., 1])
    c = ox * ox + oz * oz - k2 * oy * oy
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.sqrt(np.maximum(disc, 0.0))
        r0, r1 = (-b - sq) / (2 * a), (-b + sq) / (2 * a)
    lo, hi = np.fmin(r0, r1), np.fmax(r0, r1)
    best = np.full(lo.shape, np.inf)
    for r in (hi, lo):  # lo written last so it wins when both are valid
        y = O[..., 1] + r * D[..., 1]
        ok = (disc >= 0) & np.isfinite(r) & (r > _EPS) & (y >= p["y0"]) & (y <= p["y1"])
        best = np.where(ok, r, best)
    return best


_HIT: dict[str, Callable[[dict, np.ndarray, np.ndarray], np.ndarray]] = {
    "plane": _hit_plane, "sphere": _hit_sphere, "box": _hit_box, "cylinder": _hit_cylinder,
    "cone": _hit_cone,
}


def _normals(p: dict, P: np.ndarray) -> np.ndarray:
    kind = p["kind"]
    if kind == "plane":
        n = np.zeros_like(P)
        n[:, 1] = 1.0
        return n
    if kind == "sphere":
        return (P - p["c"]) / p["r"]
    if kind == "box":
        Pl = (P - p["c"]) @ p["R"]
        q = np.abs(Pl) / p["h"]
        ax = np.argmax(q, axis=1)
        nl = np.zeros_like(Pl)
        nl[np.arange(len(P)), ax] = np.sign(Pl[np.arange(len(P)), ax])
        return nl @ p["R"].T
    dx, dz = P[:, 0] - p["cx"], P[:, 2] - p["cz"]
    if kind == "cylinder":
        n = np.stack([dx, np.zeros_like(dx), dz], axis=1)
        top = P[:, 1] >= p["y1"] - 1e-6
        n[top] = (0.0, 1.0, 0.0)
    else:  # cone
        k2 = (p["r"] / (p["y1"] - p["y0"])) ** 2
        n = np.stack([dx, k2 * (p["y1"] - P[:, 1]), dz], axis=1)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)


def _value_noise(u: np.ndarray, v: np.ndarray, grid: np.ndarray) -> np.ndarray:
    g = grid.shape[0]
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = u - u0, v - v0
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    i0, j0 = u0.astype(np.int64) % g, v0.astype(np.int64) % g
    i1, j1 = (i0 + 1) % g, (j0 + 1) % g
    a = grid[i0, j0] * (1 - fu) + grid[i1, j0] * fu
    b = grid[i0, j1] * (1 - fu) + grid[i1, j1] * fu
    return a * (1 - fv) + b * fv


def _fbm(u: np.ndarray, v: np.ndarray, grid: np.ndarray) -> np.ndarray:
    return 0.6 * _value_noise(u, v, grid) + 0.4 * _value_noise(2.03 * u + 5.1, 2.03 * v + 1.7,
                                                                  grid)


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


def _albedo(p: dict, P: np.ndarray, grid: np.ndarray, scene: dict) -> np.ndarray:
    tex = p["tex"]
    base = p["color"]
    n = len(P)
    nz = _fbm(P[:, 0] * p["nscale"], P[:, 2] * p["nscale"] + P[:, 1] * p["nscale"], grid)
    shade = (1 - p["namp"]) + p["namp"] * 2 * nz  # mean ~1
    col = np.broadcast_to(base, (n, 3)).copy()
    if tex == "checker":
        s = p["scale"]
        chk = (np.floor(P[:, 0] / s) + np.floor(P[:, 2] / s)) % 2 == 0
        col[chk] = p["color2"]
    elif tex == "stripes":
        coord = P[:, 1] if p["axis"] == 1 else (P @ p["dir"])
        on = _frac(coord / p["scale"]) < 0.5
        col[on] = p["color2"]
    elif tex == "bricks":
        bh, bw = p["scale"], 2.2 * p["scale"]
        Pl = (P - p["c"]) @ p["R"]
        along = np.where(np.abs(Pl[:, 0]) / p["h"][0] > np.abs(Pl[:, 2]) / p["h"][2],
                         Pl[:, 2], Pl[:, 0])
        row = np.floor(P[:, 1] / bh)
        mortar = (_frac(P[:, 1] / bh) < 0.1) | (_frac(along / bw + 0.5 * (row % 2)) < 0.05)
        col[mortar] = p["color2"]
    elif tex == "windows":
        Pl = (P - p["c"]) @ p["R"]
        along = np.where(np.abs(Pl[:, 0]) / p["h"][0] > np.abs(Pl[:, 2]) / p["h"][2],
                         Pl[:, 2], Pl[:, 0])
        wx, wy = _frac(along / p["scale"]), _frac((P[:, 1] - 0.8) / (1.3 * p["scale"]))
        win = (wx > 0.25) & (wx < 0.75) & (wy > 0.3) & (wy < 0.8) & (P[:, 1] > 1.0)
        col[win] = p["color2"]
    elif tex == "road":
        x = P[:, 0] - scene["road_x"]
        hw = scene["road_w"] / 2
        road = np.abs(x) < hw
        col[~road] = p["grass"]
        dash = (np.abs(x) < 0.08) & (_frac(P[:, 2] / 6.0) < 0.5)
        edge = np.abs(np.abs(x) - (hw - 0.35)) < 0.07
        col[road & (dash | edge)] = (0.92, 0.92, 0.88)
    return col * shade[:, None]


def _hsv(rng: np.random.Generator, s: tuple[float, float] = (0.3, 1.0),
         v: tuple[float, float] = (0.3, 1.0)) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*s), rng.uniform(*v)))


def _surface(rng: np.random.Generator, textures: tuple[str, ...]) -> dict[str, Any]:
    tex = textures[rng.integers(len(textures))]
    d = rng.normal(size=3)
    return {"tex": tex, "color": _hsv(rng), "color2": _hsv(rng), "scale": rng.uniform(0.1, 0.4),
            "axis": int(rng.integers(2)), "dir": d / np.linalg.norm(d),
            "nscale": rng.uniform(1.0, 6.0), "namp": rng.uniform(0.05, 0.35)}


# ----------------------------------------------------------------------------------------------
# Scene layout
# ----------------------------------------------------------------------------------------------
def _camera(rng: np.random.Generator, h: int, w: int, kind: str) -> dict[str, Any]:
    f = 0.9 * w * rng.uniform(0.8, 1.2)
    cx, cy = w / 2 + rng.uniform(-0.03, 0.03) * w, h / 2 + rng.uniform(-0.03, 0.03) * h
    if kind == "objects":
        height, pitch, yaw = rng.uniform(1.0, 2.0), rng.uniform(0.05, 0.3), rng.uniform(-0.4, 0.4)
    else:
        height, pitch, yaw = rng.uniform(1.3, 1.8), rng.uniform(0.0, 0.12), rng.uniform(-0.2, 0.2)
    roll = rng.uniform(-0.04, 0.04)
    cp, sp = np.cos(pitch), np.sin(pitch)
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # tilts the optical axis down
    cr, sr = np.cos(roll), np.sin(roll)
    Rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    flip = np.diag([1.0, -1.0, 1.0])  # camera y points down, world y up
    R = _rot_y(yaw) @ Rx @ flip @ Rz
    K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])
    return {"K": K, "R": R, "C": np.array([0.0, height, 0.0]), "yaw": yaw}


def _place(cam: dict, lateral: float, ahead: float) -> tuple[float, float]:
    yaw = cam["yaw"]
    return (lateral * np.cos(yaw) + ahead * np.sin(yaw),
            -lateral * np.sin(yaw) + ahead * np.cos(yaw))


def _objects_layout(rng: np.random.Generator, cam: dict) -> tuple[list[dict], dict]:
    prims: list[dict] = []
    ground = {"kind": "plane", "y": 0.0, "cx": 0.0, "cz": 0.0, "radius": 30.0, "cls": 1,
              "caster": False, **_surface(rng, ("checker", "checker", "noise"))}
    ground["scale"] = rng.uniform(0.4, 1.5)
    prims.append(ground)
    for _ in range(int(rng.integers(0, 3))):
        x, z = _place(cam, rng.uniform(-6, 6), rng.uniform(11, 18))
        R = _rot_y(cam["yaw"] + rng.uniform(-0.5, 0.5))
        hgt = rng.uniform(1.5, 4.0)
        wall = {"kind": "box", "c": np.array([x, hgt, z]), "h": np.array([rng.uniform(3, 8), hgt,
                0.3]), "R": R, "cls": 2, "caster": True, **_surface(rng, ("bricks",))}
        wall["scale"] = rng.uniform(0.2, 0.4)
        wall["color2"] = wall["color"] * 0.5 + 0.4
        prims.append(wall)
    inst = 1
    for _ in range(int(rng.integers(2, 7))):
        cls = int(rng.integers(3, 7))
        x, z = _place(cam, rng.uniform(-3, 3), rng.uniform(3, 10))
        s = rng.uniform(0.3, 1.0)
        surf = _surface(rng, ("solid", "stripes", "noise"))
        if cls == 3:
            lift = rng.uniform(0, 0.6) if rng.random() < 0.3 else 0.0
            p = {"kind": "sphere", "c": np.array([x, s + lift, z]), "r": s}
        elif cls == 4:
            hy = s * rng.uniform(0.5, 1.5)
            p = {"kind": "box", "c": np.array([x, hy, z]),
                 "h": np.array([s, hy, s * rng.uniform(0.5, 1.5)]),
                 "R": _rot_y(rng.uniform(0, np.pi))}
        elif cls == 5:
            p = {"kind": "cylinder", "cx": x, "cz": z, "r": s, "y0": 0.0,
                 "y1": 2 * s * rng.uniform(0.7, 1.5)}
        else:
            p = {"kind": "cone", "cx": x, "cz": z, "r": s, "y0": 0.0,
                 "y1": 2 * s * rng.uniform(0.8, 1.8)}
        p.update(cls=cls, inst=inst, caster=True, **surf)
        prims.append(p)
        inst += 1
    return prims, {}


def _road_layout(rng: np.random.Generator, cam: dict) -> tuple[list[dict], dict]:
    road_w = rng.uniform(5.5, 9.0)
    road_x = rng.uniform(-0.35, 0.35) * road_w
    info = {"road_x": road_x, "road_w": road_w}
    gray = rng.uniform(0.25, 0.45)
    ground = {"kind": "plane", "y": 0.0, "cx": 0.0, "cz": 0.0, "radius": 80.0, "cls": 1,
              "caster": False, **_surface(rng, ("road",))}
    ground.update(color=np.array([gray, gray, gray * rng.uniform(0.95, 1.1)]),
                  grass=_hsv(rng, (0.4, 0.8), (0.25, 0.5)) * np.array([0.6, 1.0, 0.5]),
                  nscale=rng.uniform(2, 6), namp=rng.uniform(0.1, 0.3))
    prims: list[dict] = [ground]
    kerb_h = rng.uniform(0.1, 0.2)
    sw_w = rng.uniform(1.5, 3.5)
    inst = 1
    for side in (-1, 1):
        edge = road_x + side * road_w / 2
        cx = edge + side * sw_w / 2
        sw = {"kind": "box", "c": np.array([cx, kerb_h / 2, 37.5]),
              "h": np.array([sw_w / 2, kerb_h / 2, 42.5]), "R": np.eye(3), "cls": 2,
              "caster": False,
              **_surface(rng, ("checker", "noise"))}
        sw["color"] = np.full(3, rng.uniform(0.45, 0.7))
        sw["color2"] = sw["color"] * rng.uniform(0.8, 0.95)
        sw["scale"] = rng.uniform(0.4, 0.8)
        prims.append(sw)
        z = rng.uniform(-5, 5)
        while z < 75:
            length = rng.uniform(6, 16)
            if rng.random() < 0.8:
                hgt = rng.uniform(3, 12)
                setback = rng.uniform(0, 3)
                depth = rng.uniform(4, 10)
                bx = edge + side * (sw_w + setback + depth / 2)
                b = {"kind": "box", "c": np.array([bx, hgt, z + length / 2]),
                     "h": np.array([depth / 2, hgt, length / 2]), "R": np.eye(3), "cls": 3,
                     "inst": inst, "caster": True, **_surface(rng, ("windows",))}
                b["color"] = _hsv(rng, (0.0, 0.4), (0.35, 0.85))
                b["color2"] = _hsv(rng, (0.1, 0.5), (0.05, 0.3))
                b["scale"] = rng.uniform(1.2, 2.2)
                prims.append(b)
                inst += 1
            z += length + rng.uniform(0, 4)
        for _ in range(int(rng.integers(0, 4))):  # trees on the sidewalk
            tz, tx = rng.uniform(4, 40), edge + side * rng.uniform(0.5, sw_w - 0.3)
            th = rng.uniform(1.5, 3.0)
            surf = _surface(rng, ("noise",))
            surf["color"] = np.array([0.35, 0.25, 0.15]) * rng.uniform(0.7, 1.2)
            prims.append({"kind": "cylinder", "cx": tx, "cz": tz, "r": rng.uniform(0.1, 0.2),
                          "y0": 0.0, "y1": th, "cls": 5, "inst": inst, "caster": True, **surf})
            crown = _surface(rng, ("noise",))
            crown.update(color=_hsv(rng, (0.5, 0.9), (0.25, 0.6)) * np.array([0.5, 1.0, 0.4]),
                         nscale=rng.uniform(4, 9), namp=0.4)
            r = rng.uniform(0.8, 1.8)
            prims.append({"kind": "sphere", "c": np.array([tx, th + 0.6 * r, tz]), "r": r,
                          "cls": 5, "inst": inst, "caster": True, **crown})
            inst += 1
        for _ in range(int(rng.integers(0, 3))):  # poles
            surf = _surface(rng, ("solid",))
            surf["color"] = np.full(3, rng.uniform(0.3, 0.7))
            prims.append({"kind": "cylinder", "cx": edge + side * rng.uniform(0.2, 0.6),
                          "cz": rng.uniform(3, 40), "r": rng.uniform(0.05, 0.1), "y0": 0.0,
                          "y1": rng.uniform(3, 6), "cls": 6, "inst": inst, "caster": True,
                          **surf})
            inst += 1
    for _ in range(int(rng.integers(0, 5))):  # cars
        lane = rng.choice([-1, 1])
        cx = road_x + lane * road_w / 4 + rng.uniform(-0.4, 0.4)
        cz = rng.uniform(5, 45)
        R = _rot_y(rng.uniform(-0.1, 0.1))
        body = _surface(rng, ("solid", "noise"))
        prims.append({"kind": "box", "c": np.array([cx, 0.65, cz]),
                      "h": np.array([0.85, 0.4, 2.0]) * rng.uniform(0.9, 1.15), "R": R,
                      "cls": 4, "inst": inst, "caster": True, **body})
        cabin = dict(body)
        cabin["color"] = body["color"] * 0.35
        prims.append({**cabin, "kind": "box", "c": np.array([cx, 1.3, cz - 0.2]),
                      "h": np.array([0.75, 0.28, 1.1]), "R": R, "cls": 4, "inst": inst,
                      "caster": True})
        inst += 1
    return prims, info


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------
def render_scene(rng: np.random.Generator, size: tuple[int, int] = (96, 128),
                 kind: str = "objects") -> dict[str, np.ndarray]:
    """Render one scene of ``kind`` ("objects" or "road") at ``size`` = (H, W).

    Returns a dict: ``image`` (H, W, 3) uint8, ``depth`` (H, W) float32 planar z-depth in metres
    (0 = sky), ``classes`` (H, W) uint8 (:data:`OBJECT_CLASSES` or :data:`ROAD_CLASSES`),
    ``instance`` (H, W) int16 (0 = background/stuff), ``saliency`` (H, W) uint8 (largest visible
    instance), ``road`` (H, W) uint8 (road mode; zeros otherwise), and the camera ``K`` (3, 3),
    ``R`` (3, 3, camera-to-world) and ``C`` (3,) centre. The camera frame is x right, y down,
    z forward; the world frame is x right, y up (ground y = 0), z forward, which is left-handed,
    so ``R`` is orthonormal with det -1. A world point is ``C + depth * R @ K^-1 [u+.5, v+.5, 1]``.
    """
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; expected one of {SCENE_KINDS}")
    h, w = size
    cam = _camera(rng, h, w, kind)
    prims, info = (_objects_layout if kind == "objects" else _road_layout)(rng, cam)
    grid = rng.random((32, 32))

    vs, us = np.mgrid[0:h, 0:w]
    pix = np.stack([us.ravel() + 0.5, vs.ravel() + 0.5, np.ones(h * w)], axis=1)
    d_cam = pix @ np.linalg.inv(cam["K"]).T  # z component is exactly 1
    D = d_cam @ cam["R"].T
    O = cam["C"]

    best = np.full(h * w, np.inf)
    who = np.full(h * w, -1, dtype=np.int64)
    for i, p in enumerate(prims):
        t = _HIT[p["kind"]](p, O, D)
        closer = t < best
        best = np.where(closer, t, best)
        who = np.where(closer, i, who)

    hit = np.isfinite(best)
    depth = np.where(hit, best, 0.0)
    classes = np.zeros(h * w, dtype=np.uint8)
    instance = np.zeros(h * w, dtype=np.int16)
    color = np.zeros((h * w, 3))

    elev, azim = rng.uniform(0.35, 1.3), rng.uniform(0, 2 * np.pi)
    L = np.array([np.cos(elev) * np.sin(azim), np.sin(elev), np.cos(elev) * np.cos(azim)])
    sun = rng.uniform(0.6, 1.1) * (np.array([1.0, 0.95, 0.85]) + rng.uniform(-0.1, 0.1, 3))
    ambient = rng.uniform(0.2, 0.45) * (np.array([0.85, 0.9, 1.0]) + rng.uniform(-0.05, 0.05, 3))
    casters = [p for p in prims if p.get("caster")]

    P_all = O + depth[:, None] * D
    for i, p in enumerate(prims):
        m = who == i
        if not m.any():
            continue
        P = P_all[m]
        n = _normals(p, P)
        lam = np.clip(n @ L, 0.0, None)
        if not p.get("caster") or p["cls"] == 2:
            # Cast shadows on ground, road, sidewalks and walls.
            So = P + n * 1e-3
            lit = np.ones(len(P), dtype=bool)
            for q in casters:
                if q is p:
                    continue
                lit &= ~np.isfinite(_HIT[q["kind"]](q, So, np.broadcast_to(L, P.shape)))
            lam = lam * lit
        alb = _albedo(p, P, grid, info)
        color[m] = alb * (ambient + lam[:, None] * sun)
        cls = p["cls"]
        if kind == "road" and p["kind"] == "plane":
            on_road = np.abs(P[:, 0] - info["road_x"]) < info["road_w"] / 2
            cls = np.where(on_road, 1, 5).astype(np.uint8)
        classes[m] = cls
        instance[m] = p.get("inst", 0)

    sky_lo = _hsv(rng, (0.2, 0.6), (0.6, 1.0)) * np.array([0.7, 0.85, 1.0])
    sky_hi = _hsv(rng, (0.0, 0.3), (0.8, 1.0))
    elevation = D[:, 1] / np.linalg.norm(D, axis=1)
    a = np.clip(elevation * 2 + 0.3, 0, 1)[:, None]
    clouds = _fbm(D[:, 0] / np.maximum(D[:, 1], 0.05) * 2, D[:, 2] / np.maximum(D[:, 1], 0.05) * 2,
                  grid)
    sky = sky_lo * (1 - a) + sky_hi * a + rng.uniform(0, 0.25) * clouds[:, None]
    color[~hit] = sky[~hit]
    # Distance haze: colour fades towards the horizon colour with exp(-dist / fog).
    fog = rng.uniform(25, 120)
    dist = depth * np.linalg.norm(D, axis=1)
    tau = np.exp(-dist / fog)[:, None]
    color[hit] = color[hit] * tau[hit] + sky_lo * (1 - tau[hit])
    color = color + rng.normal(0, rng.uniform(0.005, 0.03), color.shape)
    image = (np.clip(color, 0, 1) * 255 + 0.5).astype(np.uint8).reshape(h, w, 3)

    inst_img = instance.reshape(h, w)
    sal = np.zeros((h, w), dtype=np.uint8)
    if kind == "objects":
        counts = np.bincount(inst_img.ravel().astype(np.int64))
        counts[0] = 0
        if counts.max(initial=0) > 0:
            sal = (inst_img == int(np.argmax(counts))).astype(np.uint8)
    else:
        cars = np.where(classes.reshape(h, w) == 4, inst_img, 0).ravel().astype(np.int64)
        counts = np.bincount(cars)
        counts[0] = 0
        if counts.max(initial=0) > 0:
            sal = (inst_img == int(np.argmax(counts))).astype(np.uint8)
    cls_img = classes.reshape(h, w)
    return {
        "image": image,
        "depth": depth.reshape(h, w).astype(np.float32),
        "classes": cls_img,
        "instance": inst_img,
        "saliency": sal,
        "road": (cls_img == 1).astype(np.uint8) if kind == "road" else np.zeros((h, w), np.uint8),
        "K": cam["K"].astype(np.float64),
        "R": cam["R"].astype(np.float64),
        "C": cam["C"].astype(np.float64),
    }


def generate_scenes(num_images: int, size: tuple[int, int] = (96, 128), seed: int = 0,
                    split: str = "train", kind: str = "objects",
                    progress: bool = False) -> dict[str, np.ndarray]:
    """Render ``num_images`` scenes and stack each field (image ``(N, H, W, 3)`` etc.).

    Scene ``i`` uses ``numpy.random.default_rng([seed, split_code, kind_code, i])``, so it is the
    same whatever ``num_images`` is, and train/val never share a scene.
    """
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; expected one of {tuple(_SPLIT_CODE)}")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    scenes = []
    it: Any = range(num_images)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"synthetic {kind}/{split}", unit="img")
    for i in it:
        rng = np.random.default_rng([seed, _SPLIT_CODE[split], SCENE_KINDS.index(kind), i])
        scenes.append(render_scene(rng, size, kind))
    return {k: np.stack([s[k] for s in scenes]) for k in scenes[0]}


def cache_dir() -> Path:
    """The bidense cache folder: ``$BIDENSE_CACHE`` or ``.cache/bidense`` (git-ignored)."""
    return Path(os.environ.get("BIDENSE_CACHE", ".cache/bidense"))


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_open(path) as f:
        np.savez_compressed(f, **arrays)


class SyntheticScenes(DenseDataset):
    """The embedded default dataset: procedural scenes generated once and cached as ``.npz``.

    ``task``: ``seg`` (class map), ``depth`` (metres, 0 = sky), ``saliency`` (largest visible
    object) or ``road`` (road mask). ``scene`` defaults to ``"road"`` for ``task="road"`` and
    ``"objects"`` otherwise; ``seg``/``depth`` on road scenes work too. ``num_images`` defaults to
    2000 (train) / 500 (val). The cache file lives under ``root`` (default
    ``$BIDENSE_CACHE/synthetic`` or ``.cache/bidense/synthetic``) and is named by scene kind,
    split, size, count, seed and generator version; it is written atomically.
    """

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train",
                 task: str = "seg", size: tuple[int, int] = (96, 128),
                 num_images: int | None = None, seed: int | None = 0,
                 transform: Callable[..., Any] | None = None, scene: str | None = None,
                 aug_seed: int | None = None, progress: bool = False) -> None:
        super().__init__(split, task, transform, aug_seed)
        if split not in _SPLIT_CODE:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(_SPLIT_CODE)}")
        self.scene = scene or ("road" if task == "road" else "objects")
        if self.scene not in SCENE_KINDS:
            raise ValueError(f"unknown scene {self.scene!r}; expected one of {SCENE_KINDS}")
        if task == "road" and self.scene != "road":
            raise ValueError("task='road' needs scene='road'")
        self.size = (int(size[0]), int(size[1]))
        self.num_images = int(num_images if num_images is not None
                              else DEFAULT_NUM_IMAGES.get(split, 500))
        self.data_seed = 0 if seed is None else int(seed)
        self.root = Path(root) if root is not None else cache_dir() / "synthetic"
        names = OBJECT_CLASSES if self.scene == "objects" else ROAD_CLASSES
        if task == "seg":
            self.num_classes, self.class_names = len(names), names
        else:
            self.num_classes = 1
            self.class_names = None
        h, w = self.size
        self.path = self.root / (f"{self.scene}_{split}_{h}x{w}_n{self.num_images}"
                                 f"_seed{self.data_seed}"
                                 f"_v{GENERATOR_VERSION}.npz")
        self.generation_seconds: float | None = None
        self.data = self._load_or_generate(progress)
        self.samples = [Sample(f"{self.scene}_{split}_{i:05d}", None, None, {"index": i})
                        for i in range(self.num_images)]
        self._require_samples(self.path)

    def _load_or_generate(self, progress: bool) -> dict[str, np.ndarray]:
        if self.path.exists():
            try:
                with np.load(self.path) as z:
                    data = {k: z[k] for k in z.files}
                if data["image"].shape[:3] == (self.num_images, *self.size):
                    return data
            except (OSError, ValueError, KeyError, EOFError):
                pass  # a corrupt or foreign cache file is regenerated
        t0 = time.perf_counter()
        data = generate_scenes(self.num_images, self.size, self.data_seed, self.split,
                               self.scene, progress)
        self.generation_seconds = time.perf_counter() - t0
        _atomic_savez(self.path, data)
        return data

    def read_image(self, sample: Sample) -> np.ndarray:  # noqa: D102
        return self.data["image"][sample.extra["index"]]

    def read_target(self, sample: Sample, image: np.ndarray) -> np.ndarray:  # noqa: D102
        i = sample.extra["index"]
        if self.task == "seg":
            return self.data["classes"][i].astype(np.int64)
        if self.task == "depth":
            return self.data["depth"][i]
        if self.task == "saliency":
            return self.data["saliency"][i].astype(np.float32)
        return self.data["road"][i].astype(np.float32)

    def camera(self, index: int) -> dict[str, np.ndarray]:
        """Intrinsics ``K``, camera-to-world rotation ``R`` and centre ``C`` of scene ``index``."""
        return {k: self.data[k][index] for k in ("K", "R", "C")}

