"""Throughput of both collection paths, against their limits, measured in one process.

    python -m experiments.benchmark            # the README's table
    python -m experiments.benchmark --quick    # a smoke run (CI)

Prints one JSON line per configuration: env id, path, num_envs, env steps per second with
learning (median of ``--repeats`` timed repetitions after a warm-up), and the reference
measured in the same process just before:

* gymnasium path: the vector env itself, ``gym.make_vec(env_id, num_envs, "sync")`` stepped
  with random actions and no learning (also ``"async"``, for costly envs);
* compiled path: the same policy network, compiled the same way, mapping ``num_envs``
  observations to sampled actions in a ``tf.while_loop`` with no env and no learning.
"""

from __future__ import annotations

import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from experiments import cli  # noqa: E402

cli.require_tensorflow_backend("benchmark")

import gymnasium as gym  # noqa: E402
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import pg_keras  # noqa: E402
from pg_keras.envs.collector import CompiledCollector, make_compiled_env  # noqa: E402

flags.DEFINE_bool("quick", False, "A few seconds per configuration, for a smoke run.")
flags.DEFINE_list("paths", ["gymnasium", "compiled"], "Which paths to measure.")
flags.DEFINE_integer("repeats", 5, "Timed repetitions (the median is reported).")
flags.DEFINE_bool("async_reference", True, "Also time the async vector env (gymnasium path).")
FLAGS = flags.FLAGS

# (env id, num_envs, steps per update) of the gymnasium path.
GYMNASIUM = [("CartPole-v1", 16, 32), ("CartPole-v1", 64, 32), ("Acrobot-v1", 16, 32),
             ("Pendulum-v1", 16, 32), ("LunarLander-v3", 8, 32)]
COMPILED = [("CartPole-v1", n, 32) for n in (16, 256, 2048, 8192)]


def _median_rate(run, steps_per_call: int, repeats: int, calls: int) -> float:
    run()  # warm-up: traces, first allocations
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            run()
        rates.append(steps_per_call * calls / (time.perf_counter() - start))
    return statistics.median(rates)


def vector_env_rate(env_id: str, num_envs: int, mode: str, repeats: int, steps: int) -> float:
    """Env steps per second of gymnasium's own vector env, random actions, no learning."""
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    try:
        envs.reset(seed=0)
        envs.action_space.seed(0)
        actions = [envs.action_space.sample() for _ in range(64)]
        count = [0]

        def run():
            for _ in range(steps):
                envs.step(actions[count[0] % 64])
                count[0] += 1
        return _median_rate(run, steps * num_envs, repeats, 1)
    finally:
        envs.close()


def gymnasium_train_rate(env_id, num_envs, steps, repeats, iterations) -> float:
    config = pg_keras.Config(env_id=env_id, num_envs=num_envs, steps_per_update=steps,
                             total_steps=10**9, eval_every=0)
    keras.utils.set_random_seed(0)
    envs = pg_keras.make_vector_env(env_id, num_envs)
    try:
        learner = pg_keras.Learner(config, envs.single_observation_space,
                                   envs.single_action_space)
        collector = pg_keras.Collector(envs, learner, config)

        def run():
            batch, _ = collector.collect()
            learner.train_step(batch)
        return _median_rate(run, num_envs * steps, repeats, iterations)
    finally:
        envs.close()


def compiled_rates(env_id, num_envs, steps, repeats, iterations, jit_compile):
    """(training rate, policy-inference limit) of the compiled path."""
    config = pg_keras.Config(env_id=env_id, num_envs=num_envs, steps_per_update=steps,
                             total_steps=10**9, eval_every=0, backend="compiled",
                             jit_compile=jit_compile)
    keras.utils.set_random_seed(0)
    env = make_compiled_env(env_id)
    learner = pg_keras.Learner(config, env.observation_space, env.action_space)
    collector = CompiledCollector(env, learner, config)
    train = _median_rate(lambda: collector.iterate_fn(), num_envs * steps, repeats, iterations)

    policy = learner.policy
    observations = tf.random.normal([num_envs] + list(env.observation_space.shape))

    def inference():
        def body(t, total):
            seed = tf.stack([t, 7])
            _, action = policy.sample(observations + tf.cast(t, tf.float32) * 1e-3, seed)
            return t + 1, total + tf.reduce_sum(tf.cast(action, tf.float32))
        return tf.while_loop(lambda t, _: t < steps, body, (tf.constant(0), tf.constant(0.0)))

    infer = tf.function(inference, jit_compile=jit_compile)
    limit = _median_rate(lambda: infer()[1].numpy(), num_envs * steps, repeats, iterations)
    return train, limit


def main(argv):
    quick = FLAGS.quick
    repeats = 2 if quick else FLAGS.repeats
    machine = {"cpu_cores": os.cpu_count(), "gpu": bool(tf.config.list_physical_devices("GPU"))}
    if "gymnasium" in FLAGS.paths:
        for env_id, num_envs, steps in GYMNASIUM[:1] if quick else GYMNASIUM:
            try:
                gym.spec(env_id)
                raw = vector_env_rate(env_id, num_envs, "sync", repeats, 200 if quick else 1000)
            except (gym.error.Error, ImportError) as error:
                print(json.dumps({"env_id": env_id, "path": "gymnasium", "skipped": str(error)}))
                continue
            train = gymnasium_train_rate(env_id, num_envs, steps, repeats, 3 if quick else 20)
            record = {"env_id": env_id, "path": "gymnasium", "num_envs": num_envs,
                      "steps_per_update": steps, "steps_per_second": round(train),
                      "reference": "vector env, sync, random actions",
                      "reference_steps_per_second": round(raw),
                      "fraction_of_reference": round(train / raw, 3), **machine}
            if FLAGS.async_reference and not quick:
                record["async_reference_steps_per_second"] = round(
                    vector_env_rate(env_id, num_envs, "async", repeats, 1000))
            print(json.dumps(record), flush=True)
    if "compiled" in FLAGS.paths:
        for env_id, num_envs, steps in COMPILED[:2] if quick else COMPILED:
            for jit_compile in (False,) if quick else (False, True):
                iterations = 2 if quick else max(3, 200_000 // (num_envs * steps))
                train, limit = compiled_rates(env_id, num_envs, steps, repeats, iterations,
                                              jit_compile)
                print(json.dumps({
                    "env_id": env_id, "path": "compiled", "jit_compile": jit_compile,
                    "num_envs": num_envs, "steps_per_update": steps,
                    "steps_per_second": round(train),
                    "reference": "policy inference alone, compiled the same way",
                    "reference_steps_per_second": round(limit),
                    "fraction_of_reference": round(train / limit, 3), **machine}), flush=True)


if __name__ == "__main__":
    cli.run("benchmark", main, bad_input=(pg_keras.InputError,))
