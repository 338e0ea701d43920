"""Tuning options: schedules, per-model gradient clipping, observation clipping."""

import dataclasses
import json
import subprocess
import sys

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf

import launchers
import pg_keras
from pg_keras import schedules
from earlier_defaults import with_earlier_defaults
from loaded_policy import LoadedPolicy
from pg_keras import returns

SMALL = dict(num_envs=4, steps_per_update=16, total_steps=1024, eval_every=0, eval_episodes=2)


def _cartpole_learner(**fields):
    config = pg_keras.Config(**{**SMALL, **fields})
    envs = pg_keras.make_vector_env(config.env_id, config.num_envs)
    keras.utils.set_random_seed(config.seed)
    learner = pg_keras.build_learner(config, envs.single_observation_space,
                                     envs.single_action_space)
    return config, learner, pg_keras.Collector(envs, learner.policy, config)


def _weights(variables):
    return [np.asarray(v.numpy(), np.float64) for v in variables]


@pytest.mark.parametrize("env_steps", [0, 256, 1000])
def test_sgd_step_is_the_scheduled_rate_times_the_gradient(env_steps):
    config, learner, collector = _cartpole_learner(optimizer="sgd", lr_schedule="linear",
                                                   policy_learning_rate=0.1,
                                                   value_learning_rate=0.02)
    batch, _ = collector.collect()
    gradients = [np.asarray(g, np.float64) for g in learner._loss_and_gradients(
        pg_keras.batch.Batch(*(tf.constant(x) for x in batch)))[0]]
    before = _weights(learner.policy_variables + learner.value_variables)
    learner.update(batch, env_steps)
    after = _weights(learner.policy_variables + learner.value_variables)
    factor = 1.0 - env_steps / config.total_steps
    rates = ([0.1 * factor] * len(learner.policy_variables)
             + [0.02 * factor] * len(learner.value_variables))
    moved = 0.0
    for b, a, g, rate in zip(before, after, gradients, rates):
        np.testing.assert_allclose(b - a, rate * g, rtol=1e-4, atol=1e-7)
        moved = max(moved, float(np.max(np.abs(b - a))))
    assert moved > 1e-4


def _scheduled_run(backend, entropy_coef=0.05):
    records = []
    pg_keras.train(pg_keras.Config(**SMALL, backend=backend, lr_schedule="linear",
                                   entropy_schedule="linear", entropy_coef=entropy_coef,
                                   policy_learning_rate=1e-3, value_learning_rate=4e-3),
                   callbacks=[pg_keras.LambdaCallback(on_update_end=records.append)])
    return records


@pytest.mark.parametrize("backend", ["gymnasium", "compiled"])
def test_each_update_uses_the_rates_and_bonus_of_the_steps_before_its_batch(backend):
    records = _scheduled_run(backend)
    assert len(records) == 16
    for record in records:
        factor = 1.0 - (record["env_steps"] - 64) / 1024
        assert record["policy_learning_rate"] == pytest.approx(1e-3 * factor, rel=1e-6)
        assert record["value_learning_rate"] == pytest.approx(4e-3 * factor, rel=1e-6)
        assert record["entropy_coef"] == pytest.approx(0.05 * factor, rel=1e-6)
        # The bonus enters the loss with the scheduled weight (float32 sums: the tolerance
        # follows the value loss, the largest term).
        bonus = record["policy_loss"] + record["value_loss"] - record["loss"]
        assert bonus == pytest.approx(0.05 * factor * record["entropy"],
                                      abs=1e-6 * (1.0 + record["value_loss"]))
    assert records[-1]["policy_learning_rate"] == pytest.approx(1e-3 / 16, rel=1e-6)


@pytest.mark.parametrize("env_steps", [0, 1, 333, 49_999, 50_000, 70_000])
def test_scheduled_values_are_the_float64_schedule_rounded_once(env_steps):
    config = pg_keras.Config(total_steps=50_000, policy_learning_rate=3e-3,
                             value_learning_rate=7e-3, entropy_coef=0.02,
                             lr_schedule="linear", entropy_schedule="constant")
    factor = max(0.0, 1.0 - env_steps / 50_000)  # Python floats: float64
    expected = np.array([3e-3 * factor, 7e-3 * factor, 0.02], np.float32)
    values = schedules.scheduled_values(config, tf.constant(env_steps, tf.int64))
    np.testing.assert_array_equal([v.numpy() for v in values], expected)


def test_constant_schedules_leave_the_metrics_and_rates_alone():
    records = []
    config = pg_keras.Config(**SMALL, lr_schedule="constant", entropy_schedule="constant",
                             policy_learning_rate=3e-3)
    result = pg_keras.train(config, callbacks=[
        pg_keras.LambdaCallback(on_update_end=records.append)])
    assert "policy_learning_rate" not in records[0]
    assert float(result.learner.policy_optimizer.learning_rate) == pytest.approx(3e-3)


