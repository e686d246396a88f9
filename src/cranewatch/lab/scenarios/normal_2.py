"""normal-2: the same honest crane on another day (seed 11), for baseline-versus-test.

Different containers, loads, wind and timing, the same hosts and conversations: a detector
that learned from ``normal`` must report nothing here.
"""

from cranewatch.lab.scenario import Scenario

SCENARIO = Scenario(
    name="normal-2",
    summary="the honest crane with another seed (11): a clean test capture for a baseline",
    seed=11,
)
