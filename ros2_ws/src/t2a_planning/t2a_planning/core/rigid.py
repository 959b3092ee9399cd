"""Rigid object motion from 2D point tracks and the 3D points of the first frame (Algorithm 1).

For each step t the object transform ``T_cam_obj_t`` (camera frame, relative to step 0) is the one
whose projection ``K T_t P0`` best matches the tracks. The pipeline:

1. candidates: points with depth whose track moves more than a threshold at some step;
2. robust initialisation: 3-point (P3P) hypotheses drawn once and solved at every step in one
   batch, scored with a truncated quadratic (MSAC) on a subset of the candidates; per step the
   best, the best clearly different one, and the previous step's best (warm start) are refined on
   their own inliers and the best MSAC score wins (locally optimised RANSAC);
3. moving points: the candidates that this motion explains at most steps; background tracks that
   crossed the threshold by noise and outlier tracks drop out here;
4. every step is restarted from its neighbours' poses, so that one step stuck in a wrong basin
   (flat objects have two poses that project alike) is pulled out by the others;
5. final refinement: Gauss-Newton on se(3) with a Cauchy or Huber loss (IRLS) and Levenberg
   damping, all steps in one batch, optionally coupled by a smoothness term over the horizon.

Everything is batched over steps and hypotheses: the whole horizon costs a few milliseconds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from t2a_common.core.se3 import hat, so3_exp, so3_left_jacobian_inv, so3_log
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.p3p import p3p
from t2a_planning.core.status import Status

_BEHIND_PX = 1e4  # reprojection error charged to points that end up behind the camera (px)
# The first pass only has to sort candidates into inliers and outliers and pick the right basin;
# a few robust iterations from the starting poses get the errors well below the inlier threshold.
_FIRST_PASS_ITERATIONS = 2
_SETTLED = 1e-5  # relative robust-cost decrease at which a refinement counts as converged
_REFINE_POINTS = 96  # points used to compare starting poses; the final fit uses all
_DISTINCT_RAD = np.deg2rad(10.0)  # hypotheses further apart than this are different poses


@dataclasses.dataclass(frozen=True)
class MotionFit:
    """Object motion over the horizon and how well it explains the tracks.

    When ``status`` is not OK the per-step arrays are empty and ``message`` says why; ``candidates``
    and ``moving`` are still filled as far as the pipeline got, for diagnostics.
    """

    status: Status
    message: str
    T_cam_obj: np.ndarray  # (H+1, 4, 4) T_cam_obj_t, [0] = identity
    inlier_ratio: np.ndarray  # (H+1,) fraction of moving points within the inlier threshold
    reprojection_error_px: np.ndarray  # (H+1,) median error of the inliers, px
    candidates: np.ndarray  # (N,) bool: has depth and its track moves
    moving: np.ndarray  # (N,) bool: candidates explained by the object motion
    # [0, 1]: mean inlier ratio x fraction of candidates that move rigidly x 1 / (1 + (median
    # error / inlier threshold)^2) x min(1, moving points / (4 min_moving_points))
    confidence: float

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def moving_indices(self) -> np.ndarray:
        """(M,) indices of the points judged to move with the object."""
        return np.flatnonzero(self.moving)


def _failure(status: Status, message: str, n: int, candidates=None, moving=None) -> MotionFit:
    empty = np.zeros(n, dtype=bool)
    return MotionFit(
        status=status,
        message=message,
        T_cam_obj=np.zeros((0, 4, 4)),
        inlier_ratio=np.zeros(0),
        reprojection_error_px=np.zeros(0),
        candidates=empty if candidates is None else candidates,
        moving=empty if moving is None else moving,
        confidence=0.0,
    )


# ----------------------------------------------------------------------------------------------
# Residuals, robust loss, Gauss-Newton
# ----------------------------------------------------------------------------------------------


class _Camera:
    """Pinhole projection on points stored as (..., 3, M): the last axis stays contiguous."""

    def __init__(self, K: np.ndarray) -> None:
        self.fx, self.fy = float(K[0, 0]), float(K[1, 1])
        self.cx, self.cy = float(K[0, 2]), float(K[1, 2])

    def offsets(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., M, 2) observed pixels -> (cx - u, cy - v), each (..., M)."""
        return self.cx - obs[..., 0], self.cy - obs[..., 1]

    def residuals(self, R, t, PT, off_u, off_v):
        """Camera points Y (..., 3, M), pixel residuals ru, rv (..., M), front mask (..., M).

        R (..., 3, 3), t (..., 3), PT (3, M) the points at step 0, off_u / off_v from
        :meth:`offsets`, broadcastable to (..., M).
        """
        Y = R @ PT + t[..., :, None]
        z = Y[..., 2, :]
        front = z > 1e-6
        iz = 1.0 / np.where(front, z, 1.0)
        ru = self.fx * Y[..., 0, :] * iz + off_u
        rv = self.fy * Y[..., 1, :] * iz + off_v
        return Y, ru, rv, front


