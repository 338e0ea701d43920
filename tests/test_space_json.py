"""Tests of pg_keras.space_json: every supported space survives a round trip through JSON."""

import json

import gymnasium as gym
import numpy as np
import pytest

from pg_keras import spaces
from pg_keras.config import InputError
from pg_keras.space_json import read_spaces, space_from_json, space_to_json, write_spaces

Box, Discrete, Dict, Tuple = gym.spaces.Box, gym.spaces.Discrete, gym.spaces.Dict, gym.spaces.Tuple
MultiDiscrete, MultiBinary = gym.spaces.MultiDiscrete, gym.spaces.MultiBinary

SPACES = {
    "unbounded float32": Box(-np.inf, np.inf, (4,), np.float32),
    "half-bounded float32": Box(np.array([-1.0, -np.inf], np.float32),
                                np.array([np.inf, 2.5], np.float32)),
    "float64 scalar": Box(-0.1, 0.3, (), np.float64),
    "uneven float32 bounds": Box(np.array([[-0.1, -3.3]], np.float32),
                                 np.array([[1e-7, 4e30]], np.float32)),
    "uint8 image": Box(0, 255, (12, 10, 3), np.uint8),
    "int32 box": Box(np.array([-5, 0], np.int32), np.array([5, 7], np.int32), dtype=np.int32),
    "discrete": Discrete(5),
    "discrete with start": Discrete(3, start=-1),
    "discrete int32": Discrete(4, dtype=np.int32),
    "multi-discrete": MultiDiscrete([3, 2, 4]),
    "multi-discrete 2-d with start": MultiDiscrete([[2, 3], [4, 5]], start=[[0, 1], [-1, 2]]),
    "multi-binary": MultiBinary(6),
    "multi-binary 2-d": MultiBinary([2, 3]),
    "dict, its order kept": Dict([("zeta", Discrete(2)), ("alpha", Box(0, 1, (2,))),
                                  ("image", Box(0, 255, (8, 8, 1), np.uint8))]),
    "nested tuple and dict": Tuple([Dict([("a", Tuple([Discrete(2), MultiBinary(3)]))]),
                                    Box(-np.inf, 0.0, (2, 2))]),
    "dict with an action mask": Dict([("observation", Box(-1, 1, (3,))),
                                      ("action_mask", MultiBinary(4))]),
}


def _assert_same(got, want):
    assert type(got) is type(want)
    if isinstance(want, (Dict, Tuple)):
        names = list(want.spaces) if isinstance(want, Dict) else range(len(want.spaces))
        got_names = list(got.spaces) if isinstance(got, Dict) else range(len(got.spaces))
        assert list(got_names) == list(names)
        for name in names:
            _assert_same(got.spaces[name], want.spaces[name])
        return
    assert got == want and got.dtype == want.dtype and got.shape == want.shape
    for field in ("low", "high", "nvec", "start", "n"):
        if hasattr(want, field):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
            assert np.asarray(getattr(got, field)).dtype == np.asarray(getattr(want, field)).dtype


@pytest.mark.parametrize("name", list(SPACES))
def test_a_space_survives_strict_json(name):
    space = SPACES[name]
    text = json.dumps(space_to_json(space), allow_nan=False)  # no NaN or Infinity in it
    _assert_same(space_from_json(json.loads(text)), space)


def test_an_image_is_stored_in_a_few_bytes_and_uneven_bounds_entry_by_entry():
    assert space_to_json(SPACES["uint8 image"]) == {
        "type": "Box", "dtype": "uint8", "shape": [12, 10, 3], "low": 0, "high": 255}
    stored = space_to_json(SPACES["half-bounded float32"])
    assert stored["low"] == [-1.0, "-inf"] and stored["high"] == ["inf", 2.5]


def test_the_action_mask_split_of_a_round_tripped_space_is_the_same():
    space = space_from_json(json.loads(json.dumps(space_to_json(SPACES["dict with an action "
                                                                       "mask"]))))
    rest, had_mask = spaces.split_action_mask(space)
    assert had_mask and list(rest.spaces) == ["observation"]
    _assert_same(rest, spaces.split_action_mask(SPACES["dict with an action mask"])[0])


@pytest.mark.parametrize("space", [gym.spaces.Text(5), Dict({1: Discrete(2)}),
                                   gym.spaces.Sequence(Discrete(2))])
def test_a_space_that_cannot_be_recorded_is_named(space):
    with pytest.raises(InputError, match="cannot record the space|keys must be strings"):
        space_to_json(space)


@pytest.mark.parametrize("value", [None, {"type": "Graph"}, {"type": "Box", "dtype": "float32"},
                                   {"type": "Box", "dtype": "str", "shape": [1], "low": 0,
                                    "high": 1},
                                   {"type": "Box", "dtype": "float32", "shape": [1],
                                    "low": "nan", "high": 1},
                                   {"type": "Dict", "spaces": [[1, {"type": "Discrete"}]]}])
def test_json_that_is_not_a_space_is_refused_in_one_line(value):
    with pytest.raises(InputError, match="spaces.json does not describe a gymnasium space") as e:
        space_from_json(value, "spaces.json")
    assert "\n" not in str(e.value)


def test_spaces_json_is_written_and_read_back_and_a_missing_one_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match=r"has no spaces.json: .* train it again, or resume "):
        read_spaces(str(tmp_path))
    write_spaces(str(tmp_path), SPACES["nested tuple and dict"], SPACES["multi-discrete"])
    observation_space, action_space = read_spaces(str(tmp_path))
    _assert_same(observation_space, SPACES["nested tuple and dict"])
    _assert_same(action_space, SPACES["multi-discrete"])
    record = json.loads((tmp_path / "spaces.json").read_text())
    assert record["format_version"] == 3
    (tmp_path / "spaces.json").write_text(json.dumps({**record, "format_version": 1}))
    with pytest.raises(InputError, match=r"spaces.json was written by an earlier version of "
                                         r"pg_keras \(format_version 1; this version reads "
                                         r"format 3 only\): train again"):
        read_spaces(str(tmp_path))
