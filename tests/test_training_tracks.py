"""Track-model training pipeline: data, labeller, metrics (unit) and training smoke runs (slow).

The unit tests build small fake episodes in the t2a_sim ``.npz`` layout (no MuJoCo), whose
tracks are known exactly; the slow tests generate a tiny real sim dataset, train, resume, export,
load the export with ``TrackPredictor``, evaluate, and run the same script under torchrun.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from t2a_common.core.images import normalized_to_pixels
from t2a_perception.core.predictor import TrackPredictor
from t2a_sim.core.dataset import save_episode, write_index
from training import engine, eval_tracks, train_tracks
from training.eval_tracks import constant_velocity, example_metrics, nothing_moves
from training.labelers import LucasKanadeLabeler
from training.track_data import (
    TrackDataConfig,
    TrackDataset,
    collate_tracks,
    find_sim_episodes,
    held_out_keys,
    label_videos,
    load_sim_clips,
    load_video_clips,
    motion_span,
    select_episodes,
)

ROOT = Path(__file__).resolve().parents[1]
W, H, T = 64, 48, 20
N_OBJ, N_BG = 30, 30
HIDDEN_AT_START = np.arange(5)  # points 0..4 are not visible in frame 0
HIDDEN_LATER = np.arange(30, 35)  # points 30..34 are hidden from step 10 on


# ------------------------------------------------------------------------------------------
# Fakes
# ------------------------------------------------------------------------------------------


def texture(rng: np.random.Generator, h: int, w: int, sigma: float = 2.0) -> np.ndarray:
    """Smooth random colour texture, uint8 (h, w, 3): something LK can lock on to."""
    t = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), sigma)
    return ((t - t.min()) / (t.max() - t.min()) * 255).astype(np.uint8)


def shift_at(t: np.ndarray | int) -> np.ndarray:
    """The fake object's x offset (px): still until step 5, +1 px per step to 9 px at step 14."""
    return np.clip(np.asarray(t) - 5, 0, 9).astype(np.float32)


def fake_episode(split: str, task: str, seed: int) -> dict:
    """An episode in the t2a_sim layout: a 16x16 patch slides right over a static background."""
    rng = np.random.default_rng(seed)
    background = texture(rng, H, W)
    patch = texture(rng, 16, 16)
    rgb = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        rgb[t] = background
        x0 = 10 + int(shift_at(t))
        rgb[t, 16:32, x0 : x0 + 16] = patch
    obj = np.stack([rng.uniform(10, 25, N_OBJ), rng.uniform(16, 31, N_OBJ)], -1)
    bg = np.stack([rng.uniform(0, W - 1, N_BG), rng.uniform(0, H - 1, N_BG)], -1)
    p0 = np.concatenate([obj, bg]).astype(np.float32)  # (N, 2)
    tracks = np.repeat(p0[None], T, axis=0)  # (T, N, 2)
    tracks[:, :N_OBJ, 0] += shift_at(np.arange(T))[:, None]
    visible = np.ones((T, N_OBJ + N_BG), bool)
    visible[:, HIDDEN_AT_START] = False
    visible[10:, HIDDEN_LATER] = False
    meta = {"task": task, "split": split, "seed": seed, "success": True, "steps": T, "errors": {}}
    return {
        "rgb": rgb,
        "tracks": tracks,
        "visible": visible,
        "track_depth": np.ones((T, N_OBJ + N_BG), np.float32),
        "phase": np.zeros(T, np.int8),
        "track_on_object": np.arange(N_OBJ + N_BG) < N_OBJ,
        "success": np.asarray(True),
        "meta": np.asarray(json.dumps(meta)),
    }


def write_fake_dataset(root: Path, splits=("MG",), tasks=("drawer_open", "box_push"), seeds=4):
    for split in splits:
        for task in tasks:
            for seed in range(seeds):
                save_episode(root / split / task / f"{seed:06d}", fake_episode(split, task, seed))
    write_index(root)
    return root


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory) -> Path:
    return write_fake_dataset(tmp_path_factory.mktemp("fake_sim"), splits=("MG", "CG"))


