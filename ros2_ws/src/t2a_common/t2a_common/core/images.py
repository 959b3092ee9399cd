"""Image checks, resizing and the pixel <-> normalised convention both models share.

Coordinate convention (track model, residual policy and the training data): pixel ``(u, v)`` has
its centre at integer coordinates, so the image spans ``[-0.5, W - 0.5]``; normalised
``x = (u + 0.5) / W * 2 - 1`` maps that span to ``[-1, 1]``. This is what ``cv2.resize`` assumes,
so a point keeps its normalised coordinates when the image is resized, whatever the aspect ratio.
"""

from __future__ import annotations

import cv2
import numpy as np


def check_rgb_image(name: str, image: object) -> np.ndarray:
    """``image`` itself if it is a non-empty ``(H, W, 3)`` uint8 RGB array, else ValueError."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array (H, W, 3) uint8 RGB, got {type(image)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"{name} is {image.dtype} with shape {image.shape}; expected uint8 RGB (H, W, 3)"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty: shape {image.shape}")
    return image


def pixels_to_normalized(points_px: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel ``(u, v)`` (..., 2) -> normalised ``[-1, 1]`` coordinates, float32."""
    size = np.array([width, height], dtype=np.float64)
    return ((np.asarray(points_px, dtype=np.float64) + 0.5) / size * 2.0 - 1.0).astype(np.float32)


def normalized_to_pixels(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised ``[-1, 1]`` coordinates (..., 2) -> pixel ``(u, v)``, float64."""
    size = np.array([width, height], dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) + 1.0) / 2.0 * size - 0.5


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(size, size, 3)`` uint8, stretching to the model's square.

    Stretching (not cropping or padding) keeps every pixel of the camera frame visible to the
    model and matches how the training clips are prepared; ``INTER_AREA`` when shrinking avoids
    the aliasing that plain bilinear sampling gives at 5x downscales.
    """
    if image.shape[:2] == (size, size):
        return image
    shrinking = image.shape[0] > size or image.shape[1] > size
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def crop_to_aspect(
    image: np.ndarray, width: int, height: int, name: str = "goal image", max_crop: float = 0.2
) -> np.ndarray:
    """``image`` centre-cropped to the aspect ratio of a ``width`` x ``height`` camera frame.

    The track model stretches I0 and the goal to one square: a goal of another aspect ratio would
    be stretched differently from I0 and every track would be wrong. A small mismatch is cropped
    (at most ``max_crop`` of a side); a larger one raises ValueError saying what to send instead.
    Same aspect (within half a pixel): ``image`` itself.
    """
    h, w = image.shape[:2]
    target = width / height
    if abs(w / h - target) * min(w, h) <= 0.5 * max(target, 1.0):
        return image
    if w / h > target:  # too wide: keep the full height
        keep_w, keep_h = round(h * target), h
    else:
        keep_w, keep_h = w, round(w / target)
    lost = 1.0 - min(keep_w / w, keep_h / h)
    if lost > max_crop:
        raise ValueError(
            f"{name} is {w}x{h} (aspect {w / h:.2f}) but the camera frame is {width}x{height} "
            f"(aspect {target:.2f}): cropping would drop {lost:.0%} of a side (more than "
            f"{max_crop:.0%}) and stretching would bend every track; send a goal taken with this "
            "camera (t2a-snapshot-goal)"
        )
    u0, v0 = (w - keep_w) // 2, (h - keep_h) // 2
    return np.ascontiguousarray(image[v0 : v0 + keep_h, u0 : u0 + keep_w])
