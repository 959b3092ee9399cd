"""Query points where things will move: a change mask from ``I0`` and the goal, and a sampler.

Training puts about half of ``P0`` on the moving part (``t2a_sim.core.tracks.sample_points``,
``object_fraction`` 0.5, privileged segmentation), but a uniform 20x20 grid puts only a few
percent of its points on a small object, and the planner fits the object's motion to those few.
At inference there is no segmentation, only ``I0`` and ``G``; what will move is what differs:

1. **raw change**: the pixels of ``I0`` that disagree with ``G`` after a small global alignment
   and exposure gain, without specks. This is :func:`goal_check.check_goal`'s change region (the
   goal validation computes it anyway; one implementation for both).
2. **which side of the change**: a changed pixel is either the moved object as it was in ``I0``
   (wanted: those are the points that move) or something that appears only in ``G``: the object
   at its new place, or the robot's own arm in the expert's goal frame, over background that
   stays put. Flat regions of ``I0`` (split at its colour edges) tell them apart: the object's
   ``I0`` region changes almost entirely (it leaves), while the background under an arrival
   changes only where the newcomer covers it. The same holds the other way round for ``G``'s
   regions. A changed pixel is kept where its ``I0`` region changed at least as much as its
   ``G`` region, and ``I0`` regions (up to ``max_region_share`` of the image) with at least
   ``take_region_share`` of their pixels kept are taken whole (this also fills the flat inside
   of a part whose colour does not change where it moves over itself).
3. optionally (``use_features``, off by default: on today's flat sim scenes the few matches
   land on the arm and distractors as often as on the part) **feature matches** where there is
   texture: SIFT keypoints of ``I0`` whose match in ``G`` moved by more than
   ``match_motion_px`` mark a small disk as changed; their ``I0`` region too.
4. cleanup: a closing, an opening that drops thin outlines (unless they are all there is), and
   components smaller than ``min_component_share`` dropped.

On 82 dev episodes (seeds 500-506, all four splits) the mask's pixels are 85% on the moving
part and cover 66% of it; 400 points then put ~208 on the part where the grid puts ~50.

:func:`sample_change_points` then draws ``inside_fraction`` of the points uniformly inside the
mask and the rest stratified over the whole image (a jittered grid), so the planner still sees
the static scene and the model still gets its usual spread. With an empty mask it returns the
plain grid. A user's region of interest is a plain mask for ``predictor.sample_query_points``
and overrides all of this (the node decides).

The same sampler serves inference (track_predictor node, ``training/residual_demos.py``,
evaluation) and can serve the training data path, which today samples ``P0`` with the
simulator's segmentation at the same 50% share (see ``training/track_data.py``).
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from t2a_common.core.config import check, param
from t2a_perception.core.goal_check import GoalCheck, GoalCheckConfig, check_goal


@dataclasses.dataclass(frozen=True)
class ChangeMaskConfig:
    """How :func:`change_mask` refines the raw change region. Shares are of the image's pixels."""

    edge_threshold: float = param(
        10.0, "colour step over 2 px (max over channels, 0..255) that splits flat regions"
    )
    take_region_share: float = param(
        0.2, "an I0 region with at least this share of I0-side changed pixels is taken whole"
    )
    max_region_share: float = param(
        0.15, "regions larger than this share of the image are never taken whole (background)"
    )
    use_features: bool = param(
        False,
        "add SIFT matches of I0 to G that moved (off: on the flat sim scenes they cost ~0.2 s "
        "and put fewer points on the part, 211 vs 217 of 400 on 82 dev episodes)",
    )
    match_motion_px: float = param(3.0, "a keypoint match moving more than this counts (px)")
    match_radius_px: int = param(6, "radius of the disk a moving keypoint marks (px)")
    close_px: int = param(
        5,
        "kernel size (px) of the closing that joins the mask's pieces and of the opening "
        "that then drops thin outlines",
    )
    min_component_share: float = param(
        0.0005, "mask components smaller than this share of the image are dropped"
    )

    def __post_init__(self) -> None:
        check(self.edge_threshold > 0, f"edge_threshold must be > 0, got {self.edge_threshold}")
        for name in ("take_region_share", "max_region_share", "min_component_share"):
            value = getattr(self, name)
            check(0.0 <= value <= 1.0, f"{name} must be a share in [0, 1], got {value}")
        check(
            self.match_motion_px >= 0, f"match_motion_px must be >= 0, got {self.match_motion_px}"
        )
        check(
            self.match_radius_px >= 0, f"match_radius_px must be >= 0, got {self.match_radius_px}"
        )
        check(self.close_px >= 1, f"close_px must be >= 1, got {self.close_px}")