CFG = TrackDataConfig(image_size=32, horizon=4, min_points=5, max_points=20, eval_points=50)


def clips_of(root: Path, cfg: TrackDataConfig = CFG, splits=("MG",), subset: str = "all"):
    return load_sim_clips(select_episodes(find_sim_episodes([root], splits), subset, cfg), cfg)


# ------------------------------------------------------------------------------------------
# Sim dataset
# ------------------------------------------------------------------------------------------


def test_motion_span_finds_onset_and_end():
    tracks = fake_episode("MG", "drawer_open", 0)["tracks"]
    assert motion_span(tracks, 0.5) == (5, 14)
    assert motion_span(np.zeros((6, 3, 2)), 0.5) == (0, 5)


def test_batch_shapes_dtypes_and_masks(fake_data):
    ds = TrackDataset(clips_of(fake_data), CFG, augment=True, seed=0, repeat=2)
    batch = collate_tracks([ds[i] for i in range(6)])
    S, Hp1 = CFG.image_size, CFG.horizon + 1
    assert batch["image0"].shape == (6, 3, S, S) and batch["image0"].dtype == torch.uint8
    assert batch["goal"].shape == (6, 3, S, S) and batch["goal"].dtype == torch.uint8
    n_max = batch["tracks"].shape[2]
    assert batch["tracks"].shape == (6, Hp1, n_max, 2) and batch["tracks"].dtype == torch.float32
    assert batch["mask"].shape == (6, n_max) and batch["mask"].dtype == torch.bool
    counts = batch["mask"].sum(1)
    assert (counts >= CFG.min_points).all() and (counts <= CFG.max_points).all()
    assert counts.max() == n_max and len(set(counts.tolist())) > 1, "point counts should vary"
    assert torch.equal(batch["image_wh"], torch.tensor([[W, H]] * 6, dtype=torch.float32))
    # Padding repeats a real point, so every token is a plausible position.
    for b in range(6):
        pad = ~batch["mask"][b]
        if pad.any():
            assert torch.equal(
                batch["tracks"][b][:, pad], batch["tracks"][b][:, :1].expand(-1, int(pad.sum()), -1)
            )


def test_fixed_sample_tracks_are_the_projected_positions(fake_data):
    clip = clips_of(fake_data)[0]
    assert (clip.onset, clip.end) == (5, 14)
    px = normalized_to_pixels(TrackDataset([clip], CFG, augment=False)[0]["tracks"].numpy(), W, H)
    # Which source point each sampled point is (P0 is exact), and whether it is on the object.
    source = np.linalg.norm(px[0][:, None] - clip.tracks[0][None], axis=-1).argmin(1)
    on_object = source < N_OBJ
    assert on_object.any() and (~on_object).any()
    # Step 0 is I0 = frame 0; steps 1..H evenly cover the motion, steps 5..14, interpolated.
    times = np.linspace(5, 14, CFG.horizon + 1)
    shift = np.interp(times, np.arange(T), shift_at(np.arange(T)))
    shift[0] = 0.0
    expected = clip.tracks[0, source][None].repeat(CFG.horizon + 1, 0)  # (H+1, n, 2)
    expected[:, on_object, 0] += shift[:, None]
    np.testing.assert_allclose(px, expected, atol=1e-3)


