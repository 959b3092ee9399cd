"""Everyday objects from MuJoCo primitives: drawer, cabinet, microwave, toaster, bottle, jug, box.

Each object kind has a sampler of instance parameters (sizes, colours, texture pattern) and a
builder that writes its MJCF under a root body placed on the table. Object frame: origin at the
centre of the footprint on the table, +x pointing away from the robot (the front faces -x), z up.

Grasp sites follow the tool convention of ``spot_arm``: site x = approach direction (the hand
moves along +x into the grasp), site z = the direction the finger opens. A site sits at the
centre of the gripped part and its size is the part's half-width across the jaws; since the fixed
jaw's inner face is ``JAW_OFFSET`` below the tool axis, the hand holds a part of half-width ``w``
with the tool point ``w - JAW_OFFSET`` below the site along z. Parts look the same to the jaws
rolled 180 degrees about the approach, so either roll is a valid grasp.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

from t2a_sim.core.mjcf import SOLID, VISUAL, rgba, sub

KINDS = ("drawer", "cabinet", "microwave", "toaster", "bottle", "jug", "box")
ARTICULATED = ("drawer", "cabinet", "microwave", "toaster")
PATTERNS = ("flat", "checker", "gradient", "noise")

BAR_RADIUS = 0.012  # m; handle bars are as thick as the closed jaws' gap, centred on the tool
JAW_OFFSET = 0.012  # m; fixed jaw inner face below the tool axis
JAW_REACH = 0.025  # m; jaw tips beyond the tool point along the approach
OBJ_FRICTION = (1.0, 0.005, 0.0001)
LEVER_UP = 0.35  # rad; the toaster lever's built-in upward tilt at q = 0


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """Names in the compiled model that tasks and the expert need."""

    kind: str
    root: str  # body placed on the table (static for articulated kinds, free for the others)
    part: str  # body the task moves: drawer tray, door, lever, or the free object itself
    joint: str  # joint that moves ``part`` (slide, hinge, or free)
    sites: dict[str, str]  # role ("handle", "push", "top") -> site name
    half_extent: tuple[float, float]  # footprint half-size in x, y (m), for placing distractors
    height: float  # m


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def random_colour(rng: np.random.Generator, sat=(0.3, 0.9), val=(0.35, 0.95)) -> tuple:
    """An rgb triple with a random hue."""
    return _hsv(rng.uniform(), rng.uniform(*sat), rng.uniform(*val))


def add_material(asset: ET.Element, name: str, rgb, pattern: str, rng: np.random.Generator) -> str:
    """A material with a procedural texture (``PATTERNS``) in colour ``rgb``; returns its name."""
    rgb = np.asarray(rgb, dtype=float)
    other = np.clip(rgb * rng.uniform(0.55, 0.85), 0, 1)
    tex = {"name": f"{name}_tex", "type": "cube", "width": 64, "height": 64}
    if pattern == "flat":
        sub(asset, "texture", tex, builtin="flat", rgb1=rgb, rgb2=rgb)
    elif pattern == "checker":
        sub(asset, "texture", tex, builtin="checker", rgb1=rgb, rgb2=other)
    elif pattern == "gradient":
        sub(asset, "texture", tex, builtin="gradient", rgb1=rgb, rgb2=other)
    elif pattern == "noise":
        sub(
            asset,
            "texture",
            tex,
            builtin="flat",
            rgb1=rgb,
            rgb2=rgb,
            mark="random",
            random=0.12,
            markrgb=other,
        )
    else:
        raise ValueError(f"texture pattern {pattern!r} unknown, expected one of {PATTERNS}")
    repeat = (4, 4) if pattern == "checker" else (1, 1)
    sub(asset, "material", name=name, texture=f"{name}_tex", texrepeat=repeat, specular=0.2)
    return name


def sample_instance(kind: str, rng: np.random.Generator) -> dict[str, Any]:
    """Random sizes (m), colours and texture pattern of one instance of ``kind``."""
    u = rng.uniform
    common = {
        "colour": random_colour(rng),
        "accent": random_colour(rng, sat=(0.0, 0.3), val=(0.1, 0.9)),
        "pattern": str(rng.choice(PATTERNS)),
    }
    if kind == "drawer":
        size = {"W": u(0.28, 0.40), "D": u(0.22, 0.30), "H": u(0.14, 0.22)}
    elif kind == "cabinet":
        size = {"W": u(0.26, 0.34), "D": u(0.24, 0.30), "H": u(0.30, 0.40)}
        size["side"] = float(rng.choice([-1.0, 1.0]))
    elif kind == "microwave":
        size = {"W": u(0.40, 0.48), "D": u(0.28, 0.34), "H": u(0.22, 0.28)}
    elif kind == "toaster":
        size = {"W": u(0.22, 0.28), "D": u(0.13, 0.17), "H": u(0.15, 0.19), "L": u(0.06, 0.075)}
    elif kind == "bottle":
        size = {"r": u(0.028, 0.038), "h": u(0.16, 0.24), "mass": u(0.2, 0.5)}
    elif kind == "jug":
        size = {"r": u(0.05, 0.065), "h": u(0.15, 0.2), "mass": u(0.3, 0.6)}
    elif kind == "box":
        size = {"sx": u(0.06, 0.09), "sy": u(0.06, 0.085), "sz": u(0.065, 0.10)}
        size["mass"] = u(0.15, 0.4)
    else:
        raise ValueError(f"object kind {kind!r} unknown, expected one of {KINDS}")
    return {**size, **common}


def _site(body: ET.Element, name: str, pos, x_axis, z_axis, half_width: float) -> None:
    """A grasp site at the centre of the gripped part; its size is the part's half-width
    across the jaws (m), which the grasp logic and the expert read back from the model."""
    x = np.asarray(x_axis, float)
    z = np.asarray(z_axis, float)
    y = np.cross(z, x)
    sub(
        body,
        "site",
        name=name,
        pos=pos,
        xyaxes=(*x, *y),
        size=(half_width,),
        rgba=(0, 1, 0, 0),
        group=5,
    )


def _box(body: ET.Element, center, half, **kw) -> None:
    sub(body, "geom", SOLID, type="box", pos=center, size=half, friction=OBJ_FRICTION, **kw)


def _carcass(body: ET.Element, W: float, D: float, H: float, mat: str, t: float = 0.012) -> None:
    """An open-front box (top, bottom, sides, back) of outer size D x W x H."""
    _box(body, (0, 0, t / 2), (D / 2, W / 2, t / 2), material=mat)
    _box(body, (0, 0, H - t / 2), (D / 2, W / 2, t / 2), material=mat)
    for s in (-1, 1):
        _box(body, (0, s * (W / 2 - t / 2), H / 2), (D / 2, t / 2, H / 2 - t), material=mat)
    _box(body, (D / 2 - t / 2, 0, H / 2), (t / 2, W / 2 - t, H / 2 - t), material=mat)


def _bar(body: ET.Element, p0, p1, rgb, posts_to: float) -> None:
    """A handle bar from p0 to p1, with two posts back to the face at x = ``posts_to``."""
    sub(
        body,
        "geom",
        SOLID,
        type="capsule",
        fromto=(*p0, *p1),
        size=(BAR_RADIUS,),
        rgba=rgba(rgb),
        friction=(1.5, 0.01, 0.001),
    )
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    for a in (0.15, 0.85):
        p = p0 + a * (p1 - p0)
        sub(
            body,
            "geom",
            VISUAL,
            type="capsule",
            fromto=(*p, posts_to, p[1], p[2]),
            size=(0.006,),
            rgba=rgba(rgb),
        )


def build_drawer(root, asset, name, p, rng) -> ObjectInfo:
    """A chest with one drawer on a slide joint (q = how far it is pulled out, m)."""
    W, D, H = p["W"], p["D"], p["H"]
    mat = add_material(asset, f"{name}_mat", p["colour"], p["pattern"], rng)
    _carcass(root, W, D, H, mat)
    tray = sub(root, "body", name=f"{name}_drawer")
    sub(
        tray,
        "joint",
        name=f"{name}_slide",
        type="slide",
        axis=(-1, 0, 0),
        range=(0, 0.75 * D),
        limited="true",
        damping=15.0,
        frictionloss=2.0,
        armature=0.5,
    )
    t, gap = 0.012, 0.003
    ph = H - 2 * t - 2 * gap  # front panel height
    pw = W - 2 * t - 2 * gap
    z0 = t + gap
    front = -D / 2
    _box(tray, (front + 0.0075, 0, z0 + ph / 2), (0.0075, pw / 2, ph / 2), material=mat)
    depth = D - 2 * t - 0.02
    sub(
        tray,
        "inertial",
        pos=(front + depth / 2, 0, z0 + ph / 3),
        mass=0.8,
        diaginertia=(0.01, 0.01, 0.01),
    )
    _box(tray, (front + depth / 2, 0, z0 + 0.004), (depth / 2, pw / 2 - 0.01, 0.004), material=mat)
    for s in (-1, 1):
        _box(
            tray,
            (front + depth / 2, s * (pw / 2 - 0.006), z0 + ph / 3),
            (depth / 2, 0.004, ph / 3),
            material=mat,
        )
    _box(tray, (front + depth, 0, z0 + ph / 3), (0.004, pw / 2 - 0.01, ph / 3), material=mat)
    standoff = 0.045
    hx, hz = front - standoff, z0 + ph / 2
    half_len = min(0.06, 0.35 * pw)
    _bar(tray, (hx, -half_len, hz), (hx, half_len, hz), p["accent"], front)
    _site(tray, f"{name}_handle", (hx, 0, hz), (1, 0, 0), (0, 0, 1), BAR_RADIUS)
    return ObjectInfo(
        "drawer",
        root.get("name"),
        f"{name}_drawer",
        f"{name}_slide",
        {"handle": f"{name}_handle"},
        (D / 2, W / 2),
        H,
    )


def _door_object(root, asset, name, p, rng, kind, door_frac, window) -> ObjectInfo:
    """A box with a door hinged on a vertical edge (q = opening angle, rad)."""
    W, D, H = p["W"], p["D"], p["H"]
    side = p.get("side", 1.0)  # +1: hinge on the +y edge (the robot's left)
    mat = add_material(asset, f"{name}_mat", p["colour"], p["pattern"], rng)
    _carcass(root, W, D, H, mat)
    t = 0.012
    if kind == "cabinet":
        _box(root, (0, 0, H / 2), (D / 2 - t, W / 2 - t, t / 2), material=mat)  # shelf
    front = -D / 2
    dw = W * door_frac  # door width
    if door_frac < 1.0:  # control panel beside the door
        pw = W - dw
        _box(
            root,
            (front + 0.005, -side * (W / 2 - pw / 2), H / 2),
            (0.005, pw / 2, H / 2),
            rgba=rgba(p["accent"]),
        )
        for k in range(3):
            sub(
                root,
                "geom",
                VISUAL,
                type="cylinder",
                size=(0.012, 0.004),
                zaxis=(1, 0, 0),
                pos=(front - 0.002, -side * (W / 2 - pw / 2), H * (0.7 - 0.15 * k)),
                rgba=(0.1, 0.1, 0.1, 1),
            )
    hinge_y = side * W / 2
    door = sub(root, "body", name=f"{name}_door", pos=(front - 0.0075, hinge_y, 0))
    sub(
        door,
        "joint",
        name=f"{name}_hinge",
        type="hinge",
        axis=(0, 0, -side),
        range=(0, 1.9),
        limited="true",
        damping=1.5,
        frictionloss=0.3,
        armature=0.05,
    )
    sub(door, "inertial", pos=(0, -side * dw / 2, H / 2), mass=0.6, diaginertia=(0.01, 0.01, 0.01))
    _box(
        door,
        (0, -side * (dw / 2 - 0.002), H / 2),
        (0.0075, dw / 2 - 0.002, H / 2 - 0.002),
        material=mat,
    )
    if window:
        sub(
            door,
            "geom",
            VISUAL,
            type="box",
            pos=(-0.008, -side * dw * 0.45, H / 2),
            size=(0.001, dw * 0.33, H * 0.33),
            rgba=(0.05, 0.07, 0.08, 1),
        )
    standoff = 0.045
    hx, hy = -0.0075 - standoff, -side * (dw - 0.045)
    hz0, hz1 = H * 0.32, H * 0.68
    _bar(door, (hx, hy, hz0), (hx, hy, hz1), p["accent"], -0.0075)
    _site(door, f"{name}_handle", (hx, hy, H / 2), (1, 0, 0), (0, 1, 0), BAR_RADIUS)
    return ObjectInfo(
        kind,
        root.get("name"),
        f"{name}_door",
        f"{name}_hinge",
        {"handle": f"{name}_handle"},
        (D / 2 + 0.01, W / 2),
        H,
    )


def build_cabinet(root, asset, name, p, rng) -> ObjectInfo:
    """A cupboard with a full-width door hinged on one side."""
    return _door_object(root, asset, name, p, rng, "cabinet", 1.0, window=False)


def build_microwave(root, asset, name, p, rng) -> ObjectInfo:
    """A microwave: door with a dark window over 70 % of the front, control panel beside it."""
    return _door_object(root, asset, name, {**p, "side": 1.0}, rng, "microwave", 0.7, window=True)


def build_toaster(root, asset, name, p, rng) -> ObjectInfo:
    """A toaster with a lever on its front that flips about a horizontal axis (q = angle, rad)."""
    W, D, H, L = p["W"], p["D"], p["H"], p["L"]
    mat = add_material(asset, f"{name}_mat", p["colour"], p["pattern"], rng)
    _box(root, (0, 0, H / 2), (D / 2, W / 2, H / 2), material=mat)
    for s in (-1, 1):
        sub(
            root,
            "geom",
            VISUAL,
            type="box",
            pos=(0, s * W * 0.18, H + 0.0005),
            size=(D * 0.35, 0.012, 0.001),
            rgba=(0.05, 0.05, 0.05, 1),
        )
    pivot_z = 0.6 * H
    lever = sub(root, "body", name=f"{name}_lever", pos=(-D / 2, W * 0.2, pivot_z))
    # q = 0 is "up": the arm is built raised by LEVER_UP and the knob level, so the hand meets
    # it straight on. Negative q presses it down (rotation about -y takes -x towards -z).
    sub(
        lever,
        "joint",
        name=f"{name}_flip",
        type="hinge",
        axis=(0, -1, 0),
        range=(-0.8, 0.05),
        limited="true",
        damping=0.3,
        frictionloss=0.15,
        armature=0.01,
    )
    knob = (-L * np.cos(LEVER_UP), 0.0, L * np.sin(LEVER_UP))
    sub(lever, "inertial", pos=knob, mass=0.05, diaginertia=(1e-4, 1e-4, 1e-4))
    sub(
        lever,
        "geom",
        VISUAL,
        type="capsule",
        fromto=(0, 0, 0, *knob),
        size=(0.006,),
        rgba=rgba(p["accent"]),
    )
    _box(lever, knob, (0.012, 0.022, 0.011), rgba=rgba(p["accent"]))
    _site(lever, f"{name}_handle", knob, (1, 0, 0), (0, 0, 1), 0.011)
    return ObjectInfo(
        "toaster",
        root.get("name"),
        f"{name}_lever",
        f"{name}_flip",
        {"handle": f"{name}_handle"},
        (D / 2 + L, W / 2),
        H,
    )


def build_bottle(root, asset, name, p, rng) -> ObjectInfo:
    """A bottle (free body) grasped from the robot's side with the jaws horizontal."""
    r, h = p["r"], p["h"]
    mat = add_material(asset, f"{name}_mat", p["colour"], p["pattern"], rng)
    sub(root, "freejoint", name=f"{name}_free")
    body_h = 0.72 * h
    sub(
        root,
        "geom",
        SOLID,
        type="cylinder",
        size=(r, body_h / 2),
        pos=(0, 0, body_h / 2),
        material=mat,
        mass=p["mass"],
        friction=OBJ_FRICTION,
        condim=4,
    )
    neck_h = h - body_h
    sub(
        root,
        "geom",
        SOLID,
        type="cylinder",
        size=(0.45 * r, neck_h / 2 - 0.006),
        pos=(0, 0, body_h + neck_h / 2 - 0.006),
        material=mat,
        mass=0.01,
    )
    sub(
        root,
        "geom",
        VISUAL,
        type="cylinder",
        size=(0.5 * r, 0.008),
        pos=(0, 0, h - 0.008),
        rgba=rgba(p["accent"]),
    )
    zg = 0.45 * body_h
    _site(root, f"{name}_handle", (0, 0, zg), (1, 0, 0), (0, 1, 0), r)
    return ObjectInfo(
        "bottle",
        root.get("name"),
        root.get("name"),
        f"{name}_free",
        {"handle": f"{name}_handle"},
        (r, r),
        h,
    )