def test_a_resumed_run_with_schedules_matches_an_uninterrupted_one(tmp_path):
    config = pg_keras.Config(num_envs=4, steps_per_update=32, total_steps=2048, eval_every=512,
                             eval_episodes=2, lr_schedule="linear", entropy_schedule="linear",
                             entropy_coef=0.01)
    reference = pg_keras.train(config, root_dir=str(tmp_path / "a"))

    class Crash(Exception):
        pass

    def crash(record, count=[0]):
        count[0] += 1
        if count[0] == 11:  # past the checkpoint at 512 steps (update 4)
            raise Crash

    with pytest.raises(Crash):
        pg_keras.train(config, root_dir=str(tmp_path / "b"), callbacks=[
            pg_keras.LambdaCallback(on_update_end=crash)])
    resumed = pg_keras.train(config, root_dir=str(tmp_path / "b"))
    for a, b in zip(reference.learner.policy_variables + reference.learner.value_variables,
                    resumed.learner.policy_variables + resumed.learner.value_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert ([r["policy_learning_rate"] for r in reference.history]
            == [r["policy_learning_rate"] for r in resumed.history])


@pytest.mark.parametrize("max_norm, value_max_norm, expected_value_norm",
                         [(1e6, 0.001, 0.001), (0.002, -1, 0.002), (0.002, 0.0, None)])
def test_each_model_is_clipped_to_its_own_norm(max_norm, value_max_norm, expected_value_norm):
    _, learner, collector = _cartpole_learner(optimizer="sgd", policy_learning_rate=1.0,
                                              value_learning_rate=1.0, max_grad_norm=max_norm,
                                              value_max_grad_norm=value_max_norm)
    batch, _ = collector.collect()
    policy_before = _weights(learner.policy_variables)
    value_before = _weights(learner.value_variables)
    metrics = learner.update(batch)

    def step_norm(before, variables):
        return np.sqrt(sum(np.sum((b - a) ** 2) for b, a in zip(before, _weights(variables))))

    policy_norm = float(metrics["policy_grad_norm"])
    value_norm = float(metrics["value_grad_norm"])
    assert value_norm > 0.01 and policy_norm > 0.002  # large enough to be clipped
    assert step_norm(policy_before, learner.policy_variables) == pytest.approx(
        min(policy_norm, max_norm), rel=1e-3)
    assert step_norm(value_before, learner.value_variables) == pytest.approx(
        expected_value_norm or value_norm, rel=1e-3)


@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_observation_clip_is_applied_by_the_policy_and_its_export(clip, tmp_path):
    config = pg_keras.Config(normalize_observations=True, clip_observations=clip)
    env = gym.make("CartPole-v1")
    learner = pg_keras.build_learner(config, env.observation_space, env.action_space)
    rng = np.random.default_rng(0)
    learner.normalizer.update(rng.normal(0.0, 0.1, (256, 4)).astype(np.float32))
    for variable in learner.policy_variables:
        variable.assign(rng.normal(0.0, 1.0, variable.shape).astype(np.float32))
    far = rng.normal(0.0, 5.0, (64, 4)).astype(np.float32)  # ~50 running stds out
    features = learner.policy.features(far).numpy()
    if clip:
        assert np.max(np.abs(features)) == pytest.approx(clip)
    else:
        assert np.max(np.abs(features)) > 20
    directory = pg_keras.export_policy(learner.policy, str(tmp_path / "export"))
    loaded = tf.saved_model.load(directory)
    np.testing.assert_array_equal(loaded(far).numpy(), learner.policy.predict(far)[0])
    # The clip decides actions here: an export that did not clip would act otherwise.
    normalizer = learner.normalizer
    unclipped = (far - normalizer.mean.numpy()) / np.sqrt(normalizer.variance.numpy() + 1e-8)
    head = learner.policy.head
    unclipped_actions = head.to_env(head.greedy(learner.policy.network(unclipped))).numpy()
    assert (clip == 0) == np.array_equal(unclipped_actions, learner.policy.predict(far)[0])


@pytest.mark.parametrize("field, value, message", [
    ("lr_schedule", "cosine", "lr_schedule must be one of 'constant', 'linear'"),
    ("entropy_schedule", "exp", "entropy_schedule must be one of 'constant', 'linear'"),
    ("value_max_grad_norm", -2.0, "value_max_grad_norm must be a non-negative finite number, "
                                  "or -1 for max_grad_norm; received value_max_grad_norm=-2.0"),
    ("clip_observations", -1.0, "clip_observations must be a non-negative finite number"),
])
def test_bad_tuning_values_are_named(field, value, message):
    with pytest.raises(pg_keras.InputError, match=message.replace("(", r"\(")):
        pg_keras.Config(**{field: value})


# Reaches 500 at its fifth evaluation and falls back at the sixth: the best is not the last.
BEST_FLAGS = with_earlier_defaults(num_envs=4, steps_per_update=32, total_steps=3072,
                                   eval_every=512, eval_episodes=2, policy_learning_rate=1e-2)
BEST_RUN = pg_keras.Config(**BEST_FLAGS)


@pytest.fixture(scope="module")
def best_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("best") / "run"
    return root, pg_keras.train(BEST_RUN, root_dir=str(root))


def test_the_best_evaluation_is_kept_apart_and_restores_that_policy(best_run):
    root, result = best_run
    means = [e.mean_return for e in result.evaluations]
    best = int(np.argmax(means))
    assert best < len(means) - 1 and means[best] > means[-1]
    summary = json.loads((root / "summary.json").read_text())
    assert summary["best_evaluation"] == dataclasses.asdict(result.evaluations[best])
    assert summary["final_evaluation"] == dataclasses.asdict(result.evaluations[-1])
    # Only that checkpoint is under best/, and the rotation of the others left it there.
    assert sorted(p.name for p in (root / "checkpoints" / "best").iterdir()) == [
        f"ckpt-{result.evaluations[best].env_steps}.data-00000-of-00001",
        f"ckpt-{result.evaluations[best].env_steps}.index", "evaluation.json"]
    learner = pg_keras.run_dir.restore_learner(str(root))
    restored = pg_keras.run_dir.restore_best(str(root / "checkpoints"), learner)
    assert restored == dataclasses.asdict(result.evaluations[best])
    # The evaluation repeated with its own episodes' seed gives the same returns.
    again = pg_keras.evaluate(learner.policy, BEST_RUN.env_id, BEST_RUN.eval_episodes,
                              seed=BEST_RUN.seed + 1_000_003 + best)
    assert float(np.mean(again)) == means[best]


def test_launcher_exports_the_best_policy_or_refuses_a_bad_choice(best_run, tmp_path):
    root, result = best_run
    best = max(result.evaluations, key=lambda e: e.mean_return)
    flags = [f"--{k}={v}" for k, v in BEST_FLAGS.items()]
    run = launchers.run("experiments.train", *flags, "--quiet", f"--root_dir={root}",
                        "--export=best", f"--export_dir={tmp_path / 'export'}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (f"the policy evaluated at {best.env_steps} env steps: {best.mean_return:.2f}"
            in run.stdout)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    again = pg_keras.evaluate(LoadedPolicy(loaded, BEST_RUN.env_id), BEST_RUN.env_id, 2,
                              seed=BEST_RUN.seed + 1_000_003 + result.evaluations.index(best))
    assert float(np.mean(again)) == best.mean_return
    bad = subprocess.run([sys.executable, "-m", "experiments.train", "--export=latest"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith(
        "export must be final, best or none; received 'latest'")


def test_a_floor_keeps_near_identical_advantages_from_becoming_unit_noise():
    noise = np.random.default_rng(0).normal(0.0, 1e-3, 256).astype(np.float32)
    near_constant = tf.constant(4.0 + noise)
    # Without a floor, a thousandth of spread is scaled up to full-size weights.
    assert float(tf.math.reduce_std(returns.normalize(near_constant))) == (
        pytest.approx(1.0, rel=1e-2))
    floored = returns.normalize(near_constant, std_floor=0.5).numpy()
    values = near_constant.numpy().astype(np.float64)
    np.testing.assert_allclose(floored, (values - values.mean()) / 0.5, atol=1e-5)
    assert np.std(floored) < 3e-3
    # A batch that varies more than the floor is standardized as before.
    spread = tf.constant(noise * 1e4)
    np.testing.assert_allclose(returns.normalize(spread, std_floor=0.5).numpy(),
                               returns.normalize(spread).numpy(), rtol=1e-6)


def test_the_learner_applies_the_floor_and_logs_the_spread_it_compares():
    _, learner, collector = _cartpole_learner(optimizer="sgd", advantage_std_floor=1e6,
                                              policy_learning_rate=1.0, baseline=False,
                                              collect_mode="episodes", steps_per_update=64)
    batch, _ = collector.collect()
    before = _weights(learner.policy_variables)
    metrics = learner.update(batch)
    # Returns of up to 64 steps spread by tens; against a floor of 1e6 the weights are
    # about 1e-5, and so is the step.
    assert 1.0 < float(metrics["advantage_std"]) < 100.0
    moved = max(float(np.max(np.abs(b - a))) for b, a in zip(before, _weights(
        learner.policy_variables)))
    assert 0 < moved < 1e-3