def change_mask(
    image0: np.ndarray,
    goal: np.ndarray,
    config: ChangeMaskConfig | None = None,
    goal_check: GoalCheck | None = None,
) -> np.ndarray:
    """``(H, W)`` bool in ``I0`` pixels: where ``image0`` shows something that will move.

    Args:
        image0: ``I0``, ``(H, W, 3)`` uint8 RGB.
        goal: goal image, ``(H', W', 3)`` uint8 RGB, any size.
        config: refinement settings; the defaults when None.
        goal_check: the goal validation's result for this pair, if the caller has it (its
            change region is reused instead of computed again).

    Returns:
        The mask; all False when the goal check finds no usable change region (e.g. a goal of
        another scene), in which case samplers fall back to the grid.
    """
    cfg = config or ChangeMaskConfig()
    if goal_check is None:
        goal_check = check_goal(image0, None, goal, GoalCheckConfig(enabled=False))
    h, w = image0.shape[:2]
    raw = goal_check.change_mask
    if raw is None or not raw.any():
        return np.zeros((h, w), bool)
    du, dv = goal_check.shift_px
    goal_al = _align(goal, w, h, du, dv)  # (H, W, 3) goal resampled onto I0's pixels
    labels0, n0 = _regions(image0, cfg.edge_threshold)
    labelsg, ng = _regions(goal_al, cfg.edge_threshold)
    frac0, size0 = _changed_share(labels0, n0, raw)
    fracg, _ = _changed_share(labelsg, ng, raw)

    keep = raw & (frac0[labels0] >= fracg[labelsg])  # the I0 side of the change
    kept, _ = _changed_share(labels0, n0, keep)
    whole = (kept >= cfg.take_region_share) & (size0 <= cfg.max_region_share * h * w)
    whole[0] = False  # label 0 = edge pixels, not a region
    keep |= whole[labels0]
    if cfg.use_features:
        moved = _moving_keypoints(image0, goal_al, cfg.match_motion_px)
        for u, v in moved:
            cv2.circle(keep.view(np.uint8), (int(u), int(v)), cfg.match_radius_px, 1, -1)
        if len(moved):
            hit = np.unique(labels0[moved[:, 1].astype(int), moved[:, 0].astype(int)])
            hit = hit[(hit > 0) & (size0[hit] <= cfg.max_region_share * h * w)]
            keep |= np.isin(labels0, hit)

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (cfg.close_px, cfg.close_px))
    keep = cv2.morphologyEx(keep.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    # Thin outlines (the arm's edges against the wall) go, unless they are all there is (a
    # part that moves over itself changes only along its edges).
    opened = cv2.morphologyEx(keep, cv2.MORPH_OPEN, kernel)
    if opened.sum() >= 0.3 * keep.sum():
        keep = opened
    _, comp, stats, _ = cv2.connectedComponentsWithStats(keep, connectivity=8)
    big = stats[:, cv2.CC_STAT_AREA] >= max(1.0, cfg.min_component_share * h * w)
    big[0] = False
    return big[comp]


def sample_change_points(
    height: int,
    width: int,
    num_points: int,
    mask: np.ndarray | None,
    inside_fraction: float = 0.55,
    seed: int | None = 0,
) -> np.ndarray:
    """``(num_points, 2)`` float32 pixel ``(u, v)``: ``inside_fraction`` of them inside ``mask``.

    The inside points are drawn uniformly over the mask's pixels (jittered within the pixel);
    the others on a jittered grid over the whole image (one point per cell of the smallest grid
    with enough cells, cells chosen at random), so the static scene stays covered. With no mask
    or an empty one, the plain centred grid of ``predictor.sample_query_points`` when
    ``num_points`` is square, else the jittered grid. The same seed gives the same points.

    Raises:
        ValueError: bad sizes, a fraction outside [0, 1], or a mask of the wrong shape.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if not 0.0 <= inside_fraction <= 1.0:
        raise ValueError(f"inside_fraction must be in [0, 1], got {inside_fraction}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != (height, width):
            raise ValueError(
                f"mask must be bool ({height}, {width}), got {mask.dtype} {mask.shape}"
            )
    rng = np.random.default_rng(seed)
    if mask is None or not mask.any():
        side = math.isqrt(num_points)
        if side * side == num_points:
            return _grid(height, width, side, side)
        return _stratified(height, width, num_points, rng)
    n_in = round(num_points * inside_fraction)
    rows, cols = np.nonzero(mask)
    pick = rng.choice(len(rows), size=n_in, replace=len(rows) < n_in)
    inside = np.stack([cols[pick], rows[pick]], axis=-1) + rng.uniform(-0.5, 0.5, (n_in, 2))
    outside = _stratified(height, width, num_points - n_in, rng)
    return np.concatenate([inside.astype(np.float32), outside]).reshape(-1, 2)


# -------------------------------------------------------------------------------------------
# Helpers
# -------------------------------------------------------------------------------------------


def _grid(height: int, width: int, nu: int, nv: int) -> np.ndarray:
    u = (np.arange(nu) + 0.5) * width / nu - 0.5
    v = (np.arange(nv) + 0.5) * height / nv - 0.5
    return np.stack(np.meshgrid(u, v, indexing="xy"), axis=-1).reshape(-1, 2).astype(np.float32)


def _stratified(height: int, width: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points, one in each of ``n`` random cells of a grid of about square cells."""
    if n == 0:
        return np.zeros((0, 2), np.float32)
    nu = max(1, math.ceil(math.sqrt(n * width / height)))
    nv = max(1, math.ceil(n / nu))
    cells = rng.choice(nu * nv, size=n, replace=False)
    cv, cu = np.divmod(cells, nu)
    u = (cu + rng.uniform(0, 1, n)) * width / nu - 0.5
    v = (cv + rng.uniform(0, 1, n)) * height / nv - 0.5
    return np.stack([u, v], axis=-1).astype(np.float32)


def _align(goal: np.ndarray, w: int, h: int, du: float, dv: float) -> np.ndarray:
    """The goal resized to ``w x h`` and moved so that ``out[v, u] = goal[v + dv, u + du]``."""
    if goal.shape[:2] != (h, w):
        shrinking = goal.shape[0] > h or goal.shape[1] > w
        interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        goal = cv2.resize(goal, (w, h), interpolation=interp)
    if du == 0 and dv == 0:
        return goal
    M = np.float32([[1, 0, -du], [0, 1, -dv]])
    return cv2.warpAffine(goal, M, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def _regions(image: np.ndarray, edge_threshold: float) -> tuple[np.ndarray, int]:
    """Flat-colour regions: ``(H, W)`` int32 labels (0 = edge pixel) and the label count.

    Edges are colour steps across two pixels (a median filter first drops sensor noise but keeps
    steps); shading gradients stay inside a region.
    """
    img = cv2.medianBlur(image, 3).astype(np.int16)
    step = np.zeros(img.shape[:2], np.int16)
    step[:, 1:-1] = np.abs(img[:, 2:] - img[:, :-2]).max(-1)
    step[1:-1] = np.maximum(step[1:-1], np.abs(img[2:] - img[:-2]).max(-1))
    n, labels = cv2.connectedComponents((step < edge_threshold).astype(np.uint8), connectivity=4)
    return labels.astype(np.int32), int(n)


def _changed_share(
    labels: np.ndarray, n: int, changed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per label: share of its pixels in ``changed`` ``(n,)`` and its size ``(n,)``."""
    size = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    hits = np.bincount(labels.ravel(), weights=changed.ravel().astype(np.float64), minlength=n)
    return hits / np.maximum(size, 1.0), size


def _moving_keypoints(image0: np.ndarray, goal: np.ndarray, min_motion_px: float) -> np.ndarray:
    """``(M, 2)`` I0 pixel positions of SIFT keypoints whose (ratio-tested, mutual) match in
    the aligned goal moved by more than ``min_motion_px``."""
    sift = cv2.SIFT_create(nfeatures=500)
    g0 = cv2.cvtColor(image0, cv2.COLOR_RGB2GRAY)
    gg = cv2.cvtColor(goal, cv2.COLOR_RGB2GRAY)
    k0, d0 = sift.detectAndCompute(g0, None)
    kg, dg = sift.detectAndCompute(gg, None)
    if d0 is None or dg is None or len(k0) < 2 or len(kg) < 2:
        return np.zeros((0, 2), np.float32)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    fwd = matcher.knnMatch(d0, dg, k=2)
    back = {m.queryIdx: m.trainIdx for m in matcher.match(dg, d0)}
    out = []
    for pair in fwd:
        if len(pair) < 2:
            continue
        m, second = pair
        if m.distance > 0.75 * second.distance or back.get(m.trainIdx) != m.queryIdx:
            continue
        p0, pg = np.array(k0[m.queryIdx].pt), np.array(kg[m.trainIdx].pt)
        if np.linalg.norm(pg - p0) > min_motion_px:
            out.append(p0)
    h, w = image0.shape[:2]
    pts = np.array(out, np.float32).reshape(-1, 2)
    return np.clip(np.round(pts), 0, [w - 1, h - 1])
