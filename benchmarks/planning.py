"""Benchmark: object motion from tracks, ours vs OpenCV's RANSAC PnP, speed and accuracy.

Each trial is a synthetic scene (``t2a_planning.core.synthetic``): a box at about 1 m, ``--points``
query points on it, a smooth rigid motion over ``--horizon`` steps, tracks with Gaussian pixel
noise and a fraction of outlier tracks (random wandering ones). Both methods get the same exact
3D points P0 and the same tracks:

- ours: ``estimate_object_motion`` for the whole horizon (moving-point selection, batched P3P
  RANSAC, robust Gauss-Newton), timed as one call;
- opencv: per step ``cv2.solvePnPRansac`` (SOLVEPNP_EPNP, same 3 px inlier threshold) then
  ``cv2.solvePnPRefineLM`` on its inliers, timed over all steps.

A failed fit counts as no motion (identity) in the errors and in ``failures``.

    python benchmarks/planning.py [--trials 50] [--json]

Prints a table; with ``--json`` the last stdout line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from t2a_common.core.se3 import rotation_angle
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.rigid import estimate_object_motion
from t2a_planning.core.synthetic import make_scene


def solve_ours(points, tracks, K, config):
    fit = estimate_object_motion(points, np.ones(len(points), bool), tracks, K, config)
    return (fit.T_cam_obj if fit.ok else None), 0 if fit.ok else len(tracks) - 1


def solve_opencv(points, tracks, K, threshold_px):
    T = np.tile(np.eye(4), (len(tracks), 1, 1))
    failures = 0
    obj = np.ascontiguousarray(points, dtype=np.float64)
    for t in range(1, len(tracks)):
        img = np.ascontiguousarray(tracks[t], dtype=np.float64)
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            obj,
            img,
            K,
            None,
            flags=cv2.SOLVEPNP_EPNP,
            reprojectionError=threshold_px,
            iterationsCount=100,
            confidence=0.99,
        )
        if not ok or inliers is None or len(inliers) < 6:
            failures += 1
            continue
        idx = inliers[:, 0]
        rvec, tvec = cv2.solvePnPRefineLM(obj[idx], img[idx], K, None, rvec, tvec)
        T[t, :3, :3] = cv2.Rodrigues(rvec)[0]
        T[t, :3, 3] = tvec[:, 0]
    return T, failures


def errors(T_est, T_true):
    """Rotation (deg) and translation (cm) errors of steps 1..H."""
    dR = np.swapaxes(T_est[1:, :3, :3], 1, 2) @ T_true[1:, :3, :3]
    rot = np.degrees(rotation_angle(dR))
    trans = 100.0 * np.linalg.norm(T_est[1:, :3, 3] - T_true[1:, :3, 3], axis=1)
    return rot, trans


def run(args) -> dict:
    config = PlannerConfig()
    methods = {
        "ours": lambda p, tr, K: solve_ours(p, tr, K, config),
        "opencv epnp+LM": lambda p, tr, K: solve_opencv(p, tr, K, config.inlier_threshold_px),
    }
    if args.smoothness > 0:
        smooth = PlannerConfig(smoothness_weight=args.smoothness)
        methods[f"ours, smooth {args.smoothness:g}"] = lambda p, tr, K: solve_ours(p, tr, K, smooth)

    results = []
    for outliers in args.outliers:
        scenes = [
            make_scene(
                seed,
                num_points=args.points,
                horizon=args.horizon,
                object_fraction=1.0,
                noise_px=args.noise,
                outlier_fraction=outliers,
                shape=args.shape,
                with_depth=False,
            )
            for seed in range(args.trials)
        ]
        for name, solve in methods.items():
            for scene in scenes[:3]:  # warm caches and lazy imports
                solve(scene.points_cam, scene.tracks_px, scene.intrinsics.K)
            times, rots, transs, failures = [], [], [], 0
            for scene in scenes:
                t0 = time.perf_counter()
                T, failed = solve(scene.points_cam, scene.tracks_px, scene.intrinsics.K)
                times.append(1e3 * (time.perf_counter() - t0))
                failures += failed
                if T is None:
                    T = np.tile(np.eye(4), (args.horizon + 1, 1, 1))
                rot, trans = errors(T, scene.T_cam_obj)
                rots.append(rot)
                transs.append(trans)
            results.append(
                {
                    "outliers": outliers,
                    "method": name,
                    "mean_ms": float(np.mean(times)),
                    "p50_ms": float(np.percentile(times, 50)),
                    "p95_ms": float(np.percentile(times, 95)),
                    "rot_deg_median": float(np.median(rots)),
                    "rot_deg_p95": float(np.percentile(rots, 95)),
                    "trans_cm_median": float(np.median(transs)),
                    "trans_cm_p95": float(np.percentile(transs, 95)),
                    "failed_steps": int(failures),
                }
            )
    return {
        "benchmark": "planning",
        "points": args.points,
        "horizon": args.horizon,
        "trials": args.trials,
        "noise_px": args.noise,
        "shape": args.shape,
        "opencv": cv2.__version__,
        "results": results,
    }


def print_table(report: dict) -> None:
    print(
        f"object motion from tracks: {report['points']} points x {report['horizon']} steps, "
        f"{report['noise_px']:g} px noise, {report['trials']} trials, {report['shape']} at ~1 m "
        f"(OpenCV {report['opencv']})"
    )
    header = (
        f"{'outliers':>8}  {'method':<22} {'mean ms':>8} {'p50 ms':>7} {'p95 ms':>7}  "
        f"{'rot deg':>8} {'rot p95':>8}  {'trans cm':>8} {'tr p95':>7}  {'failed':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        print(
            f"{r['outliers']:>8.0%}  {r['method']:<22} {r['mean_ms']:>8.2f} {r['p50_ms']:>7.2f} "
            f"{r['p95_ms']:>7.2f}  {r['rot_deg_median']:>8.3f} {r['rot_deg_p95']:>8.2f}  "
            f"{r['trans_cm_median']:>8.3f} {r['trans_cm_p95']:>7.2f}  {r['failed_steps']:>6d}"
        )
    print("rot/trans: median and 95th percentile over all trials and steps; failed: steps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=50, help="scenes per outlier level")
    parser.add_argument("--points", type=int, default=400, help="tracked points on the object")
    parser.add_argument("--horizon", type=int, default=8, help="steps H after P0")
    parser.add_argument("--noise", type=float, default=1.0, help="track noise, px (std)")
    parser.add_argument(
        "--outliers", type=float, nargs="+", default=[0.0, 0.1, 0.3], help="outlier fractions"
    )
    parser.add_argument("--shape", choices=("box", "plane"), default="box", help="object shape")
    parser.add_argument(
        "--smoothness", type=float, default=0.0, help="also run ours with this smoothness weight"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args()
    report = run(args)
    print_table(report)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
