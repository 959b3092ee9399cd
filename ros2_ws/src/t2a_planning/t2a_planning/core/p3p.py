"""Batched minimal pose solver from three 2D-3D correspondences (Grunert's P3P).

Grunert (1841) as reviewed by Haralick et al., "Review and analysis of solutions of the three
point perspective pose estimation problem", IJCV 1994: the distances along the three viewing rays
satisfy three law-of-cosines equations, which reduce to one quartic in the ratio of two distances.
Every hypothesis of a RANSAC round is solved at once with Ferrari's closed form in complex
arithmetic (several times faster than eigenvalues of companion matrices at these batch sizes),
then polished with Newton steps.
"""

from __future__ import annotations

import numpy as np


def quartic_roots(c4, c3, c2, c1, c0) -> np.ndarray:
    """(..., 4) complex roots of ``c4 x^4 + c3 x^3 + c2 x^2 + c1 x + c0`` (Ferrari), batched."""
    a, b, c, d = c3 / c4, c2 / c4, c1 / c4, c0 / c4
    a2 = a * a
    # Depressed quartic y^4 + p y^2 + q y + r with x = y - a / 4.
    p = b - 0.375 * a2
    q = c - 0.5 * a * b + 0.125 * a2 * a
    r = d - 0.25 * a * c + a2 * b / 16.0 - 3.0 * a2 * a2 / 256.0
    # One root m of the resolvent cubic m^3 + p m^2 + (p^2/4 - r) m - q^2/8 (Cardano on the
    # depressed cubic z^3 + P z + Q, m = z - p/3; the larger branch avoids cancellation).
    P = -p * p / 12.0 - r
    Q = -(p**3) / 108.0 + p * r / 3.0 - q * q / 8.0
    sq = np.sqrt((Q * Q / 4.0 + P**3 / 27.0).astype(complex))
    u1, u2 = -Q / 2.0 + sq, -Q / 2.0 - sq
    C = np.where(np.abs(u1) >= np.abs(u2), u1, u2) ** (1.0 / 3.0)
    zero_C = C == 0
    m = np.where(zero_C, 0.0, C - P / (3.0 * np.where(zero_C, 1.0, C))) - p / 3.0
    # (y^2 + p/2 + m)^2 = 2m (y - q / 4m)^2 splits into two quadratics.
    s = np.sqrt(2.0 * m)
    biquadratic = np.abs(s) < 1e-12 * (1.0 + np.abs(p))
    s_safe = np.where(biquadratic, 1.0, s)
    t1 = np.sqrt(-2.0 * p - 2.0 * m - 2.0 * q / s_safe)
    t2 = np.sqrt(-2.0 * p - 2.0 * m + 2.0 * q / s_safe)
    y = np.stack([s + t1, s - t1, -s + t2, -s - t2], axis=-1) / 2.0
    # q = 0: y^4 + p y^2 + r is a quadratic in y^2.
    w = np.sqrt((p * p - 4.0 * r).astype(complex))
    y1, y2 = np.sqrt((-p + w) / 2.0), np.sqrt((-p - w) / 2.0)
    y = np.where(biquadratic[..., None], np.stack([y1, -y1, y2, -y2], axis=-1), y)
    return y - a[..., None] / 4.0