def test_query_points_are_visible_in_i0_and_later_hidden_ones_keep_exact_targets(fake_data):
    clip = clips_of(fake_data)[0]
    cfg = TrackDataConfig(image_size=32, horizon=4, min_points=60, max_points=60, eval_points=60)
    ds = TrackDataset([clip], cfg, augment=True, seed=3, repeat=8)
    p0_hidden = clip.tracks[0, HIDDEN_AT_START]
    p0_later = clip.tracks[0, HIDDEN_LATER]
    for i in range(8):
        item = ds[i]
        step0 = item["tracks"][0].numpy()
        px0 = normalized_to_pixels(step0, W, H)
        assert item["tracks"].shape[1] == 55  # all 60 minus the 5 hidden at every start frame
        for p in p0_hidden:
            assert np.linalg.norm(px0 - p, axis=1).min() > 1e-3
        if np.allclose(np.linalg.norm(px0 - p0_later[0], axis=1).min(), 0, atol=1e-3):
            break
    else:
        pytest.fail("points hidden after step 10 were never sampled")


def test_same_seed_same_samples_and_epochs_differ(fake_data):
    clips = clips_of(fake_data)
    a = TrackDataset(clips, CFG, augment=True, seed=7)
    b = TrackDataset(clips, CFG, augment=True, seed=7)
    for i in range(len(clips)):
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in x)
    b.set_epoch(1)
    assert any(not torch.equal(a[i]["tracks"], b[i]["tracks"]) for i in range(len(clips)))
    fixed = TrackDataset(clips, CFG, augment=False)
    assert torch.equal(fixed[0]["tracks"], fixed[0]["tracks"])


def test_dataloader_workers_do_not_change_the_samples(fake_data):
    ds = TrackDataset(clips_of(fake_data), CFG, augment=True, seed=1)
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(
            ds, batch_size=4, num_workers=workers, collate_fn=collate_tracks
        )
        batches.append(next(iter(loader)))
    assert all(torch.equal(batches[0][k], batches[1][k]) for k in batches[0])


def test_horizontal_flip_mirrors_image_and_points(fake_data):
    clip = clips_of(fake_data)[0]
    plain = TrackDataset([clip], CFG, augment=True, seed=0)
    flip = TrackDataset([clip], TrackDataConfig(**{**CFG.__dict__, "hflip_prob": 1.0}), seed=0)
    a, b = plain[0], flip[0]
    assert torch.equal(b["image0"], a["image0"].flip(-1))
    assert torch.equal(b["tracks"][..., 0], -a["tracks"][..., 0])
    assert torch.equal(b["tracks"][..., 1], a["tracks"][..., 1])


def test_episode_split_holds_out_whole_seeds(fake_data):
    cfg = TrackDataConfig(val_fraction=0.3)
    refs = find_sim_episodes([fake_data], ["MG"])
    train = select_episodes(refs, "train", cfg)
    val = select_episodes(refs, "val", cfg)
    assert train and val and len(train) + len(val) == len(refs)
    assert not {r.seed for r in train} & {r.seed for r in val}
    # Every task of a held-out seed is held out.
    assert len(val) == 2 * len({r.seed for r in val})
    # A seed's side does not depend on which other seeds exist.
    big = held_out_keys(range(1000), 0.3, 0)
    small = held_out_keys(range(100), 0.3, 0)
    assert small == {s for s in big if s < 100}
    assert 0.25 < len(big) / 1000 < 0.35


def test_splits_the_model_never_saw_are_all_held_out(fake_data):
    refs = find_sim_episodes([fake_data])
    val = select_episodes(refs, "val", TrackDataConfig(val_fraction=0.3), train_splits=["MG"])
    assert {r.split for r in val} == {"MG", "CG"}
    assert len([r for r in val if r.split == "CG"]) == len([r for r in refs if r.split == "CG"])
    assert find_sim_episodes([fake_data], ["CG"]) and all(
        r.split == "CG" for r in find_sim_episodes([fake_data], ["CG"])
    )
    with pytest.raises(ValueError, match="unknown split"):
        find_sim_episodes([fake_data], ["XX"])


def test_stats_and_start_frames(fake_data):
    clips = clips_of(fake_data)
    tracks, mask = TrackDataset(clips, CFG).fixed_samples()
    assert tracks.shape[0] == len(clips) and mask.any(1).all()
    # Candidate I0 frames run from the start to a quarter of the way through the motion.
    assert clips[0].frame_steps[0] == 0 and clips[0].frame_steps[-1] == 5 + 2


