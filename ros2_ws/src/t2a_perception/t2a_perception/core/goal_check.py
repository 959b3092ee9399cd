"""Is a goal image one the arm may act on? Checked before any track is predicted.

The track model answers every pair of images with some tracks, so nonsense in (random noise,
another scene's photo, the live frame sent back) still gives "moving points" and a plan. This
module refuses such goals up front, each with a reason a person can act on. A goal is accepted
only if, in this order:

1. it is not mostly noise (at its own resolution: pixels whose colour jumps against both their
   right and their lower neighbour) and not blank (no contrast at all);
2. it shows the live scene: after the best small translation (the camera may have moved a few
   pixels), most pixels agree with ``I0`` in colour up to a tolerance and a global per-channel
   gain (exposure); a goal that is the live view re-framed (a larger shift, found by phase
   correlation, or a zoom, probed at ``probe_zooms`` and refined by ECC) is refused when that
   warp explains nearly all of it (``view_min_agree``, ``view_residual``). A goal whose object
   moved but that is also shifted is caught only when the static scene has enough structure to
   show the shift: in flat scenes a shift and an object's motion look alike;
3. it differs from ``I0``: the pixels that disagree (after a morphological opening that drops
   sensor noise and single-pixel edges) cover a meaningful share of the image;
4. ``I0`` has usable depth where the goal differs (the planner lifts the moving points with it).

Both images are compared at a small working width (``work_width``): the sim scenes are flat
coloured and give few keypoints, so the check is dense (per pixel) rather than feature based,
and it costs a few milliseconds whatever the goal's size.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from t2a_common.core.config import check, param


@dataclasses.dataclass(frozen=True)
class GoalCheckConfig:
    """Thresholds of :func:`check_goal`. Shares are fractions of the image's pixels."""

    enabled: bool = param(
        True, "set_goal refuses goals that fail the check (False: it only logs the verdict)"
    )
    work_width: int = param(160, "both images are compared at this width (px)")
    noise_jump: float = param(
        40.0, "colour step (max over channels, 0..255 levels) that counts as a noisy jump"
    )
    max_noise_share: float = param(
        0.3, "share of goal pixels jumping against both neighbours above which it is noise"
    )
    min_contrast: float = param(2.0, "grey-level std (0..255) below which an image is blank")
    max_shift_frac: float = param(
        0.02, "largest goal translation against I0 that is tolerated (share of the image width)"
    )
    view_residual: float = param(
        0.5,
        "a shift or zoom beyond the tolerance counts if it leaves at most this share of the "
        "disagreeing pixels (ratio)",
    )
    max_zoom: float = param(0.02, "largest tolerated goal zoom against I0 (fraction, 0.02 = 2%)")
    view_min_agree: float = param(
        0.985,
        "a shifted or zoomed view counts only if this share of its pixels agrees after the warp "
        "(a moving object is a shift or zoom of part of the image, never of all of it)",
    )
    probe_zooms: tuple[float, ...] = param(
        (0.9, 1.1), "zooms at which a zoomed crop of the live view is looked for (factors)"
    )
    agree_tol: float = param(
        12.0, "colour difference (max over channels, 0..255 levels) under which a pixel agrees"
    )
    max_gain: float = param(
        1.25, "largest per-channel exposure gain (and 1/gain) compensated between the images"
    )
    min_agree_share: float = param(
        0.6, "share of pixels that must agree with I0 for the goal to show the live scene"
    )
    min_change_share: float = param(
        0.002, "share of pixels that must differ from I0 for the goal to ask for a change"
    )
    min_depth_share: float = param(0.5, "share of the changed pixels that need valid depth at I0")

    def __post_init__(self) -> None:
        check(self.work_width >= 32, f"work_width must be >= 32 px, got {self.work_width}")
        check(0 < self.noise_jump <= 255, f"noise_jump must be in (0, 255], got {self.noise_jump}")
        for name in ("max_noise_share", "min_agree_share", "min_change_share", "min_depth_share"):
            value = getattr(self, name)
            check(0.0 <= value <= 1.0, f"{name} must be a share in [0, 1], got {value}")
        check(self.min_contrast >= 0, f"min_contrast must be >= 0, got {self.min_contrast}")
        check(
            0.0 <= self.max_shift_frac < 0.5,
            f"max_shift_frac must be in [0, 0.5), got {self.max_shift_frac}",
        )
        check(0 < self.agree_tol <= 255, f"agree_tol must be in (0, 255], got {self.agree_tol}")
        check(self.max_gain >= 1.0, f"max_gain must be >= 1, got {self.max_gain}")


