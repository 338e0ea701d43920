"""Learning through the public API: a bandit, CartPole, your own Keras models, seeding."""

import json
import subprocess
import sys

import gymnasium as gym
import keras
import numpy as np
import pytest

import launchers
import pg_keras
from earlier_defaults import with_earlier_defaults
import run_files
from toy_envs import BanditEnv

for _rewarded in (0, 1):
    gym.register(f"PgkBanditRewards{_rewarded}-v0",
                 entry_point=lambda rewarded=_rewarded: BanditEnv(
                     gym.spaces.Discrete(2), lambda action: float(action == rewarded)))


@pytest.mark.parametrize("rewarded", [0, 1])
def test_two_updates_move_the_greedy_action_to_the_rewarded_one(rewarded):
    """One-step episodes, reward 1 for one action: whichever action the initial policy
    prefers, after two updates the greedy evaluation takes the rewarded one."""
    config = pg_keras.Config(env_id=f"PgkBanditRewards{rewarded}-v0", seed=0, num_envs=16,
                             steps_per_update=4, total_steps=128, eval_every=0,
                             eval_episodes=2, policy_learning_rate=0.05)
    result = pg_keras.train(config)
    assert int(result.learner.updates.numpy()) == 2
    assert result.final_return == 1.0, result.evaluations
    assert result.policy.predict(np.array([[0.5, -0.5, 1.0]], np.float32))[0].tolist() == [rewarded]


@pytest.mark.slow
def test_cartpole_reaches_195_with_baseline():
    config = pg_keras.Config(**with_earlier_defaults(
        env_id="CartPole-v1", seed=1, total_steps=30_000, eval_every=5_000, eval_episodes=10))
    result = pg_keras.train(config)
    best = max(e.mean_return for e in result.evaluations)
    assert best >= 195, [e.mean_return for e in result.evaluations]


@pytest.mark.slow
def test_cartpole_learns_without_baseline():
    """Textbook REINFORCE: whole episodes, return-to-go, no critic."""
    config = pg_keras.Config(**with_earlier_defaults(
        env_id="CartPole-v1", seed=0, baseline=False, num_envs=8, steps_per_update=500,
        total_steps=40_000, eval_every=10_000, eval_episodes=10, policy_learning_rate=0.01))
    assert config.resolved_collect_mode == "episodes"
    result = pg_keras.train(config)
    first_returns = [r["return_mean"] for r in result.history[:3]]
    best = max(e.mean_return for e in result.evaluations)
    assert best >= 195 and best > 3 * np.mean(first_returns), (
        first_returns, [e.mean_return for e in result.evaluations])


@keras.saving.register_keras_serializable(package="tests")
class TwoTower(keras.Model):
    """A user-written subclassed model: a torso and a linear output."""

    def __init__(self, output_units, **kwargs):
        super().__init__(**kwargs)
        self.torso = keras.layers.Dense(32, activation="relu")
        self.out = keras.layers.Dense(output_units,
                                      kernel_initializer=keras.initializers.Orthogonal(0.01))

    def call(self, inputs):
        return self.out(self.torso(inputs))


def _train_two_towers(total_steps, eval_every):
    policy = TwoTower(2)
    config = pg_keras.Config(**with_earlier_defaults(
        env_id="CartPole-v1", seed=0, total_steps=total_steps, eval_every=eval_every,
        eval_episodes=10))
    result = pg_keras.train(config, policy_network=policy,
                            value_network=lambda shape, units: TwoTower(units))
    assert result.policy.network is policy  # the user's own object was trained
    assert isinstance(result.policy.value_network, TwoTower)
    return result


def test_custom_subclassed_keras_models_are_the_ones_trained():
    result = _train_two_towers(total_steps=1024, eval_every=0)
    network = result.policy.network
    trained = {id(v) for v in result.learner.policy_variables}
    assert {id(network.torso.kernel), id(network.out.kernel)} <= trained


@pytest.mark.slow
def test_custom_subclassed_keras_models_train_through_the_public_api():
    result = _train_two_towers(total_steps=30_000, eval_every=10_000)
    best = max(e.mean_return for e in result.evaluations)
    assert best >= 150, [e.mean_return for e in result.evaluations]


def test_custom_model_with_a_wrong_output_is_named_in_the_error():
    with pytest.raises(ValueError, match=r"policy_network must map .*2.*received output shape.*3"):
        pg_keras.train(pg_keras.Config(total_steps=2048), policy_network=TwoTower(3))