# ------------------------------------------------------------------------------------------
# Labeller and videos
# ------------------------------------------------------------------------------------------


def translated_frames(n: int, d=(2.3, -1.7), size=(160, 120), seed=0) -> np.ndarray:
    """``n`` frames of a texture moving by ``d`` px per frame (sub-pixel, via warpAffine)."""
    w, h = size
    tex = texture(np.random.default_rng(seed), 2 * h, 2 * w)
    return np.stack(
        [
            cv2.warpAffine(
                tex, np.float32([[1, 0, -w / 2 + d[0] * t], [0, 1, -h / 2 + d[1] * t]]), (w, h)
            )
            for t in range(n)
        ]
    )


def test_lk_recovers_a_subpixel_translation_and_drops_points_leaving_the_frame():
    d = np.array([2.3, -1.7])
    frames = translated_frames(6, d)
    grid = np.meshgrid(np.linspace(5, 154, 12), np.linspace(5, 114, 10))
    points = np.stack(grid, -1).reshape(-1, 2).astype(np.float32)
    tracks, valid = LucasKanadeLabeler().label(frames, points)
    truth = points[None] + d * np.arange(6)[:, None, None]
    assert tracks.shape == (6, len(points), 2) and np.array_equal(tracks[0], points)
    left = ~((truth[-1] >= 2) & (truth[-1] <= [157, 117])).all(1)
    assert left.any() and not valid[left].any()
    assert valid[~left].mean() > 0.95
    err = np.linalg.norm(tracks - truth, axis=-1)[:, valid]
    assert err.max() < 0.5 and np.median(err) < 0.1


def test_lk_drops_points_an_occluder_covers():
    d = np.array([1.5, 1.0])
    frames = translated_frames(4, d, seed=1)
    frames[2:, 40:80, 60:100] = texture(np.random.default_rng(9), 40, 40)
    grid = np.meshgrid(np.linspace(10, 149, 15), np.linspace(10, 109, 12))
    points = np.stack(grid, -1).reshape(-1, 2).astype(np.float32)
    _, valid = LucasKanadeLabeler().label(frames, points)
    at2 = points + 2 * d
    covered = ((at2 >= [63, 43]) & (at2 <= [97, 77])).all(1)
    assert covered.sum() >= 10 and not valid[covered].any()
    far = ((at2 < [45, 25]) | (at2 > [115, 95])).any(1) & ((points + 3 * d) < [155, 115]).all(1)
    assert valid[far].mean() > 0.9


class CountingLabeler:
    """LK that counts its calls: shows whether the cache was used."""

    def __init__(self) -> None:
        self.inner = LucasKanadeLabeler()
        self.calls = 0

    @property
    def cache_key(self) -> str:
        return self.inner.cache_key

    def label(self, frames, points):
        self.calls += 1
        return self.inner.label(frames, points)