@dataclasses.dataclass(frozen=True)
class GoalCheck:
    """Outcome of :func:`check_goal`: ``ok`` or the reason, and what was measured."""

    ok: bool
    reason: str  # '' when ok
    noise_share: float = math.nan  # share of goal pixels that are noisy jumps
    contrast: float = math.nan  # grey-level std of the goal (0..255)
    # (du, dv) in I0 pixels: I0's pixel (u, v) is compared with the goal's (u + du, v + dv)
    shift_px: tuple[float, float] = (0.0, 0.0)
    agree_share: float = math.nan  # share of pixels that agree with I0 after shift and gain
    change_share: float = math.nan  # share of pixels in the change region
    depth_share: float = math.nan  # share of the change region with valid depth at I0
    change_mask: np.ndarray | None = None  # (H, W) bool in I0 pixels, the change region

    def summary(self) -> str:
        """One line of the measurements, for logs."""
        return (
            f"noise {self.noise_share:.0%}, agree {self.agree_share:.0%}, change "
            f"{self.change_share:.1%}, depth at change {self.depth_share:.0%}, shift "
            f"({self.shift_px[0]:.1f}, {self.shift_px[1]:.1f}) px"
        )


def check_goal(
    image0: np.ndarray,
    depth0_m: np.ndarray | None,
    goal: np.ndarray,
    config: GoalCheckConfig | None = None,
) -> GoalCheck:
    """Whether ``goal`` is a goal for the scene in ``image0`` (see the module docstring).

    Args:
        image0: live frame ``I0``, ``(H, W, 3)`` uint8 RGB.
        depth0_m: ``(H, W)`` depth of ``I0`` in metres, NaN or <= 0 = none; None skips the
            depth test (e.g. an offline caller without depth).
        goal: goal image, ``(H', W', 3)`` uint8 RGB, any size (compared after resizing to I0's
            aspect-free working size, as the track model does).
        config: thresholds; the defaults when None.

    Returns:
        A :class:`GoalCheck`; ``ok`` False with ``reason`` on the first test that fails.

    Raises:
        ValueError: an input that is not an image of the stated type, or depth of another size.
    """
    cfg = config or GoalCheckConfig()
    _check_rgb("image0", image0)
    _check_rgb("goal", goal)
    h, w = image0.shape[:2]
    if depth0_m is not None and np.shape(depth0_m) != (h, w):
        raise ValueError(
            f"depth0_m has shape {np.shape(depth0_m)}, expected the image's ({h}, {w})"
        )

    noise = noise_share(goal, cfg.noise_jump)
    if noise > cfg.max_noise_share:
        return GoalCheck(
            False,
            f"goal image is mostly noise: {noise:.0%} of its pixels jump against both "
            f"neighbours (allowed {cfg.max_noise_share:.0%})",
            noise_share=noise,
        )
    ww = min(cfg.work_width, w)
    wh = max(8, round(h * ww / w))
    scale = w / ww  # I0 px per working px
    a = _resize(image0, ww, wh)  # (wh, ww, 3) float32
    b = _resize(goal, ww, wh)
    contrast = float(_grey(b).std())
    common: dict = {"noise_share": noise, "contrast": contrast}
    if contrast < cfg.min_contrast:
        return GoalCheck(
            False,
            f"goal image is blank: grey-level spread {contrast:.1f} (need {cfg.min_contrast:g})",
            **common,
        )
    if float(_grey(a).std()) < cfg.min_contrast:
        return GoalCheck(
            False, "the live camera image is blank (camera covered or dark?)", **common
        )

    b = b * _exposure_gain(a, b, cfg.max_gain)
    kernel = np.ones((3, 3), np.uint8)
    b_lo, b_hi = cv2.erode(b, kernel), cv2.dilate(b, kernel)
    radius = math.floor(cfg.max_shift_frac * ww)
    # The best tolerated shift by the share of the overlap (the border a shift loses is no
    # evidence against it).
    best = max(
        ((*_agreement(a, b_lo, b_hi, du, dv, cfg.agree_tol), (du, dv))
         for dv in range(-radius, radius + 1) for du in range(-radius, radius + 1)),
        key=lambda r: r[1],
    )  # fmt: skip
    agree, _, bad, shift = best
    common.update(agree_share=agree, shift_px=(shift[0] * scale, shift[1] * scale))
    if agree < cfg.min_agree_share:
        return GoalCheck(
            False,
            f"goal image does not show the live scene: {agree:.0%} of the pixels agree with "
            f"the camera image (need {cfg.min_agree_share:.0%})",
            **common,
        )
    # A goal that is the scene seen from elsewhere (a shifted or zoomed crop) agrees with I0
    # better after a warp than without: phase correlation and ECC propose warps, pixels decide.
    warp = _better_view(a, b, bad, radius, cfg)
    if warp is not None:
        (du, dv), zoom, far, near = warp
        return GoalCheck(
            False,
            f"goal image is the live scene seen from elsewhere: zoomed x{zoom:.2f} and shifted "
            f"by ({du * scale:.0f}, {dv * scale:.0f}) px against the live view (allowed "
            f"{cfg.max_shift_frac * w:.0f} px, x{1 - cfg.max_zoom:.2f}..x{1 + cfg.max_zoom:.2f});"
            f" {far:.0%} of the pixels it covers agree after that warp, {near:.0%} without; "
            "take the goal from the camera's current viewpoint",
            **common,
        )

    change = _change_region(bad)
    change_share = float(change.mean())
    mask = cv2.resize(change.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    common.update(change_share=change_share, change_mask=mask)
    if change_share < cfg.min_change_share:
        return GoalCheck(
            False,
            f"goal image shows no change to the live scene: {change_share:.2%} of the pixels "
            f"differ (need {cfg.min_change_share:.1%}); is it the current camera frame?",
            **common,
        )
    if depth0_m is not None:
        depth = np.asarray(depth0_m, dtype=np.float32)[mask]
        share = float((np.isfinite(depth) & (depth > 0)).mean()) if depth.size else 0.0
        common["depth_share"] = share
        if share < cfg.min_depth_share:
            return GoalCheck(
                False,
                f"no usable depth where the goal differs: {share:.0%} of the {int(mask.sum())} "
                f"changed pixels have depth in the camera frame (need {cfg.min_depth_share:.0%})",
                **common,
            )
    return GoalCheck(True, "", **common)


def noise_share(image: np.ndarray, jump: float = 40.0, max_rows: int = 256) -> float:
    """Share of pixels whose colour jumps by more than ``jump`` levels (max over channels)
    against both their right and their lower neighbour, measured at the image's own resolution
    (resizing first would average noise away) on at most ``max_rows`` evenly spaced rows."""
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        return 0.0
    rows = np.unique(np.linspace(0, h - 2, min(max_rows, h - 1)).round().astype(int))
    top = image[rows].astype(np.int16)  # (R, W, 3)
    below = image[rows + 1].astype(np.int16)
    right = np.abs(top[:, 1:] - top[:, :-1]).max(-1) > jump  # (R, W-1)
    down = np.abs(below[:, :-1] - top[:, :-1]).max(-1) > jump
    return float((right & down).mean())


def _better_view(
    a: np.ndarray, b: np.ndarray, bad_near: np.ndarray, radius: int, cfg: GoalCheckConfig
) -> tuple[tuple[float, float], float, float, float] | None:
    """A warp of ``b`` beyond the tolerated shift/zoom that explains the goal as a re-framed
    live view: after it, ``view_min_agree`` of the pixels agree with ``a`` and at most
    ``view_residual`` of the disagreement under the best tolerated shift (``bad_near``) is
    left, both counted on the pixels the warped goal covers. Returns ((du, dv) working px,
    zoom, agreeing share after the warp, agreeing share without), or None."""
    h, w = a.shape[:2]
    ga, gb = _grey(a), _grey(b)
    (du, dv), _ = cv2.phaseCorrelate(
        ga.astype(np.float64), gb.astype(np.float64), cv2.createHanningWindow((w, h), cv2.CV_64F)
    )
    candidates = [np.array([[1.0, 0.0, du], [0.0, 1.0, dv]], np.float32)]
    for zoom in cfg.probe_zooms:
        # A zoomed crop: phase-correlate against I0 resampled by the zoom about the centre.
        m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), 0.0, zoom)  # a -> a zoomed
        az = cv2.warpAffine(ga, m, (w, h), flags=cv2.INTER_LINEAR)
        (zu, zv), _ = cv2.phaseCorrelate(
            az.astype(np.float64), gb.astype(np.float64),
            cv2.createHanningWindow((w, h), cv2.CV_64F),
        )  # fmt: skip
        # goal(x) = az(x - t) = a(M^-1 (x - t)), so the goal shows I0's pixel x at M x + t.
        m[:, 2] += (zu, zv)
        warp = m.astype(np.float32)
        try:  # refine: the probe zoom is only near the true one
            _, fine = cv2.findTransformECC(
                ga, gb, warp.copy(), cv2.MOTION_AFFINE,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 1e-4), None, 3,
            )  # fmt: skip
            # Kept only near the probe: far from it ECC has locked onto a moving object.
            if abs(math.sqrt(abs(float(np.linalg.det(fine[:, :2])))) - zoom) < 0.05:
                warp = fine
        except cv2.error:
            pass  # did not converge: keep the probe
        candidates.append(warp)
    kernel = np.ones((3, 3), np.uint8)
    valid = np.ones((h, w), np.uint8)
    for warp in candidates:
        zoom = math.sqrt(abs(float(np.linalg.det(warp[:, :2]))))
        shift = (float(warp[0, 2]), float(warp[1, 2]))
        if max(abs(shift[0]), abs(shift[1])) <= radius + 0.5 and abs(zoom - 1) <= cfg.max_zoom:
            continue  # within tolerance: already covered by the shift search
        if max(abs(shift[0]), abs(shift[1])) > min(w, h) / 2 or not 0.5 < zoom < 2.0:
            continue
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        bw = cv2.warpAffine(b, warp, (w, h), flags=flags)
        inside = cv2.warpAffine(valid, warp, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
        inside = cv2.erode(inside, kernel) > 0
        if inside.mean() < 0.75:
            continue  # too little of I0 left to compare
        lo, hi = cv2.erode(bw, kernel), cv2.dilate(bw, kernel)
        bad = ((a < lo - cfg.agree_tol) | (a > hi + cfg.agree_tol)).any(-1)
        far = 1.0 - float(bad[inside].mean())
        near = 1.0 - float(bad_near[inside].mean())
        if far >= cfg.view_min_agree and 1.0 - far <= cfg.view_residual * (1.0 - near):
            return shift, zoom, far, near
    return None


def _exposure_gain(a: np.ndarray, b: np.ndarray, max_gain: float) -> np.ndarray:
    """(3,) per-channel gain that brings ``b`` to ``a``'s exposure: the median ratio over pixels
    bright enough to carry one (the change region is a minority, so the median ignores it),
    clamped to ``[1/max_gain, max_gain]``."""
    gain = np.ones(3, np.float32)
    for c in range(3):
        sel = (a[..., c] > 20) & (b[..., c] > 20)
        if sel.sum() > 16:
            ratio = float(np.median(a[..., c][sel] / b[..., c][sel]))
            gain[c] = min(max(ratio, 1.0 / max_gain), max_gain)
    return gain


def _agreement(
    a: np.ndarray, b_lo: np.ndarray, b_hi: np.ndarray, du: int, dv: int, tol: float
) -> tuple[float, float, np.ndarray]:
    """Share of all pixels where ``b`` shifted by (du, dv) agrees with ``a`` (outside the
    overlap counts as not agreeing), the share within the overlap, and the (h, w) mask of
    disagreeing pixels (False outside the overlap).

    ``b_lo``/``b_hi`` are the per-channel min/max of ``b`` over each 3x3 neighbourhood: a pixel
    agrees if every channel of ``a`` lies within ``tol`` of that range, which forgives the
    sub-pixel misalignment along edges.
    """
    h, w = a.shape[:2]
    # b[v + dv, u + du] is compared with a[v, u]
    a_sl = (slice(max(0, -dv), h - max(0, dv)), slice(max(0, -du), w - max(0, du)))
    b_sl = (slice(max(0, dv), h - max(0, -dv)), slice(max(0, du), w - max(0, -du)))
    aa = a[a_sl]
    bad_overlap = ((aa < b_lo[b_sl] - tol) | (aa > b_hi[b_sl] + tol)).any(-1)
    bad = np.zeros((h, w), bool)
    bad[a_sl] = bad_overlap
    outside = h * w - bad_overlap.size
    n_bad = float(bad_overlap.sum())
    return 1.0 - (n_bad + outside) / (h * w), 1.0 - n_bad / bad_overlap.size, bad


def _change_region(bad: np.ndarray) -> np.ndarray:
    """The disagreeing pixels without isolated specks and thin lines (a 3x3 opening)."""
    kernel = np.ones((3, 3), np.uint8)
    return cv2.morphologyEx(bad.astype(np.uint8), cv2.MORPH_OPEN, kernel) > 0


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    shrinking = image.shape[1] > w or image.shape[0] > h
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (w, h), interpolation=interp).astype(np.float32)


def _grey(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], np.float32)


def _check_rgb(name: str, image: object) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"{name} must be a uint8 (H, W, 3) RGB array, got {_describe(image)}")
    if image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} has shape {image.shape}, expected (H, W, 3) with H, W >= 1")


def _describe(x: object) -> str:
    if isinstance(x, np.ndarray):
        return f"{x.dtype} {x.shape}"
    return type(x).__name__