def _squared_errors(ru: np.ndarray, rv: np.ndarray, front: np.ndarray) -> np.ndarray:
    return np.where(front, ru * ru + rv * rv, _BEHIND_PX**2)  # (..., M)


def _robust(e2: np.ndarray, loss: str, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Loss rho(e) (with rho ~ e^2 / 2 near 0) and IRLS weight rho'(e) / e, from e^2."""
    if loss == "cauchy":
        s = e2 * (1.0 / (c * c))
        return (0.5 * c * c) * np.log1p(s), 1.0 / (1.0 + s)
    e = np.sqrt(e2)
    inside = e <= c
    return np.where(inside, 0.5 * e2, c * (e - 0.5 * c)), np.where(
        inside, 1.0, c / np.maximum(e, c)
    )


@dataclasses.dataclass
class _Refined:
    R: np.ndarray  # (H, 3, 3)
    t: np.ndarray  # (H, 3)
    e2: np.ndarray  # (H, M) squared reprojection errors at the solution, px^2
    information: np.ndarray  # (H, 6, 6) Gauss-Newton matrix at the solution (rot about pivot)
    cost: np.ndarray  # (H,) robust cost at the solution (coupled steps share the total)


def _jacobian_t(cam: _Camera, Y: np.ndarray, pivot: np.ndarray, front: np.ndarray) -> np.ndarray:
    """(H, 6, 2M) transposed d (u..., v...) / d (w, rho) for ``exp(w) (Y - pivot) + pivot + rho``.

    Y (H, 3, M) camera points, pivot (H, 3).
    """
    X, Yc = Y[:, 0], Y[:, 1]
    iz = 1.0 / np.where(front, Y[:, 2], 1.0)
    gux = cam.fx * iz  # du/dY = (gux, 0, guz)
    guz = -gux * X * iz
    gvy = cam.fy * iz  # dv/dY = (0, gvy, gvz)
    gvz = -gvy * Yc * iz
    D = Y - pivot[:, :, None]
    Dx, Dy, Dz = D[:, 0], D[:, 1], D[:, 2]
    H, M = X.shape
    Jt = np.zeros((H, 6, 2, M))
    # Rotation columns are D x g: the rotation moves a point by w x D.
    Jt[:, 0, 0] = Dy * guz
    Jt[:, 1, 0] = Dz * gux - Dx * guz
    Jt[:, 2, 0] = -Dy * gux
    Jt[:, 3, 0] = gux
    Jt[:, 5, 0] = guz
    Jt[:, 0, 1] = Dy * gvz - Dz * gvy
    Jt[:, 1, 1] = -Dx * gvz
    Jt[:, 2, 1] = Dx * gvy
    Jt[:, 4, 1] = gvy
    Jt[:, 5, 1] = gvz
    return Jt.reshape(H, 6, 2 * M)


def _second_difference(H: int) -> np.ndarray:
    """(H-1, H) rows x_{k+1} - 2 x_k + x_{k-1} over steps 1..H, with x_0 the identity."""
    D = np.zeros((H - 1, H))
    for k in range(H - 1):
        D[k, k + 1] = 1.0
        D[k, k] = -2.0
        if k > 0:
            D[k, k - 1] = 1.0
    return D


def _refine(
    cam: _Camera,
    R: np.ndarray,
    t: np.ndarray,
    P: np.ndarray,
    obs: np.ndarray,
    config: PlannerConfig,
    iterations: int,
    smoothness: float = 0.0,
    mask: np.ndarray | None = None,
    scale_px: float | None = None,
) -> _Refined:
    """Robust Levenberg-Marquardt (IRLS Gauss-Newton) on every step at once.

    R (H, 3, 3), t (H, 3): initial poses; P (M, 3): points at step 0; obs (H, M, 2): their tracks
    at steps 1..H; mask (H, M): residuals that count (default all); scale_px: robust scale
    (default ``config.robust_scale_px``). Each pose is perturbed as
    ``Y -> exp(w) (Y - c) + c + rho`` about the weighted centroid c of its points, which keeps
    rotation and translation apart in the normal equations.
    With ``smoothness`` > 0 the second differences of (rotation vector, translation) over the
    horizon are penalised and all steps are solved jointly.
    """
    H, M = obs.shape[:2]
    loss, scale = config.robust_loss, scale_px or config.robust_scale_px
    smooth = smoothness > 0.0 and H >= 2
    if smooth:
        # Pixel-like units: a rotation of 1 rad or a translation of one depth moves points by
        # about f px, and the weight is per point so it keeps its meaning for any point count.
        z_mean = float(np.median(P[:, 2]))
        f_mean = 0.5 * (cam.fx + cam.fy)
        unit = np.sqrt(smoothness * M) * f_mean * np.r_[np.ones(3), np.full(3, 1.0 / z_mean)]
        Dmat = _second_difference(H)
        DtD = Dmat.T @ Dmat  # (H, H)

    PT = np.ascontiguousarray(P.T)  # (3, M)
    off_u, off_v = cam.offsets(obs)  # (H, M) each

    def evaluate(R, t):
        Y, ru, rv, front = cam.residuals(R, t, PT, off_u, off_v)
        e2 = _squared_errors(ru, rv, front)
        rho, w = _robust(e2, loss, scale)
        if mask is not None:
            rho, w = rho * mask, w * mask
        cost = np.sum(rho, axis=1)  # (H,)
        phi = s = None
        if smooth:
            phi = so3_log(R)  # (H, 3)
            s = (Dmat @ np.concatenate([phi, t], axis=1)) * unit  # (H-1, 6)
            cost = np.full(H, cost.sum() + 0.5 * np.sum(s * s))  # steps are coupled
        return Y, np.concatenate([ru, rv], axis=1), front, e2, w * front, cost, (phi, s)

    Y, r, front, e2, w, cost, smooth_state = evaluate(R, t)
    lam = np.full(H, 1e-9)  # Gauss-Newton first: Marquardt damping stalls weak directions
    information = np.zeros((H, 6, 6))
    eye6 = np.eye(6)
    for _ in range(iterations):
        pivot = (Y @ w[:, :, None])[..., 0] / np.maximum(w.sum(axis=1), 1e-12)[:, None]  # (H, 3)
        Jt = _jacobian_t(cam, Y, pivot, front)  # (H, 6, 2M)
        Jw_t = Jt * np.concatenate([w, w], axis=1)[:, None, :]
        A = Jw_t @ np.swapaxes(Jt, 1, 2)  # (H, 6, 6)
        b = (Jw_t @ r[..., None])[..., 0]  # (H, 6)
        information = A
        if smooth:
            phi, s = smooth_state
            # Jacobian of (rotation vector, translation) w.r.t. the perturbation (w, rho), scaled
            # to pixel-like units; the smoothness residuals are D applied to those, step-wise.
            JU = np.zeros((H, 6, 6))
            JU[:, :3, :3] = so3_left_jacobian_inv(phi)
            JU[:, 3:, :3] = -hat(t - pivot)
            JU[:, 3:, 3:] = eye6[:3, :3]
            JU *= unit[None, :, None]
            big_A = (np.einsum("iab,jac->ibjc", JU, JU) * DtD[:, None, :, None]).reshape(
                6 * H, 6 * H
            )
            big_b = np.einsum("iab,ia->ib", JU, Dmat.T @ s).reshape(-1)
            blocks = big_A.reshape(H, 6, H, 6)
            steps = np.arange(H)
            blocks[steps, :, steps, :] += A
            big_b += b.reshape(-1)
            damp = big_A + lam[0] * np.diag(np.diag(big_A)) + 1e-12 * np.eye(6 * H)
            delta = -np.linalg.solve(damp, big_b).reshape(H, 6)
        else:
            diag = np.einsum("hii->hi", A)
            damp = A + (lam[:, None] * diag + 1e-12)[..., None] * eye6
            delta = -np.linalg.solve(damp, b[..., None])[..., 0]  # (H, 6)
        dR = so3_exp(delta[:, :3])
        R_new = dR @ R
        t_new = ((t - pivot)[:, None, :] @ np.swapaxes(dR, 1, 2))[:, 0] + pivot + delta[:, 3:]
        Y_n, r_n, front_n, e2_n, w_n, cost_n, smooth_n = evaluate(R_new, t_new)
        accept = cost_n <= cost * (1.0 + 1e-12)  # (H,)
        # Below this relative gain the pose moves far less than the noise allows to resolve.
        settled = accept & (cost - cost_n <= _SETTLED * cost)
        if np.all(accept):
            R, t, Y, r, front, e2, w, cost = R_new, t_new, Y_n, r_n, front_n, e2_n, w_n, cost_n
            smooth_state = smooth_n
        elif np.any(accept):
            a2, a3 = accept[:, None], accept[:, None, None]
            R, t = np.where(a3, R_new, R), np.where(a2, t_new, t)
            Y, r = np.where(a3, Y_n, Y), np.where(a2, r_n, r)
            front, e2, w = (
                np.where(a2, front_n, front),
                np.where(a2, e2_n, e2),
                np.where(a2, w_n, w),
            )
            cost = np.where(accept, cost_n, cost)
        lam = np.where(accept, np.maximum(lam * 0.1, 1e-12), np.maximum(lam * 10.0, 1e-4))
        step = np.max(np.abs(delta), axis=1)
        # A step below tolerance ends a step even when rejected: at convergence the cost
        # comparison is rounding noise.
        if np.all((step < config.tolerance) | settled | (lam > 1e6)):
            break
    return _Refined(R=R, t=t, e2=e2, information=information, cost=cost)


# ----------------------------------------------------------------------------------------------
# Robust initialisation
# ----------------------------------------------------------------------------------------------


def _sample_triplets(rng: np.random.Generator, M: int, B: int) -> np.ndarray:
    """(B, 3) index triplets without repeats inside a triplet."""
    i = rng.integers(0, M, size=B)
    j = rng.integers(0, M - 1, size=B)
    j = j + (j >= i)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    k = rng.integers(0, M - 2, size=B)
    k = k + (k >= lo)
    k = k + (k >= hi)
    return np.stack([i, j, k], axis=1)


def _initialise(
    cam: _Camera,
    K_inv: np.ndarray,
    P: np.ndarray,
    obs: np.ndarray,
    config: PlannerConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Starting poses per step from 3-point (P3P) hypotheses scored by MSAC on a point subset.

    P (M, 3) candidate points at step 0; obs (H, M, 2) their tracks at steps 1..H. The same
    triplets serve every step, since a good track is usually good over the whole horizon.
    Returns R (3, H, 3, 3), t (3, H, 3): per step the best hypothesis, the best one that differs
    from it by more than ``_DISTINCT_RAD`` (a flat object has two poses that project alike, and
    noise can rank the wrong one first), and the previous step's best (the warm start; identity
    before step 1). Missing hypotheses fall back to the best one, or to the identity.
    """
    H, M = obs.shape[:2]
    rng = np.random.default_rng(config.ransac_seed)
    triplets = _sample_triplets(rng, M, config.ransac_samples)  # (B, 3)
    S = config.ransac_score_points
    score_idx = rng.choice(M, S, replace=False) if M > S else np.arange(M)
    PT_s = np.ascontiguousarray(P[score_idx].T)  # (3, S)
    off_u, off_v = cam.offsets(obs[:, score_idx])  # (H, S) each
    thr2 = config.inlier_threshold_px**2

    uv1 = np.concatenate([obs[:, triplets], np.ones((H, *triplets.shape, 1))], -1)
    rays = uv1 @ K_inv.T
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)  # (H, B, 3, 3)
    R, t, ok = p3p(rays, P[triplets])  # (H, B, 4, 3, 3), (H, B, 4, 3), (H, B, 4)
    ok = ok.reshape(H, -1)  # (H, 4B)
    step_of = np.broadcast_to(np.arange(H)[:, None], ok.shape)[ok]  # (V,)
    R, t = R.reshape(H, -1, 3, 3)[ok], t.reshape(H, -1, 3)[ok]  # real solutions: (V, 3, 3), (V, 3)
    R = np.concatenate([R, np.eye(3)[None]])  # index V: the identity, for steps with no solution
    t = np.concatenate([t, np.zeros((1, 3))])

    _, ru, rv, front = cam.residuals(R[:-1], t[:-1], PT_s, off_u[step_of], off_v[step_of])
    score = np.sum(np.minimum(_squared_errors(ru, rv, front), thr2), axis=-1)  # (V,)
    slot = np.cumsum(ok, axis=1)[ok] - 1  # (V,) column of each hypothesis in its step's row
    start = np.r_[0, np.cumsum(ok.sum(axis=1))[:-1]]  # (H,) first hypothesis of each step

    def best_per_step(values: np.ndarray) -> np.ndarray:
        grid = np.full(ok.shape, np.inf)
        grid[step_of, slot] = values
        col = np.argmin(grid, axis=1)
        return np.where(np.isfinite(grid[np.arange(H), col]), start + col, len(R) - 1)  # (H,)

    best = best_per_step(score)
    # trace(R_a^T R_b) = 1 + 2 cos(angle between them)
    cos_to_best = (np.sum(R[:-1] * R[best][step_of], axis=(1, 2)) - 1.0) / 2.0
    second = best_per_step(np.where(cos_to_best < np.cos(_DISTINCT_RAD), score, np.inf))
    second = np.where(second == len(R) - 1, best, second)
    prev = np.r_[len(R) - 1, best[:-1]]
    pick = np.stack([best, second, prev])  # (3, H)
    return R[pick], t[pick]


def _subset(M: int, k: int) -> np.ndarray:
    """Indices of at most k of M points, spread evenly over the index range."""
    return np.arange(M) if M <= k else np.linspace(0, M - 1, k).astype(int)


def _first_pass(
    cam: _Camera, R0: np.ndarray, t0: np.ndarray, P: np.ndarray, obs: np.ndarray, config
) -> tuple[np.ndarray, np.ndarray]:
    """Locally optimised RANSAC: refine the starting poses on their inliers, keep the best.

    R0 (3, H, 3, 3), t0 (3, H, 3) from :func:`_initialise`. Each start is refined on the inliers
    of its own pose (at a lenient threshold): outlier tracks, even down-weighted by the robust
    loss, would otherwise drag the poorly constrained directions of the pose. Per step, the
    refined pose with the best MSAC score wins. A subset of the points is plenty here.
    Returns R (H, 3, 3), t (H, 3).
    """
    H = R0.shape[1]
    R_seed, t_seed = R0.reshape(3 * H, 3, 3), t0.reshape(3 * H, 3)
    sub = _subset(len(P), _REFINE_POINTS)
    P_s = P[sub]
    obs3 = np.tile(obs[:, sub], (3, 1, 1))  # (3H, S, 2)
    _, ru, rv, front = cam.residuals(R_seed, t_seed, P_s.T, *cam.offsets(obs3))
    lenient = _squared_errors(ru, rv, front) < (2.0 * config.inlier_threshold_px) ** 2
    seeds = _refine(cam, R_seed, t_seed, P_s, obs3, config, _FIRST_PASS_ITERATIONS, mask=lenient)
    msac = np.sum(np.minimum(seeds.e2, config.inlier_threshold_px**2), axis=1)  # (3H,)
    pick = np.argmin(msac.reshape(3, H), axis=0) * H + np.arange(H)  # (H,)
    return seeds.R[pick], seeds.t[pick]


def _propagate(
    cam: _Camera, R: np.ndarray, t: np.ndarray, P: np.ndarray, obs: np.ndarray, config
) -> tuple[np.ndarray, np.ndarray]:
    """Restart each step from its neighbours' poses and keep the lowest robust cost.

    A step whose own hypotheses all sat in a wrong basin gets pulled out by a neighbour that did
    not, since the object moves continuously. P (M, 3) and obs (H, M, 2) should be the points
    that follow the object (outlier tracks removed), so the costs compare like with like.
    """
    H = len(R)
    R_prev = np.concatenate([np.eye(3)[None], R[:-1]])
    t_prev = np.concatenate([np.zeros((1, 3)), t[:-1]])
    R_next = np.concatenate([R[1:], R[-1:]])
    t_next = np.concatenate([t[1:], t[-1:]])
    sub = _subset(len(P), _REFINE_POINTS)
    ref = _refine(
        cam,
        np.concatenate([R, R_prev, R_next]),
        np.concatenate([t, t_prev, t_next]),
        P[sub],
        np.tile(obs[:, sub], (3, 1, 1)),
        config,
        _FIRST_PASS_ITERATIONS,
        # Outliers are gone, so a wide loss is safe, and it converges from far in few steps.
        scale_px=4.0 * config.inlier_threshold_px,
    )
    pick = np.argmin(ref.cost.reshape(3, H), axis=0) * H + np.arange(H)
    return ref.R[pick], ref.t[pick]


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def _masked_median(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H,) median of each row of (H, M) ``values`` over ``mask`` (inf for an empty row)."""
    srt = np.sort(np.where(mask, values, np.inf), axis=1)
    n = mask.sum(axis=1)
    lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(srt, np.minimum(n // 2, srt.shape[1] - 1)[:, None], axis=1)[:, 0]
    return np.where(n > 0, 0.5 * (lo + hi), np.inf)


def _spread_ratio(points: np.ndarray) -> float:
    """Second over first principal extent of (K, 3) points; 0 for collinear points."""
    centred = points - points.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    return float(s[1] / s[0]) if s[0] > 0 else 0.0


def _condition(information: np.ndarray, depth: float) -> np.ndarray:
    """(H,) condition numbers of the pose information with translation in units of ``depth``."""
    S = np.r_[np.ones(3), np.full(3, depth)]
    A = information * S[:, None] * S[None, :]
    ev = np.linalg.eigvalsh(A)  # (H, 6) ascending
    return ev[:, -1] / np.maximum(ev[:, 0], 1e-300)


def estimate_object_motion(
    points_cam: np.ndarray,
    valid: np.ndarray,
    tracks_px: np.ndarray,
    K: np.ndarray,
    config: PlannerConfig | None = None,
) -> MotionFit:
    """Rigid transforms ``T_cam_obj_t`` of the one manipulated object from point tracks.

    points_cam: (N, 3) P0 lifted to the camera optical frame (m); valid: (N,) which have depth.
    tracks_px: (H+1, N, 2) pixel tracks, step 0 being P0. K: (3, 3) camera matrix.
    Never raises on bad data: the returned status says what went wrong (BAD_INPUT for shapes,
    NaN tracks or no depth at all; NO_MOTION; TOO_FEW_POINTS; DEGENERATE for collinear points or
    an ill-conditioned pose; FIT_FAILED when no single rigid motion explains enough points).
    """
    config = config or PlannerConfig()
    tracks = np.asarray(tracks_px, dtype=float)
    if tracks.ndim != 3 or tracks.shape[2] != 2 or tracks.shape[0] < 2 or tracks.shape[1] < 1:
        return _failure(
            Status.BAD_INPUT,
            f"tracks have shape {tracks.shape}, expected (H+1, N, 2) with H >= 1 and N >= 1",
            tracks.shape[1] if tracks.ndim >= 2 else 0,
        )
    H, N = tracks.shape[0] - 1, tracks.shape[1]
    P_all = np.asarray(points_cam, dtype=float)
    valid = np.asarray(valid, dtype=bool)
    K = np.asarray(K, dtype=float)
    if P_all.shape != (N, 3) or valid.shape != (N,):
        return _failure(
            Status.BAD_INPUT,
            f"points_cam {P_all.shape} and valid {valid.shape} must be ({N}, 3) and ({N},) to "
            f"match tracks {tracks.shape}",
            N,
        )
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        return _failure(Status.BAD_INPUT, f"camera matrix must be a finite 3x3, got {K}", N)
    bad = ~np.isfinite(tracks)
    if np.any(bad):
        return _failure(
            Status.BAD_INPUT,
            f"tracks hold {int(bad.sum())} non-finite values, in "
            f"{int(np.any(bad, axis=(0, 2)).sum())} points",
            N,
        )
    with np.errstate(invalid="ignore"):
        valid = valid & np.all(np.isfinite(P_all), axis=1) & (P_all[:, 2] > 0)
    if not np.any(valid):
        return _failure(Status.BAD_INPUT, f"none of the {N} points has a valid depth", N)

    motion = np.max(np.linalg.norm(tracks[1:] - tracks[0], axis=-1), axis=0)  # (N,)
    moves = motion > config.motion_threshold_px
    if np.sum(moves) < config.min_moving_points:
        return _failure(
            Status.NO_MOTION,
            f"{int(moves.sum())} of {N} tracks move more than {config.motion_threshold_px} px "
            f"(largest motion {motion.max():.1f} px)",
            N,
        )
    candidates = moves & valid
    n_cand = int(candidates.sum())
    if n_cand < config.min_moving_points:
        return _failure(
            Status.TOO_FEW_POINTS,
            f"{int(moves.sum())} tracks move but only {n_cand} of them have depth; need "
            f"{config.min_moving_points}",
            N,
            candidates,
        )
    cand_idx = np.flatnonzero(candidates)
    P = P_all[cand_idx]  # (M, 3)
    if _spread_ratio(P) < config.min_spread_ratio:
        return _failure(
            Status.DEGENERATE,
            f"the {n_cand} moving points are collinear (spread ratio {_spread_ratio(P):.3g} < "
            f"{config.min_spread_ratio})",
            N,
            candidates,
        )
    obs = tracks[1:, cand_idx]  # (H, M, 2)
    cam = _Camera(K)

    try:
        with np.errstate(all="ignore"):
            R0, t0 = _initialise(cam, np.linalg.inv(K), P, obs, config)
            R1, t1 = _first_pass(cam, R0, t0, P, obs, config)
            _, ru, rv, front = cam.residuals(R1, t1, P.T, *cam.offsets(obs))
    except np.linalg.LinAlgError as exc:  # a singular system despite the damping
        return _failure(Status.FIT_FAILED, f"initialisation failed: {exc}", N, candidates)
    inlier = _squared_errors(ru, rv, front) < config.inlier_threshold_px**2  # (H, M)
    consistent = inlier.mean(axis=0) >= config.min_inlier_step_fraction  # (M,)
    moving = np.zeros(N, dtype=bool)
    moving[cand_idx[consistent]] = True
    n_moving = int(consistent.sum())
    support = n_moving / n_cand
    if n_moving < config.min_moving_points or support < config.min_support:
        status = Status.TOO_FEW_POINTS if n_moving < config.min_moving_points else Status.FIT_FAILED
        return _failure(
            status,
            f"one rigid motion explains only {n_moving} of {n_cand} moving points (need "
            f"{config.min_moving_points} and a fraction {config.min_support})",
            N,
            candidates,
            moving,
        )
    P_m = P[consistent]
    if _spread_ratio(P_m) < config.min_spread_ratio:
        return _failure(
            Status.DEGENERATE,
            f"the {n_moving} points that move rigidly are collinear",
            N,
            candidates,
            moving,
        )

    try:
        with np.errstate(all="ignore"):
            R1, t1 = _propagate(cam, R1, t1, P_m, obs[:, consistent], config)
            final = _refine(
                cam,
                R1,
                t1,
                P_m,
                obs[:, consistent],
                config,
                config.max_iterations,
                config.smoothness_weight,
            )
    except np.linalg.LinAlgError as exc:
        return _failure(Status.FIT_FAILED, f"refinement failed: {exc}", N, candidates, moving)
    if not (np.all(np.isfinite(final.R)) and np.all(np.isfinite(final.t))):
        return _failure(Status.FIT_FAILED, "refinement diverged", N, candidates, moving)
    cond = _condition(final.information, float(np.median(P_m[:, 2])))
    if np.any(~(cond < config.max_condition)):
        worst = int(np.argmax(np.where(np.isfinite(cond), cond, np.inf)))
        return _failure(
            Status.DEGENERATE,
            f"pose is ambiguous at step {worst + 1} (condition {cond[worst]:.3g} > "
            f"{config.max_condition:.3g}); the moving points may be nearly coplanar and small",
            N,
            candidates,
            moving,
        )

    T = np.tile(np.eye(4), (H + 1, 1, 1))
    T[1:, :3, :3] = final.R
    T[1:, :3, 3] = final.t
    # A fit that barely moves the points is no motion, whatever noise made the tracks cross the
    # threshold.
    _, ru, rv, _ = cam.residuals(final.R, final.t, P_m.T, *cam.offsets(tracks[0, moving]))
    model_motion = np.max(np.median(np.hypot(ru, rv), axis=1))
    if model_motion < config.motion_threshold_px:
        return _failure(
            Status.NO_MOTION,
            f"the fitted object motion moves its points by at most {model_motion:.2f} px",
            N,
            candidates,
            moving,
        )

    e = np.sqrt(final.e2)  # (H, n_moving)
    inl = e < config.inlier_threshold_px
    ratio = np.r_[1.0, inl.mean(axis=1)]
    if np.any(ratio < config.min_support):
        worst = int(np.argmin(ratio))
        return _failure(
            Status.FIT_FAILED,
            f"at step {worst} only {ratio[worst]:.0%} of the moving points fit the motion (need "
            f"{config.min_support:.0%})",
            N,
            candidates,
            moving,
        )
    err = np.r_[0.0, _masked_median(e, inl)]
    # Confidence multiplies what can go wrong: steps the motion does not explain, candidates it
    # leaves out (outlier tracks, a second moving thing), loose fits, and thin support.
    accuracy = 1.0 / (1.0 + (np.median(err[1:]) / config.inlier_threshold_px) ** 2)
    count = min(1.0, n_moving / (4.0 * config.min_moving_points))
    confidence = float(np.clip(ratio[1:].mean() * support * accuracy * count, 0.0, 1.0))
    return MotionFit(
        status=Status.OK,
        message=(
            f"{n_moving} of {n_cand} moving points follow one rigid motion; median error "
            f"{np.median(err[1:]):.2f} px"
        ),
        T_cam_obj=T,
        inlier_ratio=ratio,
        reprojection_error_px=err,
        candidates=candidates,
        moving=moving,
        confidence=confidence,
    )