def build_jug(root, asset, name, p, rng) -> ObjectInfo:
    """A jug (free body) with a vertical handle facing the robot."""
    r, h = p["r"], p["h"]
    mat = add_material(asset, f"{name}_mat", p["colour"], p["pattern"], rng)
    sub(root, "freejoint", name=f"{name}_free")
    sub(
        root,
        "geom",
        SOLID,
        type="cylinder",
        size=(r, h / 2),
        pos=(0, 0, h / 2),
        material=mat,
        mass=p["mass"],
        friction=OBJ_FRICTION,
        condim=4,
    )
    sub(
        root,
        "geom",
        VISUAL,
        type="box",
        pos=(r, 0, h - 0.01),
        size=(0.02, 0.012, 0.008),
        material=mat,
    )
    hx = -(r + 0.045)
    z0, z1 = 0.3 * h, 0.75 * h
    sub(
        root,
        "geom",
        SOLID,
        type="capsule",
        fromto=(hx, 0, z0, hx, 0, z1),
        size=(BAR_RADIUS,),
        rgba=rgba(p["accent"]),
        mass=0.02,
        friction=(1.5, 0.01, 0.001),
    )
    for z in (z0, z1):
        sub(
            root,
            "geom",
            VISUAL,
            type="capsule",
            fromto=(hx, 0, z, -r + 0.005, 0, z),
            size=(0.008,),
            rgba=rgba(p["accent"]),
        )
    _site(root, f"{name}_handle", (hx, 0, (z0 + z1) / 2), (1, 0, 0), (0, 1, 0), BAR_RADIUS)
    return ObjectInfo(
        "jug",
        root.get("name"),
        root.get("name"),
        f"{name}_free",
        {"handle": f"{name}_handle"},
        (r + 0.06, r),
        h,
    )