def test_videos_are_cut_labelled_cached_and_split_by_file(tmp_path):
    videos = tmp_path / "videos"
    folder = videos / "frames_a"
    folder.mkdir(parents=True)
    frames = translated_frames(50, d=(0.6, 0.3), size=(96, 72))
    for i, f in enumerate(frames):  # a folder of frames: lossless, 50 frames = 5 s at 10 fps
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer = cv2.VideoWriter(str(videos / "b.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 72))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    cfg = TrackDataConfig(
        image_size=32,
        horizon=4,
        clip_seconds=2.0,
        min_clip_seconds=1.0,
        video_fps=10.0,
        frames_fps=10.0,
        label_grid=6,
        val_fraction=0.5,
        min_points=5,
    )
    labeler = CountingLabeler()
    files = label_videos(videos, cfg, labeler)
    # 5 s at 10 fps -> two 2 s clips of 21 frames each per video; the 0.8 s rest is dropped.
    assert len(files) == 4 and labeler.calls == 4
    assert label_videos(videos, cfg, labeler) == files and labeler.calls == 4  # cached
    with np.load(files[0]) as z:
        tracks, valid = z["tracks"], z["valid"]
        assert tracks.shape == (21, 36, 2) and valid.sum() >= 20
        moved = tracks[-1, valid] - tracks[0, valid]
        np.testing.assert_allclose(np.median(moved, axis=0), [12.0, 6.0], atol=0.5)
    train = load_video_clips(videos, cfg, labeler, "train")
    val = load_video_clips(videos, cfg, labeler, "val")
    assert len(train) == 2 and len(val) == 2
    assert len({c.video for c in train}) == 1 and {c.video for c in train} != {c.video for c in val}
    item = TrackDataset(train, cfg)[0]
    assert item["image0"].shape == (3, 32, 32) and item["tracks"].shape[0] == 5


# ------------------------------------------------------------------------------------------
# Metrics, baselines, config
# ------------------------------------------------------------------------------------------


def test_metrics_are_in_pixels_at_256_scale():
    gt = torch.zeros(1, 5, 3, 2)  # static points, image 128 x 64
    wh = torch.tensor([[128.0, 64.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    # 1 px at 256 scale = 0.5 source px = 0.5 / 64 normalised units along x.
    one = gt + torch.tensor([0.5 / 64, 0.0])
    three = gt + torch.tensor([0.0, 1.5 / 32])
    m = example_metrics(torch.stack([three, one], 1), gt, mask, wh)
    assert m["ade_px"][0] == pytest.approx(3.0, rel=1e-5)
    assert m["fde_px"][0] == pytest.approx(3.0, rel=1e-5)
    assert m["min_ade_px"][0] == pytest.approx(1.0, rel=1e-5)
    assert m["delta_avg"][0] == pytest.approx(0.6)  # within 4, 8, 16 of 1, 2, 4, 8, 16
    assert np.isnan(m["ade_moving_px"][0])  # nothing moves in the ground truth


def test_baselines():
    p0 = torch.rand(2, 4, 2)
    still = nothing_moves(p0, 3)
    assert still.shape == (2, 1, 4, 4, 2) and torch.equal(still[:, 0, 3], p0)
    cv = constant_velocity(p0, 3, [0.1, -0.2])
    torch.testing.assert_close(cv[:, 0, 2], p0 + torch.tensor([0.2, -0.4]))


def test_default_yaml_and_flag_precedence():
    path = ROOT / "training" / "configs" / "tracks_default.yaml"
    cfg = train_tracks.parse_config(["--config", str(path), "--out", "o", "--image-size", "64"])
    assert cfg.out == "o" and cfg.dataset.image_size == 64 and cfg.splits == ("MG", "G")
    assert cfg.model_config().image_size == 64
    plain = train_tracks.parse_config(["--out", "o", "--data", "a", "b", "--no-progress"])
    assert plain.data == ("a", "b") and plain.progress is False
    with pytest.raises(ValueError, match="unknown split"):
        train_tracks.parse_config(["--out", "o", "--splits", "XX"])


def test_learning_rate_schedule():
    cfg = train_tracks.TrainConfig(out="o", warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert engine.lr_factor(0, cfg) == pytest.approx(0.1)
    assert engine.lr_factor(9, cfg) == pytest.approx(1.0)
    assert engine.lr_factor(60, cfg) == pytest.approx(0.55)
    assert engine.lr_factor(110, cfg) == pytest.approx(0.1)


def test_help_runs_as_a_script():
    for script in ("train_tracks.py", "eval_tracks.py"):
        out = subprocess.run(
            [sys.executable, str(ROOT / "training" / script), "--help"],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        )
        assert "usage:" in out.stdout


# ------------------------------------------------------------------------------------------
# Training smoke runs
# ------------------------------------------------------------------------------------------

TINY_FLAGS = [
    "--model",
    "T2A-Ti",
    "--image-size",
    "64",
    "--encoder-width",
    "16",
    "--batch-size",
    "4",
    "--warmup-steps",
    "5",
    "--log-every",
    "10",
    "--eval-every",
    "20",
    "--save-every",
    "20",
    "--num-workers",
    "0",
    "--threads",
    "2",
    "--no-progress",
    "--min-points",
    "20",
    "--max-points",
    "100",
    "--val-fraction",
    "0.34",
    "--eval-episodes",
    "4",
]


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory) -> Path:
    from t2a_sim.core import dataset

    root = tmp_path_factory.mktemp("sim")
    jobs = dataset.plan_jobs(["MG"], 3, tasks=["drawer_open", "box_push"])
    jobs += dataset.plan_jobs(["CG"], 1, tasks=["drawer_close"])
    rec = dataset.RecordConfig(width=160, height=120, n_points=200)
    dataset.generate(root, jobs, rec, progress=False)
    return root


@pytest.mark.slow
def test_train_resume_export_predict_and_evaluate(sim_data, tmp_path):
    out = tmp_path / "run"
    common = ["--data", str(sim_data), "--splits", "MG", "--out", str(out), *TINY_FLAGS]
    export = train_tracks.main([*common, "--max-steps", "20"])
    state = torch.load(export / "train_state.pt", weights_only=True)
    assert state["step"] == 20
    assert {"config.json", "model.safetensors", "stats.json", "train_config.json"} <= {
        p.name for p in export.iterdir()
    }
    export = train_tracks.main([*common, "--max-steps", "40", "--resume", "auto"])
    assert torch.load(export / "train_state.pt", weights_only=True)["step"] == 40
    rows = list(csvrows(out / "log.csv"))
    assert [int(r["step"]) for r in rows if r["loss"]] == [10, 20, 30, 40]
    assert all(np.isfinite(float(r["loss"])) for r in rows if r["loss"])
    assert any(r["val_ade_px"] for r in rows)
    assert (out / "best" / "model.safetensors").is_file()

    predictor = TrackPredictor(export)
    with np.load(next(sim_data.glob("MG/*/*.npz"))) as z:
        rgb, tracks, visible = z["rgb"], z["tracks"], z["visible"]
    points = tracks[0, visible[0]][:50]
    pred = predictor.predict(rgb[0], rgb[-1], points, num_samples=2, seed=0)
    assert pred.tracks_px.shape == (9, len(points), 2) and np.isfinite(pred.tracks_px).all()

    json_out = tmp_path / "eval.json"
    report = eval_tracks.main(
        [
            str(export),
            "--data",
            str(sim_data),
            "--num-samples",
            "2",
            "--ddim-steps",
            "5",
            "--threads",
            "2",
            "--json-out",
            str(json_out),
        ]
    )
    saved = json.loads(json_out.read_text())
    assert saved["results"] == json.loads(json.dumps(report["results"]))
    methods = set(saved["results"]["all"])
    assert methods == {"model-ddim5", "nothing-moves", "constant-velocity"}
    assert set(saved["results"]) == {"all", "MG", "CG"}  # CG was never trained on: all held out
    assert saved["results"]["CG"]["nothing-moves"]["episodes"] == 1
    for row in saved["results"]["all"].values():
        assert np.isfinite(row["ade_px"]) and 0 <= row["delta_avg"] <= 1


@pytest.mark.slow
def test_torchrun_two_processes_gloo(sim_data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "training" / "train_tracks.py"),
        "--data",
        str(sim_data),
        "--splits",
        "MG",
        "--out",
        str(out),
        *TINY_FLAGS,
        "--max-steps",
        "10",
        "--threads",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert torch.load(out / "last" / "train_state.pt", weights_only=True)["step"] == 10
    assert TrackPredictor(out / "last").horizon == 8


def csvrows(path: Path):
    import csv

    with path.open() as f:
        yield from csv.DictReader(f)
