"""The closed-loop evaluation's bookkeeping: which episodes it runs and how it counts them."""

from __future__ import annotations

import json
import math
import types

import pytest

from t2a_bringup.core.episode import EpisodeConfig, _classify
from t2a_common.core.types import PLAN_OK
from t2a_sim.core.tasks import TASKS
from training import eval_closed_loop
from training.eval_closed_loop import LABELS, episodes, markdown, summarize, wilson

# Ground-truth tracks, open loop, strict grasp check, 2 dev seeds (500-501) of each of the 16
# split/task pairs: 32 episodes. Measured 31/32 at the grasp-synthesis planner (95% over 82 dev
# episodes, 96% over the 164 held-out ones of docs/evaluation.md); the floor allows two more misses
# and no task may lose both of its episodes on a split.
GT_FLOOR = 29


def test_episodes_cover_each_split_evenly_from_the_first_seed():
    eps = episodes(["MG", "CG"], 6, 1000)
    mg = [e for e in eps if e[0] == "MG"]
    cg = [e for e in eps if e[0] == "CG"]
    assert len(mg) == 10 and len(cg) == 6  # 5 MG tasks x 2 seeds, 3 CG tasks x 2 seeds
    assert {s for _, _, s in eps} == {1000, 1001}
    assert len(set(eps)) == len(eps)


def test_forty_per_split_is_the_protocol_8_per_mg_g_task_14_per_cg_tg_task():
    eps = episodes(["MG", "G", "CG", "TG"], 40, 1000)
    per_task = {}
    for split, task, _ in eps:
        per_task[(split, task)] = per_task.get((split, task), 0) + 1
    assert {n for (s, _), n in per_task.items() if s in ("MG", "G")} == {8}
    assert {n for (s, _), n in per_task.items() if s in ("CG", "TG")} == {14}
    for split in ("MG", "G", "CG", "TG"):
        assert sum(n for (s, _), n in per_task.items() if s == split) >= 40
    # Every task of a split runs the same seeds (so every method and the expert do too).
    seeds = {(s, t): {e[2] for e in eps if e[:2] == (s, t)} for s, t in per_task}
    assert seeds[("MG", "drawer_open")] == seeds[("MG", "box_push")] == set(range(1000, 1008))
    assert len(episodes(["CG"], 40, 1000, per_task=2)) == 6  # --per-task overrides


