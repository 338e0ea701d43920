"""Config's defaults changed; what was written under the earlier ones keeps its meaning.

Stored configs (run directories, exports) lacking a field read as the value their run had;
every shipped flagfile names the changed fields, so it gives the Config it always gave,
but the ``*_defaults.cfg`` ones, which show what Config's defaults do and follow them.
"""

import glob
import json
import os

import pytest
from absl import flags

import pg_keras
from earlier_defaults import EARLIER_DEFAULTS
from pg_keras.cli.config_flags import config_from_flags, define_config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_CONFIG = os.path.join(ROOT, "tests", "fixtures", "cartpole-run", "config.json")
FLAGFILES = sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*.cfg")))
FOLLOWING_DEFAULTS = [p for p in FLAGFILES if p.endswith("_defaults.cfg")]
TUNED = [p for p in FLAGFILES if p not in FOLLOWING_DEFAULTS]


def test_the_defaults_differ_from_the_earlier_ones_in_every_listed_field():
    config = pg_keras.Config()
    assert {name: getattr(config, name) for name in EARLIER_DEFAULTS} == {
        "policy_learning_rate": 1e-3, "value_learning_rate": 1e-2, "normalize_returns": True,
        "advantage_std_floor": 0.2, "lr_schedule": "linear"}


def test_a_version_1_config_reads_as_the_run_it_stored():
    with open(FIXTURE_CONFIG) as f:
        stored = json.load(f)
    assert "format_version" not in stored
    assert "advantage_std_floor" not in stored and "lr_schedule" not in stored
    config = pg_keras.Config.from_dict(stored)
    assert {name: getattr(config, name) for name in EARLIER_DEFAULTS} == EARLIER_DEFAULTS
    assert pg_keras.Config.completed(stored)["advantage_std_floor"] == 0.0
    assert pg_keras.Config.completed(stored)["lr_schedule"] == "constant"
    assert config.differences(stored) == []
    # The same run asked for with today's defaults is another config, and says where.
    today = pg_keras.Config.from_dict({**stored, "advantage_std_floor": 0.2,
                                       "lr_schedule": "linear"})
    assert today.differences(stored) == ["advantage_std_floor: 0.0 -> 0.2",
                                          "lr_schedule: 'constant' -> 'linear'"]


def test_a_later_stored_config_without_the_fields_reads_them_as_before():
    stored = pg_keras.Config(advantage_std_floor=0.0, lr_schedule="constant").to_stored()
    del stored["advantage_std_floor"], stored["lr_schedule"]
    config = pg_keras.Config.from_dict(stored)
    assert (config.advantage_std_floor, config.lr_schedule) == (0.0, "constant")
    assert config.differences(stored) == []
    assert pg_keras.Config().differences(stored) == ["advantage_std_floor: 0.0 -> 0.2",
                                                     "lr_schedule: 'constant' -> 'linear'"]


def _parse(path, defaults):
    """The Config the train launcher builds from a flagfile, with these flag defaults."""
    values = flags.FlagValues()
    define_config_flags(values)
    for name, value in defaults.items():
        values.set_default(name, value)
    values(["train", f"--flagfile={path}"])
    return config_from_flags(values)


@pytest.mark.parametrize("path", TUNED, ids=lambda p: os.path.basename(p))
def test_each_tuned_flagfile_gives_the_config_it_gave_under_the_earlier_defaults(path):
    assert _parse(path, EARLIER_DEFAULTS) == _parse(path, {})


@pytest.mark.parametrize("path", FOLLOWING_DEFAULTS, ids=lambda p: os.path.basename(p))
def test_each_defaults_flagfile_follows_the_defaults(path):
    config = _parse(path, {})
    assert {name: getattr(config, name) for name in EARLIER_DEFAULTS} == {
        name: getattr(pg_keras.Config(), name) for name in EARLIER_DEFAULTS}


def test_the_parse_fills_a_silent_flagfile_with_the_defaults_it_is_given(tmp_path):
    path = tmp_path / "silent.cfg"
    path.write_text("--seed=3\n")
    assert _parse(path, EARLIER_DEFAULTS) == pg_keras.Config(seed=3, **EARLIER_DEFAULTS)
    assert _parse(path, {}) == pg_keras.Config(seed=3)
    assert os.path.join(ROOT, "experiments", "configs", "cartpole.cfg") in TUNED
