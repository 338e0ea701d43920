"""What was written under Config's earlier defaults keeps its meaning.

Every shipped flagfile names the fields whose default changed, so it gives the Config it
always gave.
"""

import glob
import os

import pytest
from absl import flags

import pg_keras
from experiments.config_flags import config_from_flags, define_config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*.cfg")))
# The defaults of the fields whose default changed, before the change.
EARLIER_DEFAULTS = {"policy_learning_rate": 3e-3, "value_learning_rate": 3e-3,
                    "normalize_returns": False, "advantage_std_floor": 0.0,
                    "lr_schedule": "constant"}


def _parse(path, defaults):
    """The Config the train launcher builds from a flagfile, with these flag defaults."""
    values = flags.FlagValues()
    define_config_flags(values)
    for name, value in defaults.items():
        values.set_default(name, value)
    values(["train", f"--flagfile={path}"])
    return config_from_flags(values)


@pytest.mark.parametrize("path", FLAGFILES, ids=lambda p: os.path.basename(p))
def test_each_flagfile_gives_the_config_it_gave_under_the_earlier_defaults(path):
    assert _parse(path, EARLIER_DEFAULTS) == _parse(path, {})


def test_the_parse_fills_a_silent_flagfile_with_the_defaults_it_is_given(tmp_path):
    path = tmp_path / "silent.cfg"
    path.write_text("--seed=3\n")
    assert _parse(path, EARLIER_DEFAULTS) == pg_keras.Config(seed=3, **EARLIER_DEFAULTS)
    assert _parse(path, {}) == pg_keras.Config(seed=3)
    assert os.path.join(ROOT, "experiments", "configs", "cartpole.cfg") in FLAGFILES
