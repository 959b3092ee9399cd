"""Camera intrinsics and rigid transforms as plain numpy.

Conventions: 4x4 homogeneous transforms named by their frames, ``T_a_b`` maps points in frame b to
frame a; quaternions are (x, y, z, w) like geometry_msgs; pixel (u, v) is (column, row) with the
origin at the centre of the top-left pixel, as in sensor_msgs/CameraInfo.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial.transform import Rotation

# Nominal extrinsics T_body_cam of t2a_sim's front camera (optical frame in body), the default
# calibration of every node that lifts pixels into the body frame (planner, residual_controller);
# test_planner_node checks they match the sim. On the robot, set the nodes' camera_xyz /
# camera_quat_xyzw from the calibration.
SIM_CAMERA_XYZ = (0.45, -0.14, 0.06)  # m
SIM_CAMERA_QUAT = (  # x, y, z, w
    -0.6209609477998338,
    0.48514786313799824,
    -0.3790390522001661,
    0.48514786313799824,
)


@dataclasses.dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of ``width`` x ``height`` pixels (no distortion applied)."""

    width: int  # px
    height: int  # px
    fx: float  # px
    fy: float  # px
    cx: float  # px
    cy: float  # px
    distortion_model: str = "plumb_bob"
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")

    @property
    def K(self) -> np.ndarray:
        """3x3 camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_fov(cls, width: int, height: int, fovy_deg: float) -> Intrinsics:
        """Square pixels, principal point at the image centre, vertical field of view ``fovy``."""
        f = (height / 2.0) / np.tan(np.deg2rad(fovy_deg) / 2.0)
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0)

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera seen at another resolution (pixel-centre convention kept)."""
        sx, sy = width / self.width, height / self.height
        return dataclasses.replace(
            self,
            width=width,
            height=height,
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
        )

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """(..., 3) points in the camera optical frame -> (..., 2) pixels."""
        z = points_cam[..., 2:3]
        return np.concatenate(
            [
                self.fx * points_cam[..., 0:1] / z + self.cx,
                self.fy * points_cam[..., 1:2] / z + self.cy,
            ],
            axis=-1,
        )

    def backproject(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """(..., 2) pixels and (...) depths along z (m) -> (..., 3) points in the optical frame."""
        x = (uv[..., 0] - self.cx) / self.fx * depth
        y = (uv[..., 1] - self.cy) / self.fy * depth
        return np.stack([x, y, depth], axis=-1)


def make_transform(rotation: np.ndarray | None = None, translation=None) -> np.ndarray:
    """4x4 transform from a 3x3 rotation matrix and a 3-vector (either may be omitted)."""
    T = np.eye(4)
    if rotation is not None:
        T[:3, :3] = rotation
    if translation is not None:
        T[:3, 3] = translation
    return T


def pose_to_matrix(position, quat_xyzw) -> np.ndarray:
    """Position (3,) and unit quaternion (x, y, z, w) -> 4x4. The quaternion is normalised."""
    q = np.asarray(quat_xyzw, dtype=float)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} has no orientation (norm {n})")
    return make_transform(Rotation.from_quat(q / n).as_matrix(), position)


def matrix_to_pose(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4x4 -> (position (3,), quaternion (x, y, z, w) with w >= 0)."""
    T = np.asarray(T, dtype=float)
    if T.shape != (4, 4):
        raise ValueError(f"expected a 4x4 transform, got shape {T.shape}")
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    if q[3] < 0:
        q = -q
    return T[:3, 3].copy(), q


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (no general matrix inverse)."""
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply 4x4 ``T`` to (..., 3) points."""
    return points @ T[:3, :3].T + T[:3, 3]
