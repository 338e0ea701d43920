"""The run directory and export committed in tests/fixtures, used as a user would.

They are written by tests/fixtures/make_fixtures.py (tests/fixtures/README.md): this
version must resume the run, re-export it to the same model, and evaluate the export,
through the launchers.
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import launchers
from earlier_defaults import EARLIER_DEFAULT_FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
RUN = os.path.join(FIXTURES, "cartpole-run")
EXPORT = os.path.join(FIXTURES, "cartpole-export")
# The fixture's config as flags (tests/fixtures/make_fixtures.py), with the values it was
# run with where today's defaults differ (a user resuming it names them the same way).
TRAIN_FLAGS = ["--env_id=CartPole-v1", "--seed=0", "--num_envs=4", "--steps_per_update=25",
               "--total_steps=2000", "--eval_every=1000", "--eval_episodes=2",
               "--hidden_sizes=8", "--value_hidden_sizes=8", *EARLIER_DEFAULT_FLAGS,
               "--checkpoint_every=500", "--quiet"]


def _launch(module, *args):
    """The launcher run in this process (tests/launchers.py); the export launcher's run of
    the fixture is a process of its own (tests/conftest.py)."""
    run = launchers.run(f"experiments.{module}", *args)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def _lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_interrupted_fixture_run_resumes_to_the_end(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(RUN, run_dir)
    before = _lines(run_dir / "metrics.jsonl")
    out = _launch("train", *TRAIN_FLAGS, f"--root_dir={run_dir}",
                  f"--export_dir={tmp_path / 'export'}")
    assert "2000 env steps" in out, out
    after = _lines(run_dir / "metrics.jsonl")
    # The 15 updates before the interruption are kept as they were; 5 more follow.
    assert [r["env_steps"] for r in before] == list(range(100, 1501, 100))
    assert after[:15] == before
    assert [r["env_steps"] for r in after[15:]] == list(range(1600, 2001, 100))
    with open(run_dir / "summary.json") as f:
        summary = json.load(f)
    assert summary["env_steps"] == 2000 and summary["interrupted"] is None
    assert summary["updates"] == 20
    assert os.path.exists(tmp_path / "export" / "saved_model.pb")


@pytest.fixture(scope="module")
def reexport(fixture_run_exported):
    """The fixture run exported by today's export launcher (tests/conftest.py)."""
    run, export_dir = fixture_run_exported
    assert run.returncode == 0, run.stderr[-3000:]
    return export_dir


def test_fixture_run_reexports_to_the_fixture_export(reexport):
    export_dir = reexport
    observations = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    fresh = tf.saved_model.load(str(export_dir))
    committed = tf.saved_model.load(EXPORT)
    for name in ("distribution", "value", "serving_default"):
        got = fresh.signatures[name](observations=tf.constant(observations))
        want = committed.signatures[name](observations=tf.constant(observations))
        assert got.keys() == want.keys()
        for key in got:
            np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-6,
                                       atol=1e-6)


def test_fixture_export_evaluates_like_its_reexport(reexport):
    """Same episodes (seeded), same policy: the committed export and today's give one result."""
    results = []
    for model in (EXPORT, reexport):
        out = _launch("evaluate", f"--saved_model={model}", "--episodes=3", "--seed=7")
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["env"] == "CartPole-v1" and results[0]["episodes"] == 3
    assert results[0]["mean_return"] == results[1]["mean_return"]
    assert results[0]["mean_return"] >= 8  # no CartPole episode is shorter
