"""Headless RGB-D rendering of a MuJoCo camera: colour and metric depth from one pass.

Anti-aliasing is off (``offsamples=0`` in the scene), so a depth pixel is the depth of exactly one
surface, never a blend of foreground and background. MuJoCo 4.x renders with a reversed depth
buffer: a stored value ``b`` in [0, 1] (1 at the near plane, 0 at the far plane) is the depth
``z = n f / (n + b (f - n))`` along the optical axis, with ``n``/``f`` the clip planes in metres.
"""

from __future__ import annotations

import mujoco
import numpy as np

from t2a_common.core.geometry import Intrinsics


def intrinsics_of(model: mujoco.MjModel, camera: str, width: int, height: int) -> Intrinsics:
    """Pinhole intrinsics of MuJoCo camera ``camera`` rendered at ``width`` x ``height``."""
    cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
    if cam_id < 0:
        raise ValueError(f"camera {camera!r} not in the model")
    return Intrinsics.from_fov(width, height, float(model.cam_fovy[cam_id]))


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metric depth (float, 0 = none) to RealSense-style 16UC1 millimetres (0 = no data)."""
    mm = np.rint(np.nan_to_num(depth_m, nan=0.0, posinf=0.0) * 1000.0)
    return np.clip(mm, 0, 65535).astype(np.uint16)


class Camera:
    """Renders one named camera of a model into (rgb uint8 (H, W, 3), depth float32 (H, W) m).

    Owns an offscreen GL context (``MUJOCO_GL=egl`` or ``osmesa`` headless); call :meth:`close`
    or use it as a context manager. Depth is 0 where nothing lies within the far plane.
    """

    def __init__(self, model: mujoco.MjModel, camera: str, width: int, height: int) -> None:
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise ValueError(
                f"render size {width}x{height} exceeds the model's offscreen buffer "
                f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}"
            )
        self.model = model
        self.width, self.height = width, height
        self.intrinsics = intrinsics_of(model, camera, width, height)
        self._gl = mujoco.GLContext(width, height)
        self._gl.make_current()
        self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._ctx.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=2000)
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._cam.fixedcamid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        self._rect = mujoco.MjrRect(0, 0, width, height)
        extent = model.stat.extent
        self.near = float(model.vis.map.znear * extent)
        self.far = float(model.vis.map.zfar * extent)
        self._rgb = np.empty((height, width, 3), np.uint8)
        self._buf = np.empty((height, width), np.float32)

    def _draw(self, data: mujoco.MjData, segment: bool) -> None:
        self._gl.make_current()
        mujoco.mjv_updateScene(
            self.model, data, self._opt, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        flags = self._scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = int(segment)
        flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = int(segment)
        mujoco.mjr_render(self._rect, self._scene, self._ctx)

    def render(self, data: mujoco.MjData) -> tuple[np.ndarray, np.ndarray]:
        """Colour (H, W, 3) uint8 and depth along the optical axis (H, W) float32 in metres."""
        self._draw(data, segment=False)
        mujoco.mjr_readPixels(self._rgb, self._buf, self._rect, self._ctx)
        n, f = self.near, self.far
        b = self._buf[::-1].astype(np.float64)  # GL rows run bottom-up
        with np.errstate(divide="ignore"):
            depth = n * f / (n + b * (f - n))
        depth[b <= 0.0] = 0.0  # cleared to the far plane: nothing there
        return self._rgb[::-1].copy(), depth.astype(np.float32)

    def render_geom_ids(self, data: mujoco.MjData) -> np.ndarray:
        """(H, W) int32 id of the geom seen at each pixel, -1 where none."""
        self._draw(data, segment=True)
        mujoco.mjr_readPixels(self._rgb, None, self._rect, self._ctx)
        rgb = self._rgb[::-1].astype(np.int64)
        seg = rgb[..., 0] + rgb[..., 1] * 256 + rgb[..., 2] * 65536  # segid + 1, 0 = background
        lut = np.full(self._scene.ngeom + 2, -1, np.int32)
        for g in self._scene.geoms[: self._scene.ngeom]:
            if g.segid >= 0 and g.objtype == mujoco.mjtObj.mjOBJ_GEOM:
                lut[g.segid + 1] = g.objid
        return lut[np.clip(seg, 0, lut.size - 1)]

    def close(self) -> None:
        """Free the GL resources (safe to call twice)."""
        if getattr(self, "_ctx", None) is not None:
            self._gl.make_current()
            self._ctx.free()
            self._ctx = None
            self._gl.free()

    def __enter__(self) -> Camera:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn GL down already
            pass