def _short_run(seed):
    config = pg_keras.Config(env_id="CartPole-v1", seed=seed, total_steps=1024,
                             steps_per_update=32, num_envs=8, eval_every=0, eval_episodes=2)
    result = pg_keras.train(config)
    weights = [v.numpy() for v in result.learner.policy_variables + result.learner.value_variables]
    return result, weights


def test_one_seed_fixes_envs_weights_and_sampling():
    a, weights_a = _short_run(3)
    b, weights_b = _short_run(3)
    for x, y in zip(weights_a, weights_b):
        np.testing.assert_array_equal(x, y)
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    _, weights_c = _short_run(4)
    assert not all(np.array_equal(x, y) for x, y in zip(weights_a, weights_c))


def test_five_line_api():
    config = pg_keras.Config(env_id="CartPole-v1", total_steps=2048, eval_episodes=2)
    result = pg_keras.train(config)
    actions = result.policy.predict(np.zeros((3, 4), np.float32))[0]
    assert actions.shape == (3,) and actions.dtype == np.int64
    assert set(actions.tolist()) <= {0, 1}


def test_stop_when_solved_ends_at_the_solving_evaluation_and_stays_ended(tmp_path):
    config = pg_keras.Config(env_id="CartPole-v1", num_envs=4, steps_per_update=16,
                             total_steps=4096, eval_every=512, eval_episodes=2)
    # Every CartPole episode lasts at least 8 steps: the first evaluation reaches 8.
    stop = [pg_keras.StopWhenSolved(target_return=8.0)]
    result = pg_keras.train(config, root_dir=str(tmp_path / "run"), callbacks=stop)
    assert result.solved_at == 512 and result.env_steps == 512, result.evaluations
    assert [e.env_steps for e in result.evaluations] == [512]
    again = pg_keras.train(config, root_dir=str(tmp_path / "run"), callbacks=stop)
    assert again.env_steps == 512 and int(again.learner.updates.numpy()) == 8
    # Without the callback the run takes all its steps, solved or not.
    target = pg_keras.LambdaCallback(on_train_begin=lambda run: setattr(run, "target_return", 8))
    full = pg_keras.train(config, callbacks=[target])
    assert full.solved_at == 512 and full.env_steps == 4096
    with pytest.raises(pg_keras.InputError, match="StopWhenSolved needs evaluations"):
        pg_keras.train(config.replace(eval_every=0), callbacks=[pg_keras.StopWhenSolved()])


def test_launcher_prints_the_final_evaluation(tmp_path):
    # In this process (tests/launchers.py): the train process is the quickstart test's.
    run = launchers.run("experiments.train", "--total_steps=2048", "--eval_episodes=2",
                        "--quiet", f"--root_dir={tmp_path}/run",
                        f"--export_dir={tmp_path}/export")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "final evaluation return over 2 episodes" in run.stdout


def test_launcher_rejects_a_bad_flag_value():
    run = subprocess.run([sys.executable, "-m", "experiments.train", "--gamma=1.5"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "gamma must be in [0, 1]; received gamma=1.5" in run.stderr


def test_the_run_directory_holds_each_update_record_once_as_a_line_and_as_scalars(
        tmp_path, capsys):
    config = pg_keras.Config(env_id="CartPole-v1", num_envs=2, steps_per_update=8,
                             total_steps=512, eval_every=256, eval_episodes=2)
    seen = []
    result = pg_keras.train(config, root_dir=str(tmp_path), callbacks=[
        pg_keras.LambdaCallback(on_update_end=seen.append), pg_keras.ProgressLogger()])
    assert "env steps" in capsys.readouterr().out  # the progress line, not a terminal
    assert len(result.history) == 32 and seen == result.history
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line) for line in f] == result.history
    scalars = run_files.train_scalars(tmp_path / "tensorboard")
    keys = {k for r in result.history for k in r} - {"env_steps"}
    assert set(scalars) == {f"train/{k}" for k in keys}
    for key in keys:
        expected = [(r["env_steps"], float(np.float32(r[key]))) for r in result.history
                    if key in r]
        np.testing.assert_array_equal(scalars[f"train/{key}"], expected, err_msg=key)
    assert len(scalars["train/return_mean"]) < 32  # some updates end no episode