def build_box(root, asset, name, p, rng) -> ObjectInfo:
    """A box (free body): pushed from its robot-facing side or grasped from the top."""
    sx, sy, sz = p["sx"], p["sy"], p["sz"]
    mat = add_material(asset, f"{name}_mat", p["colour"], p["pattern"], rng)
    sub(root, "freejoint", name=f"{name}_free")
    sub(
        root,
        "geom",
        SOLID,
        type="box",
        size=(sx / 2, sy / 2, sz / 2),
        pos=(0, 0, sz / 2),
        material=mat,
        mass=p["mass"],
        friction=(0.6, 0.005, 0.0001),
        condim=4,
    )
    # Push: the closed jaws' tips touch the back face at mid height (capped so the fixed jaw
    # stays clear of the table).
    push_at = (-sx / 2 - JAW_REACH, 0, max(0.045, sz / 2))
    _site(root, f"{name}_push", push_at, (1, 0, 0), (0, 0, 1), 0.001)
    # Top grasp: hand pointing down, jaws across y, fingers 30 mm down the sides.
    _site(root, f"{name}_top", (0, 0, sz - 0.03), (0, 0, -1), (0, 1, 0), sy / 2)
    return ObjectInfo(
        "box",
        root.get("name"),
        root.get("name"),
        f"{name}_free",
        {"push": f"{name}_push", "top": f"{name}_top"},
        (sx / 2, sy / 2),
        sz,
    )


