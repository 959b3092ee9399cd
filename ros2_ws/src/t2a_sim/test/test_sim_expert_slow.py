"""The scripted expert's success rate over 20 seeds of every task in every split (slow tier).

Kept out of the sim tier (``-m sim``) on purpose: ~2-3 minutes on two cores. The sim tier runs
the same check on two seeds per task (test_sim_tasks.py).
"""

from __future__ import annotations

import pytest

from t2a_sim.core.config import SimConfig
from t2a_sim.core.env import SimEnv
from t2a_sim.core.expert import run_expert
from t2a_sim.core.tasks import SPLITS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("split,task", [(s, t) for s in SPLITS for t in SPLITS[s].tasks])
def test_expert_succeeds_95_percent_over_20_seeds(split, task):
    env = SimEnv(SimConfig(width=64, height=48))
    failures = []
    for seed in range(20):
        env.reset(task, split, seed)
        ok, err = run_expert(env)
        if not ok:
            failures.append((seed, err))
    assert len(failures) <= 1, f"{task} in {split}: failed seeds {failures}"
