"""Synchronous data-parallel training (pg_keras.distributed, the learner under a strategy).

Each test runs TensorFlow in fresh processes: logical devices must be declared before
TensorFlow starts, and a worker of a group is a process of its own. All traffic stays on
127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import pg_keras
from pg_keras.cli.common import free_ports
from pg_keras import distributed

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

MIRRORED = textwrap.dedent('''
    import json
    import sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    import pg_keras

    def state(learner):
        variables = learner.policy_variables + learner.value_variables
        for stats in (learner.normalizer, learner.return_stats):
            if stats is not None:
                variables += [stats.mean, stats.variance, stats.count]
        return [np.asarray(v.numpy()) for v in variables]

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {}
    for name, fields in {
        # Every statistic that crosses replicas: advantage normalization, observation and
        # return normalizers, the clips, the scheduled entropy bonus and rates, GAE.
        "steps": dict(steps_per_update=16, normalize_observations=True,
                      normalize_returns=True, max_grad_norm=0.5, value_max_grad_norm=2.0,
                      advantage_std_floor=2.0,
                      entropy_coef=0.01, entropy_schedule="linear", lr_schedule="linear",
                      gae_lambda=0.9),
        # Episodes pad unevenly: the replicas hold different numbers of valid steps.
        "episodes": dict(collect_mode="episodes", steps_per_update=60, gamma_weighting=True),
        # Sample reuse: each pass's step is on every replica's rows (one minibatch), with
        # the ratio, both clips and the KL stop reduced over replicas.
        "reused": dict(steps_per_update=16, update_epochs=3, clip_ratio=0.2, value_clip=0.5,
                       target_kl=0.05, normalize_returns=True, policy_learning_rate=3e-3),
    }.items():
        config = pg_keras.Config(env_id="CartPole-v1", num_envs=4, **fields)
        envs = pg_keras.make_vector_env(config.env_id, config.num_envs)
        space = (envs.single_observation_space, envs.single_action_space)
        keras.utils.set_random_seed(0)
        single = pg_keras.build_learner(config, *space)
        keras.utils.set_random_seed(0)
        mirrored = pg_keras.build_learner(config, *space, strategy=strategy)
        initial = state(single)
        collector = pg_keras.Collector(envs, single.policy, config)
        record = {"weights": [], "metrics": [], "valid_per_replica": []}
        for step in range(3):
            batch, _ = collector.collect()
            record["valid_per_replica"].append(
                [float(batch.mask[:, :2].sum()), float(batch.mask[:, 2:].sum())])
            a, b = single.update(batch, step * 20_000), mirrored.update(batch, step * 20_000)
            record["weights"].append(max(float(np.max(np.abs(x - y)))
                                         for x, y in zip(state(single), state(mirrored))))
            record["metrics"].append({k: [float(a[k]), float(b[k])] for k in a})
        record["moved"] = max(float(np.max(np.abs(x - y))) for x, y in zip(state(single), initial))
        out[name] = record
    try:
        pg_keras.build_learner(pg_keras.Config(num_envs=3), *space, strategy=strategy)
    except pg_keras.InputError as error:
        out["odd_num_envs"] = str(error)
    # The whole loop and the export under the two replicas.
    result = pg_keras.train(pg_keras.Config(num_envs=4, steps_per_update=16, total_steps=640,
                                            eval_every=0, eval_episodes=2), strategy=strategy)
    directory = sys.argv[1] + "/export"
    pg_keras.export_policy(result.policy, directory)
    loaded = tf.saved_model.load(directory)
    observations = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    out["train"] = {"env_steps": result.env_steps, "updates": int(result.learner.updates.numpy()),
                    "export_matches": bool(np.array_equal(
                        loaded(observations).numpy(), result.policy.predict(observations)[0]))}
    print(json.dumps(out))
''')


def _python(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env=env)


def test_mirrored_over_two_devices_makes_the_update_of_the_whole_batch(tmp_path):
    """Two replicas, each with half the environments, make the single-device update."""
    run = _python("-c", MIRRORED, str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert results.pop("odd_num_envs") == (
        "num_envs must be a multiple of the 2 devices of the distribution strategy, which "
        "split each batch by environment; received num_envs=3")
    assert results.pop("train") == {"env_steps": 640, "updates": 10, "export_matches": True}
    for name, record in results.items():
        assert record["moved"] > 1e-3, name  # the updates did change the weights
        assert max(record["weights"]) < 2e-5, (name, record["weights"])
        for metrics in record["metrics"]:
            for key, (single, mirrored) in metrics.items():
                assert mirrored == pytest.approx(single, rel=1e-4, abs=1e-5), (name, key)
    # The weighting by valid steps is what makes uneven replicas agree: they were uneven.
    assert any(a != b for a, b in results["episodes"]["valid_per_replica"])


def _start_group(tmp_path, flags, name, record=False):
    """Starts two workers of ``experiments.train`` on 127.0.0.1; returns their processes."""
    ports = free_ports(2)
    processes = []
    for index in range(2):
        tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                     "task": {"type": "worker", "index": index}}
        scratch = tmp_path / f"tmp{index}"
        scratch.mkdir(exist_ok=True)
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(scratch),
               "TF_CPP_MIN_LOG_LEVEL": "2"}
        command = ([os.path.join(TESTS, "distributed_worker.py"),
                    str(tmp_path / f"{name}-record{index}.json")] if record
                   else ["-m", "experiments.train"])
        # Files, not pipes: a worker blocked on a full pipe would hold up the group.
        process = subprocess.Popen(
            [sys.executable, *command, "--strategy=multi_worker", "--nouse_progress_bar",
             f"--root_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'export'}", *flags],
            cwd=REPO, env=env, stdout=open(tmp_path / f"{name}{index}.out", "w"),
            stderr=open(tmp_path / f"{name}{index}.err", "w"))
        process.outputs = (tmp_path / f"{name}{index}.out", tmp_path / f"{name}{index}.err")
        processes.append(process)
    return processes


def _finish(processes, timeout=240):
    """(exit code, stdout, stderr) of each process, once all have exited."""
    deadline = time.time() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise AssertionError("the group did not exit: " + "\n".join(
                p.outputs[1].read_text()[-2000:] for p in processes)) from None
    return [(p.returncode, p.outputs[0].read_text(), p.outputs[1].read_text())
            for p in processes]


GROUP_FLAGS = ["--num_envs=4", "--steps_per_update=32", "--eval_episodes=2"]


@pytest.fixture(scope="module")
def solved_group(tmp_path_factory):
    """One group run that both tests below read: two recording workers that stop when
    solved. Every CartPole episode lasts at least 8 steps, so the chief's first evaluation
    (512 steps, 2 updates of 2 workers x 4 envs x 32 steps) solves, and the group ends
    after the next update: 3 updates, each of which the lockstep test checks."""
    tmp_path = tmp_path_factory.mktemp("group")
    flags = GROUP_FLAGS + ["--total_steps=4096", "--eval_every=512", "--target_return=8",
                           "--stop_when_solved"]
    return tmp_path, _finish(_start_group(tmp_path, flags, "solved", record=True))


def test_two_workers_hold_the_same_weights_after_every_update_and_the_chief_exports(
        solved_group):
    tmp_path, results = solved_group
    for code, out, err in results:
        assert code == 0, err[-3000:]
    chief, other = (json.load(open(tmp_path / f"solved-record{i}.json")) for i in range(2))
    assert [r["updates"] for r in chief] == [1, 2, 3]
    assert [r["weights"] for r in chief] == [r["weights"] for r in other]
    assert len({r["weights"] for r in chief}) == 3  # every update changed them
    assert all(a["batch"] != b["batch"] for a, b in zip(chief, other))  # own episodes

    # Only the chief wrote the run directory; the other worker's scratch is gone.
    assert _metrics_steps(tmp_path / "run") == [256, 512, 768]
    assert os.listdir(tmp_path / "tmp1") == []

    loaded = tf.saved_model.load(str(tmp_path / "export"))
    env = gym.make("CartPole-v1")
    observation, _ = env.reset(seed=0)
    for _ in range(20):
        action = loaded(observation[None].astype(np.float32)).numpy()
        assert action.shape == (1,) and action[0] in (0, 1)
        observation, _, terminated, truncated, _ = env.step(int(action[0]))
        if terminated or truncated:
            break


@pytest.mark.slow  # two TensorFlow workers; the feed-forward group tests cover the lockstep
def test_two_workers_train_a_recurrent_policy_in_lockstep_each_with_its_own_states(tmp_path):
    flags = GROUP_FLAGS + ["--total_steps=768", "--eval_every=0", "--recurrent_cell=lstm",
                           "--recurrent_units=8", "--hidden_sizes=8", "--value_hidden_sizes=8"]
    for code, out, err in _finish(_start_group(tmp_path, flags, "lstm", record=True)):
        assert code == 0, err[-3000:]
    chief, other = (json.load(open(tmp_path / f"lstm-record{i}.json")) for i in range(2))
    assert [r["updates"] for r in chief] == [1, 2, 3]
    assert [r["weights"] for r in chief] == [r["weights"] for r in other]
    # Each worker's batches, initial states included, are its own environments'.
    assert all(a["batch"] != b["batch"] for a, b in zip(chief, other))
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    assert {"initial_state", "serving_default"} <= set(loaded.signatures)


def test_a_group_that_stops_when_solved_ends_together_after_the_next_update(solved_group):
    tmp_path, results = solved_group
    for code, out, err in results:
        assert code == 0, err[-3000:]
    # Solved at 512 steps (2 updates of 256); the others learn it at the next sync.
    assert "solved at 512 env steps" in results[0][1]
    assert "worker 1 of 2: done at 768 env steps" in results[1][1]
    with open(tmp_path / "run" / "summary.json") as f:
        summary = json.load(f)
    assert (summary["env_steps"], summary["solved_at"]) == (768, 512)


def _wait_for_new_checkpoint(root, process, seen=None):
    marker = root / "checkpoints" / "checkpoint"
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None and (
            not marker.exists() or marker.stat().st_mtime == seen):
        time.sleep(0.05)
    assert marker.exists() and marker.stat().st_mtime != seen, \
        process.outputs[1].read_text()[-3000:]
    return marker.stat().st_mtime


def _metrics_steps(root):
    with open(root / "metrics.jsonl") as f:
        return [json.loads(line)["env_steps"] for line in f]


@pytest.mark.slow  # two TensorFlow workers for minutes; the group's lockstep tests stay in the default suite
def test_a_signal_stops_the_group_a_killed_worker_breaks_it_and_it_resumes(tmp_path):
    """SIGTERM to one worker: the whole group checkpoints and exits 143. SIGKILL to one
    worker: the other stops within seconds with one line, exit 1. The same command then
    resumes the group from the last checkpoint, to the end, no update lost or repeated."""
    flags = GROUP_FLAGS + ["--total_steps=12288", "--eval_every=0", "--checkpoint_every=1024",
                           "--noexport"]
    root = tmp_path / "run"
    chief, other = _start_group(tmp_path, flags, "signalled")
    _wait_for_new_checkpoint(root, chief)
    other.send_signal(signal.SIGTERM)
    for code, out, err in _finish([chief, other], timeout=120):
        assert code == 143, err[-3000:]
        assert "interrupted by SIGTERM" in out and "Traceback" not in err
    with open(root / "summary.json") as f:
        summary = json.load(f)
    assert summary["interrupted"] == "SIGTERM" and summary["env_steps"] < 12288

    seen = (root / "checkpoints" / "checkpoint").stat().st_mtime
    chief, other = _start_group(tmp_path, flags, "killed")
    _wait_for_new_checkpoint(root, chief, seen)
    other.send_signal(signal.SIGKILL)
    killed_at = time.time()
    code, _, err = _finish([chief], timeout=120)[0]
    other.wait()
    assert time.time() - killed_at < 120  # no hang: TensorFlow's heartbeats notice
    assert code == 1, err[-3000:]
    error = [line for line in err.splitlines() if line.startswith("train: error:")]
    assert len(error) == 1 and "the group broke" in error[0] and "resume" in error[0], err[-3000:]
    assert "aborted by" in error[0] and "File " not in error[0], error[0]  # the cause only
    assert "Traceback" not in err
    assert _metrics_steps(root)[-1] < 12288

    results = _finish(_start_group(tmp_path, flags, "resumed"))
    for code, out, err in results:
        assert code == 0, err[-3000:]
    assert "resumed from" in results[0][1]
    assert _metrics_steps(root) == [256 * (i + 1) for i in range(48)]  # none lost, none twice
    with open(root / "summary.json") as f:
        summary = json.load(f)
    assert summary["env_steps"] == 12288 and summary["interrupted"] is None


def test_a_worker_that_never_comes_stops_the_others_after_the_start_timeout(tmp_path):
    ports = free_ports(2)
    tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                 "task": {"type": "worker", "index": 0}}
    start = time.time()
    run = _python("-m", "experiments.train", "--strategy=multi_worker", "--noexport",
                  "--group_start_timeout=3", f"--root_dir={tmp_path / 'run'}",
                  env={**os.environ, "TF_CONFIG": json.dumps(tf_config)}, timeout=120)
    assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]  # see cli.deadline
    assert run.stderr.strip().splitlines()[-1] == (
        "train: error: the worker group did not form within --group_start_timeout=3 s: "
        "start every worker TF_CONFIG names, with the same cluster")
    assert time.time() - start < 60
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a benchmark launcher; two_workers_hold_the_same_weights covers the group
def test_scaling_launcher_reports_each_group_size(tmp_path):
    run = _python("-m", "benchmarks.scaling", "--workers=2", "--num_envs=4",
                  "--total_steps=2048", "--train_flags=--steps_per_update=32", timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    (line,) = [json.loads(x) for x in run.stdout.splitlines() if x.startswith("{")]
    assert line["workers"] == 2 and line["env_steps"] == 2048 and line["updates"] == 8
    assert line["steps_per_second"] > 0
    bad = _python("-m", "benchmarks.scaling", "--workers=0", timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "scaling: error: workers must be positive integers; received workers=0")


def test_group_sync_sums_steps_and_episodes_and_keeps_the_largest_signal():
    sync = distributed.GroupSync(tf.distribute.MirroredStrategy(["/cpu:0"]))
    step = sync(256, 15, [10.0, 30.0, 50.0], [10, 30, 80], solved=True)
    assert (step.env_steps, step.stop_signal, step.episodes) == (256, 15, 3)
    assert step.solved is True
    assert (step.return_mean, step.return_min, step.return_max) == (30.0, 10.0, 50.0)
    assert step.length_mean == 40.0
    empty = sync(128, 0, [], [])
    assert (empty.env_steps, empty.stop_signal, empty.episodes) == (128, 0, 0)
    assert empty.solved is False
    assert np.isnan(empty.return_mean) and np.isnan(empty.length_mean)


def test_a_group_of_one_agrees_with_itself_as_a_group_sync_does():
    alone = distributed.make_group(tf.distribute.get_strategy())
    assert type(alone) is distributed.Group and alone.worker == distributed.Worker(0, 1)
    sync = distributed.GroupSync(tf.distribute.MirroredStrategy(["/cpu:0"]))
    for returns, lengths in (([10.0, 30.0, 50.0], [10, 30, 80]), ([], [])):
        mine, theirs = alone(64, 2, returns, lengths, True), sync(64, 2, returns, lengths, True)
        assert mine.episode_record().keys() == theirs.episode_record().keys()
        np.testing.assert_array_equal(list(mine.episode_record().values()),
                                      list(theirs.episode_record().values()))
        assert (mine.env_steps, mine.stop_signal, mine.solved) == (64, 2, True)
    # One process ends at the solving evaluation; a group after the next update.
    assert alone.ends_at_evaluation(True) and not sync.ends_at_evaluation(True)


@pytest.mark.parametrize("strategy", ["default", "mirrored_one_device"])
def test_one_replica_moments_and_gather_are_the_batch_own(strategy):
    """A single replica is the whole group: the moments are its valid steps' own (padding
    with NaN left out), its share is 1, and a gather gives its rows back unchanged."""
    strategy = (tf.distribute.get_strategy() if strategy == "default"
                else tf.distribute.MirroredStrategy(["/cpu:0"]))
    rng = np.random.default_rng(0)
    x, y = (rng.normal(size=(2, 6, 3)) * [[[3.0]], [[0.5]]]).astype(np.float32)
    mask = (rng.uniform(size=(6, 3)) < 0.7).astype(np.float32)
    x[mask == 0] = np.nan
    rows = (rng.normal(size=(5, 2, 3)).astype(np.float32), rng.normal(size=5).astype(np.float32))

    @tf.function(autograph=False)
    def run():
        def replica():
            return (distributed.masked_moments(tf.constant(mask), tf.constant(x),
                                               tf.constant(y)),
                    distributed.all_gather(tuple(tf.constant(r) for r in rows)))
        return distributed.first_replica(strategy, strategy.run(replica))

    moments, gathered = run()
    valid = mask > 0
    assert float(moments.count) == valid.sum() and float(moments.share) == 1.0
    for column, mean, variance in zip((x, y), moments.means, moments.variances):
        np.testing.assert_allclose(float(mean), column[valid].mean(), rtol=1e-5)
        np.testing.assert_allclose(float(variance), column[valid].var(), rtol=1e-5)
    for got, want in zip(gathered, rows):
        np.testing.assert_array_equal(got.numpy(), want)


def test_worker_of_a_group_of_one_is_the_chief():
    assert distributed.worker_of(tf.distribute.get_strategy()) == distributed.Worker(0, 1)


@pytest.mark.parametrize("name, timeout, message", [
    ("ring", None, "strategy must be one of 'default', 'mirrored', 'multi_worker'; "
                   "received strategy='ring'"),
    ("multi_worker", -1.0, "collective_timeout must be a positive number of seconds; "
                           "received collective_timeout=-1.0"),
])
def test_make_strategy_names_a_bad_value(name, timeout, message):
    with pytest.raises(pg_keras.InputError, match=message.replace("(", r"\(")):
        distributed.make_strategy(name, timeout)


def test_bad_tf_config_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "TF_CONFIG": "{not json"}
    run = _python("-m", "experiments.train", "--strategy=multi_worker", "--noexport",
                  f"--root_dir={tmp_path / 'run'}", env=env, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(
        "train: error: TF_CONFIG must be JSON with 'cluster' and 'task'")
    assert not (tmp_path / "run").exists()