BUILDERS = {
    "drawer": build_drawer,
    "cabinet": build_cabinet,
    "microwave": build_microwave,
    "toaster": build_toaster,
    "bottle": build_bottle,
    "jug": build_jug,
    "box": build_box,
}


def build(kind: str, root: ET.Element, asset: ET.Element, p: dict, rng) -> ObjectInfo:
    """Write object ``kind`` with instance parameters ``p`` under ``root``; returns its names."""
    if kind not in BUILDERS:
        raise ValueError(f"object kind {kind!r} unknown, expected one of {KINDS}")
    return BUILDERS[kind](root, asset, root.get("name"), p, rng)


def add_distractor(parent: ET.Element, name: str, pos, rng: np.random.Generator) -> None:
    """A static primitive (box, cylinder, sphere or capsule) resting on the table at ``pos``."""
    kind = str(rng.choice(["box", "cylinder", "sphere", "capsule"]))
    colour = rgba(random_colour(rng))
    s = rng.uniform(0.02, 0.045)
    body = sub(parent, "body", name=name, pos=pos, euler=(0, 0, rng.uniform(0, 2 * np.pi)))
    if kind == "box":
        hz = rng.uniform(0.02, 0.06)
        sub(
            body,
            "geom",
            SOLID,
            type="box",
            size=(s, rng.uniform(0.02, 0.045), hz),
            pos=(0, 0, hz),
            rgba=colour,
        )
    elif kind == "cylinder":
        hz = rng.uniform(0.02, 0.08)
        sub(body, "geom", SOLID, type="cylinder", size=(s, hz), pos=(0, 0, hz), rgba=colour)
    elif kind == "sphere":
        sub(body, "geom", SOLID, type="sphere", size=(s,), pos=(0, 0, s), rgba=colour)
    else:
        sub(
            body,
            "geom",
            SOLID,
            type="capsule",
            size=(0.7 * s, 1.5 * s),
            pos=(0, 0, 0.7 * s),
            zaxis=(0, 1, 0),
            rgba=colour,
        )
