"""Sample reuse (update_epochs x minibatches of the clipped surrogate) is the REINFORCE
update where the derivation says it must be, and clips where the hand computation says.

docs/reinforce.md ("Reusing a batch: the clipped surrogate") derives what these tests pin:
at the collecting policy r = 1 and grad r = grad log pi, so the first step of the ratio
surrogate, clipped or not, is REINFORCE's step.
"""

import functools
import json
import os
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import pg_keras
from pg_keras import losses
from pg_keras.collect import Collector, EnvOptions, make_vector_env
from toy_envs import BanditEnv, vector_env

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

BANDITS = {
    "discrete": gym.spaces.Discrete(4, start=1),
    "multi_discrete": gym.spaces.MultiDiscrete([3, 4]),
    "multi_binary": gym.spaces.MultiBinary(3),
    "box_clip": gym.spaces.Box(-2.0, 2.0, (2,), np.float32),
    "box_tanh": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
}


def _bandit(name, **overrides):
    space = BANDITS[name]
    envs = vector_env([lambda: BanditEnv(space, lambda a: float(np.sum(a)))] * 8)
    config = pg_keras.Config(num_envs=8, steps_per_update=4,
                             action_bounds="tanh" if name == "box_tanh" else "clip",
                             state_dependent_std=name == "box_clip", **overrides)
    return envs, config


def _gym(env_id, **overrides):
    config = pg_keras.Config(**{"env_id": env_id, "num_envs": 4, "steps_per_update": 16,
                                **overrides})
    return make_vector_env(EnvOptions.of(config), config.num_envs), config


CASES = {
    **{f"bandit_{name}": (lambda name=name, **o: _bandit(name, **o)) for name in BANDITS},
    "masked_dict_observation": lambda **o: _gym("PgkMaskedChoice-v0", **o),
    "cartpole_lstm": lambda **o: _gym("CartPole-v1", recurrent_cell="lstm",
                                      recurrent_units=8, **o),
    "cartpole_gamma_weighting_no_baseline": lambda **o: _gym(
        "CartPole-v1", baseline=False, gamma_weighting=True, collect_mode="episodes",
        steps_per_update=64, **o),
    "pendulum_normalized": lambda **o: _gym("Pendulum-v1", normalize_observations=True,
                                            gae_lambda=0.9, **o),
}


def _first_step_gradients(case, clip_ratio, value_clip):
    """REINFORCE's gradient and the clipped surrogate's first-step gradient on one batch."""
    envs, config = CASES[case](update_epochs=1, minibatches=1, clip_ratio=clip_ratio,
                               value_clip=value_clip if clip_ratio and "no_baseline" not in case
                               else 0.0, seed=3)
    learner = pg_keras.build_learner(config, envs.single_observation_space,
                                     envs.single_action_space)
    batch = learner.tensors(Collector(envs, learner.policy, config).collect()[0])
    strategy = learner.strategy
    reinforce, _, _ = strategy.run(learner._loss_and_gradients, args=(batch,))
    reuse = learner.reuse
    reused, _, _ = strategy.run(functools.partial(reuse.prepare, learner), args=(batch,))
    order = reuse.orders()[0, 0]
    clipped, metrics = strategy.run(functools.partial(reuse.minibatch_gradients, learner),
                                    args=(reused, order))
    envs.close()
    return reinforce, clipped, metrics


@pytest.mark.filterwarnings("ignore:collect_mode='episodes'")
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("clip_ratio, value_clip", [(0.0, 0.0), (0.2, 0.5)])
def test_the_first_step_of_the_ratio_surrogate_is_the_reinforce_step(case, clip_ratio,
                                                                     value_clip):
    reinforce, clipped, metrics = _first_step_gradients(case, clip_ratio, value_clip)
    # log pi_old is the learner's own log-probability of the batch: the ratio is exactly 1.
    assert float(metrics["approx_kl"]) == 0.0 and float(metrics["clip_fraction"]) == 0.0
    assert len(reinforce) == len(clipped)
    for a, b in zip(reinforce, clipped):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-7)


