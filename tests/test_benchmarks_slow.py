"""The published bars, as slow tests (`make test-slow`); the default suite skips them."""

import math
import os

import pytest

import pg_keras
from pg_keras.cli.config_flags import config_from_flags, define_config_flags

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs")


def _config_from_flagfile(name, **overrides):
    from absl import flags

    values = flags.FlagValues()
    define_config_flags(values)
    values([__file__, f"--flagfile={os.path.join(CONFIGS, name)}"])
    return config_from_flags(values).replace(**overrides)


@pytest.mark.slow
def test_cartpole_bar_every_seed_solves_and_stays_solved():
    # The bar: every seed ends its 50k-step run at >= 475, median first solve
    # <= 15,000 (cartpole.cfg's header has the 20-seed measurement).
    results = [pg_keras.train(_config_from_flagfile("cartpole.cfg", seed=seed))
               for seed in range(5)]
    finals = [r.evaluations[-1].mean_return for r in results]
    solved = sorted(math.inf if r.solved_at is None else r.solved_at for r in results)
    assert min(finals) >= 475, finals
    assert solved[2] <= 15_000, solved


@pytest.mark.slow
def test_acrobot_bar_with_baseline_within_500k_for_three_of_five_seeds():
    solved = [pg_keras.train(_config_from_flagfile("acrobot.cfg", seed=seed)).solved_at
              for seed in range(5)]
    assert sum(s is not None and s <= 500_000 for s in solved) >= 3, solved
