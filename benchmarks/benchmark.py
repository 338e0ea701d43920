"""Throughput of both collection paths, against their limits, measured in one process.

    python -m benchmarks.benchmark            # the tables of docs/performance.md
    python -m benchmarks.benchmark --quick    # a smoke run (CI)

Prints one JSON line per configuration: env id, path, num_envs, env steps per second with
learning, and the reference measured in the same process:

* gymnasium path: the vector env itself, ``gym.make_vec(env_id, num_envs, "sync")`` stepped
  with random actions and no learning (also ``"async"``, for costly envs);
* launcher: ``pg_keras.train`` as ``experiments.train`` calls it, with a run directory,
  against the sync vector env and against the same ``pg_keras.train`` without a run
  directory (CartPole-v1, 16 envs; ``launcher_over_loop`` is the median of the per-round
  ratios of the two);
* compiled path: the same policy network, compiled the same way as in the rollout (with
  XLA unless ``--noxla_rollout --jit_compile=false``), mapping ``num_envs`` observations to
  sampled actions in a ``tf.while_loop`` with no env and no learning.

The machine may be shared and its speed drift, so the reference and the training are
timed in alternation (reference, training, reference, training, ...) after a warm-up of
each: noise then hits both sides of a pair alike. Each line gives the median rate of each
side over ``--repeats`` pairs and ``fraction_of_reference``, the median of the per-pair
ratios (with their range). A last line compares the fastest CartPole-v1 configuration of
each path (medians measured at different times, so noisier than the pairs).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from pg_keras.cli import common as cli  # noqa: E402

cli.require_tensorflow_backend("benchmark")

import pg_keras  # noqa: E402

# Imported by main, once the flags are checked and TensorFlow has started quietly.
gym = keras = tf = CompiledCollector = make_compiled_env = None

# This tool's flags: its own, never absl's global registry.
FLAGS = flags.FlagValues()
flags.DEFINE_bool("quick", False, "A few seconds per configuration, for a smoke run.",
                  flag_values=FLAGS)
flags.DEFINE_list("paths", ["launcher", "gymnasium", "compiled"], "Which paths to measure.",
                  flag_values=FLAGS)
flags.DEFINE_list("env_ids", [], "Only these env ids (default: all).", flag_values=FLAGS)
flags.DEFINE_list("num_envs", [], "Only these numbers of envs (default: all).",
                  flag_values=FLAGS)
flags.DEFINE_integer("repeats", 7, "Timed (reference, training) pairs; medians reported.",
                     flag_values=FLAGS)
flags.DEFINE_bool("async_reference", True, "Also time the async vector env (gymnasium).",
                  flag_values=FLAGS)
flags.DEFINE_list("jit_compile", ["false", "true"], "Compiled path: the update without, with "
                  "XLA.", flag_values=FLAGS)
flags.DEFINE_bool("xla_rollout", True, "Compiled path without jit_compile: the rollout under XLA.",
                  flag_values=FLAGS)

# (env id, num_envs, steps per update) of the gymnasium path.
GYMNASIUM = [("CartPole-v1", 16, 32), ("CartPole-v1", 64, 32), ("CartPole-v1", 256, 32),
             ("Acrobot-v1", 16, 32), ("Pendulum-v1", 16, 32), ("LunarLander-v3", 8, 32)]
COMPILED = [("CartPole-v1", n, 32) for n in (16, 256, 2048, 8192)]


class Timed(NamedTuple):
    """Something to time: ``run()`` takes ``env_steps`` env steps (or their equivalent)."""

    run: Callable[[], object]
    env_steps: int


def interleaved_rates(subjects: Dict[str, Timed], repeats: int,
                      clock: Callable[[], float] = time.perf_counter) -> Dict[str, List[float]]:
    """Times each subject once per round, in alternation, after one warm-up call of each.

    Args:
        subjects: what to time, by name; each round times them in this order.
        repeats: number of rounds.
        clock: seconds, monotonic.

    Returns:
        name -> [repeats] env steps per second, round by round (so entry r of two
        subjects was measured back to back).
    """
    for subject in subjects.values():
        subject.run()  # warm-up: traces, first allocations
    rates: Dict[str, List[float]] = {name: [] for name in subjects}
    for _ in range(repeats):
        for name, subject in subjects.items():
            start = clock()
            subject.run()
            rates[name].append(subject.env_steps / (clock() - start))
    return rates


def summarize(rates: List[float], reference: List[float]) -> dict:
    """Median rates of both sides and the median (and range) of the per-round ratios."""
    ratios = [r / ref for r, ref in zip(rates, reference)]
    return {"steps_per_second": round(statistics.median(rates)),
            "reference_steps_per_second": round(statistics.median(reference)),
            "fraction_of_reference": round(statistics.median(ratios), 3),
            "fraction_range": [round(min(ratios), 3), round(max(ratios), 3)]}


def vector_env(env_id: str, num_envs: int, mode: str, vector_steps: int):
    """(gymnasium's own vector env stepped with random actions, no learning; its env)."""
    envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    envs.reset(seed=0)
    envs.action_space.seed(0)
    actions = [envs.action_space.sample() for _ in range(64)]
    count = [0]

    def run():
        for _ in range(vector_steps):
            envs.step(actions[count[0] % 64])
            count[0] += 1
    return Timed(run, vector_steps * num_envs), envs


def gymnasium_training(env_id: str, num_envs: int, steps: int, updates: int):
    """(collection and update on our vector env, as training.train runs them; its env)."""
    config = pg_keras.Config(env_id=env_id, num_envs=num_envs, steps_per_update=steps,
                             total_steps=10**9, eval_every=0)
    keras.utils.set_random_seed(0)
    envs = pg_keras.make_vector_env(env_id, num_envs)
    learner = pg_keras.build_learner(config, envs.single_observation_space,
                                     envs.single_action_space)
    collector = pg_keras.Collector(envs, learner.policy, config)

    def run():
        for _ in range(updates):
            batch, _ = collector.collect()
            learner.update(batch)
            collector.pop_episodes()
    return Timed(run, updates * num_envs * steps), envs


class _Stop(Exception):
    """Ends a benchmark's training run from its callback."""


def launcher_training(config: pg_keras.Config, updates: int, root_dir=None):
    """``pg_keras.train`` as ``experiments.train`` calls it, ``updates`` updates per run().

    The run goes on in a thread of its own, paused between runs in its callback, so
    that it can be timed in alternation with other subjects while its tracing, run
    directory and writers stay warm. Returns (Timed, stop): ``stop()`` ends the run.
    """
    go, done = threading.Semaphore(0), threading.Semaphore(0)
    state = {"updates": 0, "stopping": False, "error": None}

    def on_update(record):
        state["updates"] += 1
        if state["updates"] % updates == 0:
            done.release()
            go.acquire()
            if state["stopping"]:
                raise _Stop

    def target():
        try:
            pg_keras.train(config, root_dir=root_dir, callbacks=[
                pg_keras.ProgressLogger(), pg_keras.LambdaCallback(on_update_end=on_update)])
        except _Stop:
            pass
        except BaseException as error:  # noqa: B036 (raised again by run())
            state["error"] = error
            done.release()

    thread = threading.Thread(target=target, daemon=True)

    def run():
        if thread.is_alive():
            go.release()
        else:
            thread.start()
        done.acquire()
        if state["error"] is not None:
            raise state["error"]

    def stop():
        if thread.is_alive():
            state["stopping"] = True
            go.release()
            thread.join()
    return Timed(run, updates * config.num_envs * config.steps_per_update), stop


def launcher_subjects(env_id: str, num_envs: int, steps: int, updates: int, root_dir: str):
    """(subjects, closers): the vector env, the loop without and with a run directory."""
    config = pg_keras.Config(env_id=env_id, num_envs=num_envs, steps_per_update=steps,
                             total_steps=10**12, eval_every=0)
    reference, envs = vector_env(env_id, num_envs, "sync", updates * steps)
    loop, stop_loop = launcher_training(config, updates)
    launcher, stop_launcher = launcher_training(config, updates, root_dir)
    return ({"reference": reference, "loop": loop, "launcher": launcher},
            [envs.close, stop_loop, stop_launcher])


def measure_launcher(env_id: str, num_envs: int, steps: int, updates: int, repeats: int,
                     root_dir: str) -> dict:
    """The launcher row: rates and per-pair ratios of the loop with and without run dir."""
    subjects, closers = launcher_subjects(env_id, num_envs, steps, updates, root_dir)
    try:
        # The progress line goes where a user would see it, not into the JSON lines.
        # Half the rounds time the launcher before the loop, half after: the load of a
        # shared machine favours one place in a round over the other.
        rates = {name: [] for name in subjects}
        with contextlib.redirect_stdout(sys.stderr):
            for order, count in ((("reference", "loop", "launcher"), (repeats + 1) // 2),
                                 (("reference", "launcher", "loop"), repeats // 2)):
                if count:
                    measured = interleaved_rates({name: subjects[name] for name in order},
                                                 count)
                    for name in subjects:
                        rates[name] += measured[name]
    finally:
        for close in closers:
            close()
    launcher_over_loop = [a / b for a, b in zip(rates["launcher"], rates["loop"])]
    return {**summarize(rates["launcher"], rates["reference"]),
            "loop_steps_per_second": round(statistics.median(rates["loop"])),
            "loop_fraction_of_reference": summarize(rates["loop"],
                                                    rates["reference"])["fraction_of_reference"],
            "launcher_over_loop": round(statistics.median(launcher_over_loop), 3),
            "launcher_over_loop_range": [round(min(launcher_over_loop), 3),
                                         round(max(launcher_over_loop), 3)]}


def compiled_subjects(env_id, num_envs, steps, iterations, jit_compile,
                      xla_rollout=True) -> Dict[str, Timed]:
    """The policy-inference limit and the compiled training iteration."""
    config = pg_keras.Config(env_id=env_id, num_envs=num_envs, steps_per_update=steps,
                             total_steps=10**9, eval_every=0, backend="compiled",
                             jit_compile=jit_compile, xla_rollout=xla_rollout)
    keras.utils.set_random_seed(0)
    env = make_compiled_env(env_id)
    learner = pg_keras.build_learner(config, env.observation_space, env.action_space)
    collector = CompiledCollector(env, learner.policy, config)
    iterate = learner.fuse(collector)
    policy = learner.policy
    observations = tf.random.normal([num_envs] + list(env.observation_space.shape))
    mask, state = policy.all_legal(num_envs), policy.initial_state(num_envs)

    def inference():
        def body(t, total):
            seed = tf.stack([t, 7])
            _, action, _ = policy.sample(observations + tf.cast(t, tf.float32) * 1e-3, seed,
                                         mask, state)
            return t + 1, total + tf.reduce_sum(tf.cast(action, tf.float32))
        return tf.while_loop(lambda t, _: t < steps, body, (tf.constant(0), tf.constant(0.0)))

    # The policy samples inside the rollout: under XLA whenever the rollout is.
    infer = tf.function(inference, jit_compile=jit_compile or xla_rollout)

    def run_inference():
        for _ in range(iterations):
            infer()[1].numpy()

    def run_training():
        for _ in range(iterations):
            iterate()
            collector.pop_episodes()
    env_steps = iterations * num_envs * steps
    return {"reference": Timed(run_inference, env_steps),
            "training": Timed(run_training, env_steps)}


def _keep_best(best: dict, record: dict) -> None:
    """Keeps the fastest CartPole-v1 configuration of each path (the summary line's)."""
    if record["env_id"] != "CartPole-v1":
        return
    rate = record["steps_per_second"]
    if record["path"] not in best or rate > best[record["path"]][0]:
        best[record["path"]] = (rate, record["num_envs"])


def _selected(configurations):
    return [(env_id, num_envs, steps) for env_id, num_envs, steps in configurations
            if (not FLAGS.env_ids or env_id in FLAGS.env_ids)
            and (not FLAGS.num_envs or str(num_envs) in FLAGS.num_envs)]


def _import_heavy() -> None:
    global gym, keras, tf, CompiledCollector, make_compiled_env
    import gymnasium as gym
    import keras
    import tensorflow as tf

    from pg_keras.collect import CompiledCollector, make_compiled_env


def main(argv):
    _import_heavy()
    quick = FLAGS.quick
    repeats = 2 if quick else FLAGS.repeats
    machine = {"cpu_cores": os.cpu_count(), "gpu": bool(tf.config.list_physical_devices("GPU")),
               "pairs": repeats}
    best = {}  # path -> (steps per second, num_envs) of CartPole-v1's fastest configuration
    if "launcher" in FLAGS.paths:
        with tempfile.TemporaryDirectory(prefix="pg_keras-benchmark-") as root_dir:
            record = {"env_id": "CartPole-v1", "path": "launcher", "num_envs": 16,
                      "steps_per_update": 32, "updates_per_pair": 10 if quick else 200,
                      "reference": "vector env, sync, random actions",
                      **measure_launcher("CartPole-v1", 16, 32, 10 if quick else 200, repeats,
                                         root_dir),
                      "load_average": [round(x, 2) for x in os.getloadavg()], **machine}
        print(json.dumps(record), flush=True)
    if "gymnasium" in FLAGS.paths:
        for env_id, num_envs, steps in _selected(GYMNASIUM[:1] if quick else GYMNASIUM):
            updates = 3 if quick else 20
            try:
                gym.spec(env_id)
                reference, raw_envs = vector_env(env_id, num_envs, "sync", updates * steps)
            except (gym.error.Error, ImportError) as error:
                print(json.dumps({"env_id": env_id, "path": "gymnasium", "skipped": str(error)}))
                continue
            training, train_envs = gymnasium_training(env_id, num_envs, steps, updates)
            subjects = {"reference": reference, "training": training}
            opened = [raw_envs, train_envs]
            if FLAGS.async_reference and not quick:
                subjects["async"], async_envs = vector_env(env_id, num_envs, "async",
                                                           updates * steps)
                opened.append(async_envs)
            try:
                rates = interleaved_rates(subjects, repeats)
            finally:
                for envs in opened:
                    envs.close()
            record = {"env_id": env_id, "path": "gymnasium", "num_envs": num_envs,
                      "steps_per_update": steps,
                      "reference": "vector env, sync, random actions",
                      **summarize(rates["training"], rates["reference"]), **machine}
            if "async" in rates:
                record["async_reference_steps_per_second"] = round(
                    statistics.median(rates["async"]))
            print(json.dumps(record), flush=True)
            _keep_best(best, record)
    if "compiled" in FLAGS.paths:
        jit_options = [False] if quick else [
            value.strip().lower() in ("true", "1", "yes") for value in FLAGS.jit_compile]
        for env_id, num_envs, steps in _selected(COMPILED[:2] if quick else COMPILED):
            for jit_compile in jit_options:
                iterations = 2 if quick else max(3, 200_000 // (num_envs * steps))
                rates = interleaved_rates(compiled_subjects(
                    env_id, num_envs, steps, iterations, jit_compile, FLAGS.xla_rollout), repeats)
                record = {
                    "env_id": env_id, "path": "compiled", "jit_compile": jit_compile,
                    "xla_rollout": FLAGS.xla_rollout or jit_compile,
                    "num_envs": num_envs, "steps_per_update": steps,
                    "reference": "policy inference alone, compiled the same way",
                    **summarize(rates["training"], rates["reference"]), **machine}
                print(json.dumps(record), flush=True)
                _keep_best(best, record)
    if len(best) == 2:
        (compiled, compiled_envs), (gym_rate, gym_envs) = best["compiled"], best["gymnasium"]
        print(json.dumps({
            "env_id": "CartPole-v1", "path": "summary",
            "compiled_best_steps_per_second": compiled, "compiled_best_num_envs": compiled_envs,
            "gymnasium_best_steps_per_second": gym_rate, "gymnasium_best_num_envs": gym_envs,
            "compiled_over_gymnasium": round(compiled / gym_rate, 1)}), flush=True)


if __name__ == "__main__":
    cli.run("benchmark", FLAGS, main, usage=__doc__, bad_input=(pg_keras.InputError,))