def test_the_clip_zeroes_the_gradient_only_where_it_binds():
    # Ratios 1.5 and 0.5 under Psi = +1 and -1, eps = 0.2: the clip binds where the ratio
    # moved past it in the direction Psi rewards (row 0: r > 1 + eps with Psi > 0; row 3:
    # r < 1 - eps with Psi < 0); elsewhere the term is r * Psi and its gradient
    # d(-mean(r Psi)) / d log pi = -r Psi / 4.
    ratios = np.array([1.5, 0.5, 1.5, 0.5], np.float32)
    weights = tf.constant([1.0, 1.0, -1.0, -1.0])
    old = tf.constant(np.full(4, np.log(0.3), np.float32))
    log_probs = tf.Variable(old + np.log(ratios).astype(np.float32))
    mask = tf.ones([4])
    with tf.GradientTape() as tape:
        loss = losses.clipped_surrogate_loss(log_probs, old, weights, mask, 0.2)
    gradient = tape.gradient(loss, log_probs).numpy()
    np.testing.assert_allclose(gradient, [0.0, -0.125, 0.375, 0.0], atol=1e-6)
    # The value: -mean[min(1.5, 1.2), min(0.5, 0.8), min(-1.5, -1.2), min(-0.5, -0.8)].
    np.testing.assert_allclose(loss.numpy(), -np.mean([1.2, 0.5, -1.5, -0.8]), rtol=1e-6)
    kl, fraction = losses.ratio_statistics(log_probs, old, mask, 0.2)
    np.testing.assert_allclose(kl.numpy(), np.mean(ratios - 1 - np.log(ratios)), rtol=1e-5)
    assert float(fraction) == 1.0
    # A padded step (mask 0) contributes nothing, whatever it holds.
    padded = tf.concat([log_probs, [np.inf]], 0)
    with tf.GradientTape() as tape:
        tape.watch(padded)
        loss = losses.clipped_surrogate_loss(padded, tf.concat([old, [0.0]], 0),
                                             tf.concat([weights, [np.nan]], 0),
                                             tf.constant([1.0, 1.0, 1.0, 1.0, 0.0]), 0.2)
    padded_gradient = tape.gradient(loss, padded).numpy()
    np.testing.assert_allclose(padded_gradient[:4], gradient, atol=1e-6)
    assert padded_gradient[4] == 0.0


def test_the_clipped_value_loss_keeps_the_worse_of_the_two_errors():
    # old V = 0, target 1, c = 0.2: V = 0.5 is clipped to 0.2 (error 0.64 > 0.25, and its
    # gradient is 0); V = -0.5 is farther than its clip (error 2.25 > 1.44: gradient
    # 2 (V - G) / 2 = -1.5); V = 0.1 lies inside the clip (error 0.81, gradient -0.9).
    values = tf.Variable([0.5, -0.5])
    with tf.GradientTape() as tape:
        loss = losses.clipped_value_loss(values, tf.zeros([2]), tf.ones([2]), tf.ones([2]), 0.2)
    np.testing.assert_allclose(loss.numpy(), (0.64 + 2.25) / 2, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, values).numpy(), [0.0, -1.5], atol=1e-6)
    inside = tf.Variable([0.1])
    with tf.GradientTape() as tape:
        loss = losses.clipped_value_loss(inside, tf.zeros([1]), tf.ones([1]), tf.ones([1]), 0.2)
    np.testing.assert_allclose(tape.gradient(loss, inside).numpy(), [-1.8], rtol=1e-6)
    # A padded step (mask 0) holding a NaN target leaves the loss and the gradient alone.
    padded = tf.Variable([0.1, 0.0])
    with tf.GradientTape() as tape:
        loss = losses.clipped_value_loss(padded, tf.zeros([2]), tf.constant([1.0, np.nan]),
                                         tf.constant([1.0, 0.0]), 0.2)
    np.testing.assert_allclose(loss.numpy(), 0.81, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, padded).numpy(), [-1.8, 0.0], rtol=1e-6)


