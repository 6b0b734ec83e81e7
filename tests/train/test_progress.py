"""The pre-training bar shows progress against the bound that really ends the run."""

from __future__ import annotations

import pytest

from pixeltext_train.progress import budget_progress


def test_a_time_budget_with_a_large_step_cap_shows_minutes_not_hours():
    # the demo: 10 minutes, a cap of 100,000 steps; 1,208 steps done after 8:23
    fraction, left = budget_progress(1208, 100_000, 503.0, 600.0, 503.0 / 1208)
    assert fraction == pytest.approx(503 / 600)
    assert left == pytest.approx(97.0)


def test_when_steps_end_the_run_first_they_set_the_progress():
    fraction, left = budget_progress(5, 15, 5.0, 600.0, 1.0)  # 15 steps of 1 s in a 10-minute budget
    assert fraction == pytest.approx(1 / 3) and left == pytest.approx(10.0)
    assert budget_progress(15, 15, 15.0, 600.0, 1.0) == (1.0, 0.0)
    assert budget_progress(0, 10, 0.0, None, None) == (0.0, None)  # nothing known yet
    assert budget_progress(3, 100, 700.0, 600.0, 2.0) == (1.0, 0.0)  # over time: done