def test_wilson_interval_matches_known_values():
    lo, hi = wilson(5, 10)
    assert math.isclose(lo, 0.2366, abs_tol=1e-4) and math.isclose(hi, 0.7634, abs_tol=1e-4)
    lo, hi = wilson(0, 10)  # upper bound z^2 / (n + z^2)
    assert lo == 0.0 and math.isclose(hi, 1.96**2 / (10 + 1.96**2), rel_tol=1e-12)
    lo, hi = wilson(40, 40)
    assert hi == 1.0 and math.isclose(lo, 40 / (40 + 1.96**2), rel_tol=1e-12)
    assert all(math.isnan(v) for v in wilson(0, 0))
    for k in range(0, 41):  # the interval holds the rate and narrows with n
        lo, hi = wilson(k, 40)
        assert 0.0 <= lo <= k / 40 <= hi <= 1.0
        assert hi - lo < (lambda b: b[1] - b[0])(wilson(k // 4, 10)) + 1e-12


def _plan(status: int = PLAN_OK, message: str = ""):
    return types.SimpleNamespace(status=status, message=message)


def test_failure_taxonomy_is_task_aware():
    cfg = EpisodeConfig()
    push, lift, drawer = TASKS["box_push"], TASKS["bottle_lift"], TASKS["drawer_open"]
    free_err = {"position": 0.052, "angle": 0.11}
    # Nothing grasped: a grasping task missed its grasp, a push task missed only if unmoved.
    assert _classify(_plan(), "done", "", False, 20.0, cfg, lift, free_err, 0.0)[0] == (
        "grasp_missed"
    )
    why = "handle: part centre 0.031 m beyond the jaw tips"
    assert _classify(_plan(), "done", "", False, 20, cfg, lift, free_err, 0.0, why) == (
        "grasp_missed",
        f"no grasp: {why}",
    )
    assert _classify(_plan(), "done", "", False, 20.0, cfg, push, free_err, 0.002)[0] == (
        "push_missed"
    )
    label, detail = _classify(_plan(), "done", "", False, 20.0, cfg, push, free_err, 0.06)
    assert label == "wrong_final_pose"
    assert detail == "position 0.052 m (tol 0.03), angle 0.110 rad (tol 0.26)"
    label, detail = _classify(_plan(), "done", "", True, 20.0, cfg, drawer, {"joint": 0.031}, 0.1)
    assert (label, detail) == ("wrong_final_pose", "joint 0.031 m off (tol 0.02)")
    # A controller that gave up: a blocked hand on a push is the controller's, not a grasp.
    blocked = "execute: the hand is blocked ...; the hand cannot follow the plan"
    assert _classify(_plan(), "failed", blocked, False, 9.0, cfg, push, free_err, 0.05) == (
        "controller_failed",
        blocked,
    )
    assert _classify(_plan(), "failed", blocked, False, 9.0, cfg, lift, free_err, 0.0)[0] == (
        "grasp_missed"
    )
    assert _classify(_plan(), "failed", "IK no_convergence", True, 9, cfg, lift, {}, 0)[0] == (
        "ik_unreachable"
    )
    no_ik = "pre-grasp pose is not reachable (joint_limits): every exact solution is outside"
    assert _classify(_plan(), "failed", no_ik, False, 0.2, cfg, push, {}, 0)[0] == "ik_unreachable"
    assert _classify(_plan(3, "no motion"), "failed", "", False, 0, cfg, lift, {}, 0) == (
        "plan_failed",
        "no motion",
    )
    assert _classify(_plan(), "execute", "", True, 90.0, cfg, lift, free_err, 0.1)[0] == "timeout"


def test_episodes_of_some_tasks_only():
    eps = episodes(["MG", "G"], 6, 1000, ["drawer_open", "box_push"])
    assert {t for _, t, _ in eps} == {"drawer_open", "box_push"}
    assert len(eps) == 12  # per split: 2 tasks x 3 seeds
    with pytest.raises(ValueError, match="split TG has none of the tasks"):
        episodes(["TG"], 3, 1000, ["drawer_open"])


def test_summary_counts_successes_and_failures_per_split():
    rows = [
        {"split": "MG", "method": "gt_open_loop", "success": True, "failure": ""},
        {"split": "MG", "method": "gt_open_loop", "success": False, "failure": "grasp_missed"},
        {"split": "G", "method": "gt_open_loop", "success": False, "failure": "timeout"},
        {"split": "G", "method": "gt_residual", "success": True, "failure": ""},
    ]
    s = summarize(rows, ["gt_open_loop", "gt_residual"], ["MG", "G"])
    assert s["gt_open_loop"]["MG"]["successes"] == 1 and s["gt_open_loop"]["MG"]["episodes"] == 2
    assert s["gt_open_loop"]["all"]["failures"] == {"grasp_missed": 1, "timeout": 1}
    assert s["gt_residual"]["all"]["success_rate"] == 1.0
    assert s["gt_residual"]["MG"]["episodes"] == 0
    table = markdown(s, ["gt_open_loop", "gt_residual"], ["MG", "G"], "note")
    assert (
        f"| {LABELS['gt_open_loop']} | 50% (1/2) [9-91] | 0% (0/1) [0-79] | 33% (1/3) [6-79] |"
        in table
    )
    assert f"| {LABELS['gt_residual']} | - | 100% (1/1) [21-100] | 100% (1/1) [21-100] |" in table


def test_summary_has_the_expert_per_task_and_wrong_pose_errors():
    rows = [
        {"split": "MG", "task": "drawer_open", "seed": 1, "method": "gt_open_loop",
         "success": False, "failure": "wrong_final_pose", "errors": {"joint": 0.05},
         "expert_success": True},
        {"split": "MG", "task": "drawer_open", "seed": 2, "method": "gt_open_loop",
         "success": False, "failure": "wrong_final_pose", "errors": {"joint": 0.03},
         "expert_success": True},
        {"split": "MG", "task": "box_push", "seed": 1, "method": "gt_open_loop",
         "success": False, "failure": "push_missed", "expert_success": False},
        {"split": "MG", "task": "box_push", "seed": 1, "method": "gt_query",
         "success": True, "failure": "", "expert_success": False},
    ]  # fmt: skip
    s = summarize(rows, ["gt_open_loop", "gt_query"], ["MG"])
    assert s["expert"]["MG"]["successes"] == 2 and s["expert"]["MG"]["episodes"] == 3
    drawer = s["gt_open_loop"]["tasks"]["MG/drawer_open"]
    assert drawer["failures"] == {"wrong_final_pose": 2}
    assert drawer["wrong_final_pose_median_error"] == {"joint": 0.04}
    assert s["gt_query"]["tasks"]["MG/box_push"]["successes"] == 1
    table = markdown(s, ["gt_open_loop", "gt_query"], ["MG"], "note")
    assert "| MG/drawer_open | 0% (0/2) [0-66] | - | 100% (2/2) [34-100] |" in table
    assert "| MG/drawer_open | wrong_final_pose 2 (median joint 0.040) | - |" in table
    assert "| MG/box_push | push_missed 1 | - |" in table
    assert f"| {LABELS['expert']} | 67% (2/3)" in table


def test_methods_without_their_checkpoint_are_skipped_with_a_note(tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["--methods", "absolute", "--absolute-checkpoint", str(tmp_path / "absent"),
            "--out", str(out)]  # fmt: skip
    assert eval_closed_loop.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"note: skipping absolute ({LABELS['absolute']})" in printed
    assert str(tmp_path / "absent") in printed and "0 episodes to run" in printed
    assert (out / "table.md").exists()


def test_an_out_folder_refuses_to_resume_with_other_outcome_settings(tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "settings.json").write_text(json.dumps({"grasp_offset_m": 0.02}))
    with pytest.raises(SystemExit) as exc:
        eval_closed_loop.main(["--methods", "gt_open_loop", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "holds results made with other settings" in err
    assert "grasp_offset_m was 0.02, now 0.0" in err and "Use another --out" in err
    assert not (out / "episodes.jsonl").exists()  # nothing ran


@pytest.mark.slow
@pytest.mark.sim
def test_ground_truth_tracks_keep_their_floor_on_every_task(tmp_path):
    """Issue #14's claim on a small seed set: with exact tracks, the planner's grasp synthesis and
    the controller solve nearly every task of every split in open loop under the strict grasp
    check; a regression in planning, control or the sim's grasp shows here first."""
    out = tmp_path / "gt"
    argv = ["--splits", "MG", "G", "CG", "TG", "--per-task", "2", "--first-seed", "500",
            "--methods", "gt_open_loop", "--workers", "2", "--out", str(out)]  # fmt: skip
    assert eval_closed_loop.main(argv) == 0
    summary = json.loads((out / "results.json").read_text())["summary"]["gt_open_loop"]
    solved = summary["all"]["successes"]
    print(f"\n[closed loop] GT tracks, open loop: {solved}/{summary['all']['episodes']}")
    assert summary["all"]["episodes"] == 32
    assert solved >= GT_FLOOR
    lost = [task for task, row in summary["tasks"].items() if row["successes"] == 0]
    assert not lost, f"tasks that lost every episode: {lost}"