NO_SIGNALS = [pg_keras.HandleSignals(enabled=False)]
SMALL = pg_keras.Config(total_steps=1024, num_envs=4, steps_per_update=32, eval_every=0,
                        hidden_sizes=(16,), value_hidden_sizes=(16,), update_epochs=3,
                        minibatches=4, clip_ratio=0.2, value_clip=0.5)


def test_epochs_minibatches_and_the_kl_stop_are_reported():
    history = pg_keras.train(SMALL, callbacks=NO_SIGNALS).history
    assert [r["epochs"] for r in history] == [3.0] * 8
    assert all(r["approx_kl"] > 0 and 0 <= r["clip_fraction"] <= 1 for r in history)
    # A target no second step can meet: each update takes its first step only.
    stopped = pg_keras.train(SMALL.replace(target_kl=1e-12), callbacks=NO_SIGNALS).history
    assert [r["epochs"] for r in stopped] == [0.25] * 8
    assert all(r["skipped"] == 0.0 for r in stopped)


def test_the_compiled_path_reuses_the_batch_inside_its_one_graph():
    config = SMALL.replace(backend="compiled", target_kl=0.5)
    result = pg_keras.train(config, callbacks=NO_SIGNALS)
    assert [r["epochs"] for r in result.history] == [3.0] * 8
    assert result.learner.trace_count == 0  # the update ran only inside the fused graph
    again = pg_keras.train(config, callbacks=NO_SIGNALS)
    for a, b in zip(result.learner.policy_variables, again.learner.policy_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("fields, message", [
    (dict(minibatches=3), "minibatches must divide the batch's num_envs * steps_per_update "
                          "= 128 rows; received minibatches=3"),
    (dict(recurrent_cell="gru", minibatches=8), "minibatches must divide num_envs (a "
                                                "recurrent policy's minibatches are whole"),
    (dict(clip_ratio=1.0), "clip_ratio must be in [0, 1)"),
    (dict(value_clip=0.2, baseline=False, collect_mode="episodes"),
     "value_clip clips the value model's loss and needs a baseline"),
    (dict(update_epochs=0), "update_epochs must be a positive integer"),
    (dict(target_kl=-1.0), "target_kl must be a non-negative finite number"),
    (dict(advantage_normalization="epoch"), "advantage_normalization must be one of"),
])
def test_invalid_sample_reuse_options_fail_in_one_line(fields, message):
    with pytest.raises(pg_keras.InputError, match=None) as error:
        SMALL.replace(**fields)
    assert message in str(error.value) and "\n" not in str(error.value)


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    import pg_keras
    config = pg_keras.Config(**{fields})
    def kill_after_the_checkpoint(record):
        if record["env_steps"] == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
    pg_keras.train(config, root_dir=sys.argv[1], callbacks=[
        pg_keras.Checkpointing(every=256),
        pg_keras.LambdaCallback(on_update_end=kill_after_the_checkpoint)])
""")


def test_a_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    config = SMALL.replace(total_steps=1536, eval_every=512, eval_episodes=2)
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in config.to_dict().items()}
    # Killed in the update after the checkpoint at 512 steps: the resume repeats it.
    script = KILLED_RUN.format(fields=json.dumps(fields).replace("true", "True")
                               .replace("false", "False"), kill_at=640)
    root = str(tmp_path / "killed")
    killed = subprocess.run([sys.executable, "-c", script, root], cwd=REPO, timeout=300,
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = pg_keras.train(config, root_dir=root,
                             callbacks=[pg_keras.Checkpointing(every=256), *NO_SIGNALS])
    uninterrupted = pg_keras.train(config, callbacks=NO_SIGNALS)
    for a, b in zip(resumed.learner.policy_variables + resumed.learner.value_variables,
                    uninterrupted.learner.policy_variables
                    + uninterrupted.learner.value_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert [r["approx_kl"] for r in resumed.history] == [
        r["approx_kl"] for r in uninterrupted.history]
