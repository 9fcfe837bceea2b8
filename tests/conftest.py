"""Hypothesis profiles shared by the tests of every package."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Hypothesis' default 200 ms deadline fails tests at random on a loaded
# 2-core machine, so both profiles switch it off. CI replays the same examples on
# every run (derandomize) so that a failure there can be reproduced.
settings.register_profile("dev", deadline=None)
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
