"""Input watchdog: stale after one control period plus a margin (by default), fresh again on the
next message."""

from __future__ import annotations

import math

import pytest

from t2a_control.core.watchdog import Watchdog, WatchdogConfig

PERIOD = 0.2  # s, the 5 Hz control loop


def test_inputs_are_stale_until_received():
    dog = Watchdog(["image", "joint_states"], PERIOD)
    assert dog.check(0.0) == (False, ["image", "joint_states"])
    dog.feed("joint_states", 0.0)
    assert dog.check(0.0) == (False, ["image"])
    assert dog.describe(0.0) == "image never received"
    dog.feed("image", 0.0)
    assert dog.check(0.0) == (True, [])


def test_stale_within_two_ticks_and_fresh_again_on_the_next_message():
    dog = Watchdog(["image", "joint_states", "plan"], PERIOD, stale_ticks=2, margin_s=0.0)
    ok_per_tick = []
    for tick in range(12):
        now = tick * PERIOD
        dog.feed("joint_states", now)
        dog.feed("plan", now)
        if tick <= 3 or tick >= 9:  # the camera drops out after tick 3 and returns at tick 9
            dog.feed("image", now)
        ok, stale = dog.check(now)
        ok_per_tick.append(ok)
        assert stale in ([], ["image"])
        if tick == 6:
            assert dog.describe(now) == "image 0.60 s old"
    # Last image at tick 3: still fresh 2 periods later (tick 5), stale from tick 6 on.
    assert ok_per_tick == [True] * 6 + [False] * 3 + [True] * 3


def test_by_default_one_period_and_the_margin_old_is_the_oldest_fresh_input():
    config = WatchdogConfig()
    assert config.max_age_s(PERIOD) == pytest.approx(0.3)
    dog = Watchdog.from_config(config, PERIOD)
    for name in ("joint_states", "image", "depth", "camera_info"):  # all watched by default
        dog.feed(name, 1.0)
    assert dog.check(1.0 + PERIOD)[0]  # the next tick still moves
    assert dog.check(1.0 + 0.3)[0]
    assert not dog.check(1.0 + 2 * PERIOD)[0]  # the one after holds
    assert dog.describe(1.0 + 2 * PERIOD) == (
        "joint_states 0.40 s old, image 0.40 s old, depth 0.40 s old, camera_info 0.40 s old"
    )


def test_by_default_a_stale_depth_or_camera_info_alone_holds():
    for name in ("depth", "camera_info"):
        dog = Watchdog.from_config(WatchdogConfig(), PERIOD)
        for other in ("joint_states", "image", "depth", "camera_info"):
            dog.feed(other, 1.4 if other != name else 1.0)
        assert dog.check(1.3)[0]
        assert dog.check(1.5) == (False, [name])
        assert dog.describe(1.5) == f"{name} 0.50 s old"
        dog.feed(name, 1.5)  # the stream is back
        assert dog.check(1.5)[0]
    dog = Watchdog.from_config(WatchdogConfig(), PERIOD)
    dog.feed("joint_states", 1.0)
    dog.feed("image", 1.0)
    assert dog.check(1.0) == (False, ["depth", "camera_info"])  # never received = stale


def test_exactly_two_periods_old_is_still_fresh():
    dog = Watchdog(["image"], PERIOD, stale_ticks=2, margin_s=0.0)
    dog.feed("image", 1.0)
    assert dog.check(1.0 + 2 * PERIOD)[0]
    assert not dog.check(1.0 + 2 * PERIOD + 1e-5)[0]


def test_bad_stamps_cannot_make_an_input_fresh():
    dog = Watchdog(["image"], PERIOD)
    dog.feed("image", math.nan)
    dog.feed("image", math.inf)
    assert dog.check(0.0) == (False, ["image"])
    dog.feed("other", 0.0)  # not watched: ignored
    assert dog.names == ("image",)
    dog.feed("image", 5.0)  # from the future (clocks disagree)
    assert not dog.check(1.0)[0]
    assert not dog.check(math.nan)[0]


def test_clock_jumping_back_takes_the_new_stamp():
    dog = Watchdog(["image"], PERIOD)
    dog.feed("image", 100.0)
    dog.feed("image", 0.1)  # the simulation restarted
    assert dog.check(0.2)[0]
    assert not dog.check(1.0)[0]


def test_reset_forgets_every_input():
    dog = Watchdog.from_config(WatchdogConfig(inputs=("image",), stale_ticks=3.0), PERIOD)
    assert dog.max_age_s == pytest.approx(0.6 + 0.1, abs=1e-5)  # three periods + the margin
    dog.feed("image", 0.0)
    dog.reset()
    assert not dog.check(0.0)[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"inputs": ("image", "image")}, "twice"),
        ({"inputs": ("",)}, "non-empty"),
        ({"stale_ticks": 0.0}, "stale_ticks"),
        ({"margin_s": -0.1}, "margin_s"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WatchdogConfig(**kwargs)


def test_constructor_rejects_bad_period():
    with pytest.raises(ValueError, match="period"):
        Watchdog(["image"], 0.0)
