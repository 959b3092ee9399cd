"""Golden outputs of both shipped models: the checkpoints load bit-identically and answer a fixed,
seeded input with the pinned numbers (unit tier, a few seconds on CPU).

What is pinned (``tests/golden/shipped_models.npz``):
- a SHA-256 over every tensor of each loaded model's ``state_dict`` (names, dtypes, shapes and
  raw bytes): the checkpoint I/O and the module layout give exactly the shipped parameters;
- the track model's predicted tracks, confidence and samples through ``TrackPredictor.predict``
  (seeded DDIM, 2 samples, 4 steps, 16 points) on seeded random 120x160 images;
- the residual policy's action chunk and gripper probabilities through ``predict_chunk`` on a
  seeded random batch in the shipped config's layout.

Regenerate, only when a checkpoint or a model is changed on purpose (and say so in the commit):
``python tests/test_golden_models.py --write``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from t2a_control.core.policy import ResidualPolicy
from t2a_control.core.policy import load_checkpoint as load_policy
from t2a_perception.core.predictor import TrackPredictor

ROOT = Path(__file__).resolve().parents[1]
TRACK_DIR = ROOT / "ros2_ws/src/t2a_perception/models/track_default"
POLICY_DIR = ROOT / "ros2_ws/src/t2a_control/models/residual_default"
GOLDEN = Path(__file__).resolve().parent / "golden" / "shipped_models.npz"

# float32 on CPU is deterministic run to run; the tolerance only absorbs BLAS/SIMD differences
# between machines. A wrong layer, weight or normalisation moves the outputs by far more.
RTOL, ATOL = 1e-4, 1e-5


def state_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of every tensor of ``model``'s state."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _rigid(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 4, 4) random rigid transforms near the arm's workspace."""
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q *= np.sign(np.linalg.det(q))[:, None, None]  # proper rotations
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = q
    T[:, :3, 3] = np.array([0.7, 0.0, 0.2]) + rng.normal(scale=0.2, size=(n, 3))
    return T


def track_outputs() -> dict[str, np.ndarray]:
    """The shipped track model on a fixed input: digest, tracks, confidence, samples."""
    predictor = TrackPredictor(TRACK_DIR)
    rng = np.random.default_rng(2024)
    image0 = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    goal = rng.integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    points = rng.uniform([0.0, 0.0], [159.0, 119.0], size=(16, 2))
    pred = predictor.predict(image0, goal, points, num_samples=2, sampler="ddim", steps=4, seed=7)
    return {
        "track_digest": np.array(state_digest(predictor.model)),
        "track_tracks_px": pred.tracks_px,
        "track_confidence": pred.confidence,
        "track_samples_px": pred.samples_px,
    }


def policy_outputs() -> dict[str, np.ndarray]:
    """The shipped residual policy on a fixed batch: digest, action chunk, gripper."""
    policy: ResidualPolicy = load_policy(POLICY_DIR)
    cfg = policy.config
    rng = np.random.default_rng(2025)
    S, Hp1, N = cfg.image_size, cfg.horizon + 1, cfg.num_points
    batch = {
        "image": torch.from_numpy(rng.integers(0, 256, size=(1, 3, S, S), dtype=np.uint8)),
        "goal": torch.from_numpy(rng.integers(0, 256, size=(1, 3, S, S), dtype=np.uint8)),
        "tracks": torch.from_numpy(rng.uniform(-1, 1, size=(1, Hp1, N, 2)).astype(np.float32)),
        "hand": torch.from_numpy(_rigid(rng, 1).astype(np.float32)),
        "step": torch.tensor([3], dtype=torch.int64),
    }
    if cfg.use_plan:
        batch["plan_poses"] = torch.from_numpy(_rigid(rng, Hp1)[None].astype(np.float32))
        batch["plan_gripper"] = torch.from_numpy((np.arange(Hp1) >= 2)[None].astype(np.float32))
    if cfg.point_xyz:
        xyz = np.array([0.7, 0.0, 0.2]) + rng.normal(scale=0.1, size=(1, N, 3))
        batch["points_body"] = torch.from_numpy(xyz.astype(np.float32))
    out = policy.predict_chunk(batch)
    return {
        "policy_digest": np.array(state_digest(policy)),
        "policy_action": out["action"].numpy(),
        "policy_gripper_closed": out["gripper_closed"].numpy(),
    }


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return dict(data)


def _compare(actual: dict[str, np.ndarray], golden: dict[str, np.ndarray]) -> None:
    for key, value in actual.items():
        if value.dtype.kind == "U":
            assert str(value) == str(golden[key]), f"{key}: the loaded parameters changed"
        else:
            np.testing.assert_allclose(value, golden[key], rtol=RTOL, atol=ATOL, err_msg=key)


def test_shipped_track_model_matches_its_golden_outputs(golden):
    torch.manual_seed(0)
    _compare(track_outputs(), golden)


def test_shipped_residual_policy_matches_its_golden_outputs(golden):
    torch.manual_seed(0)
    _compare(policy_outputs(), golden)


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(f"usage: python {sys.argv[0]} --write  (regenerates {GOLDEN})")
    torch.manual_seed(0)
    values = {**track_outputs(), **policy_outputs()}
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, **values)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes): {sorted(values)}")