def _triangle_frame(p: np.ndarray) -> np.ndarray:
    """(..., 3, 3) three points (rows) -> (..., 3, 3) orthonormal frame (columns) of them."""
    e1 = p[..., 1, :] - p[..., 0, :]
    e3 = _cross(e1, p[..., 2, :] - p[..., 0, :])
    e1 = e1 / np.sqrt(np.sum(e1 * e1, axis=-1, keepdims=True))
    e3 = e3 / np.sqrt(np.sum(e3 * e3, axis=-1, keepdims=True))
    return np.stack([e1, _cross(e3, e1), e3], axis=-1)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product over the last axis (np.cross is several times slower on small batches)."""
    a0, a1, a2 = a[..., 0], a[..., 1], a[..., 2]
    b0, b1, b2 = b[..., 0], b[..., 1], b[..., 2]
    return np.stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis=-1)


def p3p(bearings: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to four poses ``(R, t)`` with ``bearing_i ~ R @ point_i + t`` for each batch entry.

    bearings: (..., 3, 3) unit viewing rays (rows) in the camera frame.
    points: (..., 3, 3) the matching 3D points (rows) in the object frame.
    Returns R (..., 4, 3, 3), t (..., 4, 3) and ok (..., 4): False for complex or negative roots
    and for degenerate triangles; those poses hold garbage (possibly NaN) and must be skipped.
    """
    f = bearings
    X = points
    with np.errstate(all="ignore"):
        a2 = np.sum((X[..., 1, :] - X[..., 2, :]) ** 2, axis=-1)
        b2 = np.sum((X[..., 0, :] - X[..., 2, :]) ** 2, axis=-1)
        c2 = np.sum((X[..., 0, :] - X[..., 1, :]) ** 2, axis=-1)
        ca = np.sum(f[..., 1, :] * f[..., 2, :], axis=-1)  # cos(alpha): rays 1, 2
        cb = np.sum(f[..., 0, :] * f[..., 2, :], axis=-1)  # cos(beta): rays 0, 2
        cg = np.sum(f[..., 0, :] * f[..., 1, :], axis=-1)  # cos(gamma): rays 0, 1

        p = (a2 - c2) / b2
        q = (a2 + c2) / b2
        a2b, c2b = a2 / b2, c2 / b2
        A4 = (p - 1.0) ** 2 - 4.0 * c2b * ca**2
        A3 = 4.0 * (p * (1.0 - p) * cb - (1.0 - q) * ca * cg + 2.0 * c2b * ca**2 * cb)
        A2 = 2.0 * (
            p**2
            - 1.0
            + 2.0 * p**2 * cb**2
            + 2.0 * (1.0 - c2b) * ca**2
            - 4.0 * q * ca * cb * cg
            + 2.0 * (1.0 - a2b) * cg**2
        )
        A1 = 4.0 * (-p * (1.0 + p) * cb + 2.0 * a2b * cg**2 * cb - (1.0 - q) * ca * cg)
        A0 = (1.0 + p) ** 2 - 4.0 * a2b * cg**2

        degenerate = ~np.isfinite(A4) | (np.abs(A4) < 1e-12) | ~(b2 > 1e-12)
        coeffs = [np.where(degenerate, 1.0, x) for x in (A4, A3, A2, A1, A0)]
        roots = quartic_roots(*coeffs)  # (..., 4) complex
        v = roots.real
        # Noise turns a double root into a close complex pair; keep those, the scoring decides.
        real = np.abs(roots.imag) <= 1e-3 * (1.0 + np.abs(v))
        c4, c3, c2, c1, c0 = (x[..., None] for x in coeffs)
        for _ in range(2):  # Newton polish: the closed form loses digits on clustered roots
            fv = (((c4 * v + c3) * v + c2) * v + c1) * v + c0
            df = ((4.0 * c4 * v + 3.0 * c3) * v + 2.0 * c2) * v + c1
            v = np.where(np.abs(df) > 1e-12, v - fv / np.where(df == 0, 1.0, df), v)

        p_, cb_, ca_, cg_ = (x[..., None] for x in (p, cb, ca, cg))
        u = ((p_ - 1.0) * v**2 - 2.0 * p_ * cb_ * v + 1.0 + p_) / (2.0 * (cg_ - v * ca_))
        s0 = np.sqrt(b2[..., None] / (1.0 + v**2 - 2.0 * v * cb_))  # (..., 4)
        dist = np.stack([s0, u * s0, v * s0], axis=-1)  # (..., 4, 3)
        ok = real & (u > 0) & (v > 0) & np.all(np.isfinite(dist), axis=-1) & ~degenerate[..., None]

        Y = dist[..., :, :, None] * f[..., None, :, :]  # (..., 4, 3, 3) camera-frame points
        F_cam = _triangle_frame(Y)  # (..., 4, 3, 3)
        F_obj = _triangle_frame(X)[..., None, :, :]  # (..., 1, 3, 3)
        R = F_cam @ np.swapaxes(F_obj, -1, -2)
        t = Y[..., 0, :] - np.einsum("...ij,...j->...i", R, X[..., None, 0, :])
        ok &= np.all(np.isfinite(R), axis=(-2, -1)) & np.all(np.isfinite(t), axis=-1)
    return R, t, ok
