"""Recurrent policies: the config fields, the model contract, the state carried through
collection and replayed by the update, resume, and a task that needs memory."""

import json
import pickle
import glob
import os

import gymnasium as gym
import keras
import numpy as np
import pytest
import tensorflow as tf

import pg_keras
from earlier_defaults import with_earlier_defaults
from pg_keras import networks, recurrent
from pg_keras.collect import Collector, evaluate, make_vector_env
from pg_keras.learner import build_learner

import tests.recurrent_envs  # noqa: F401  (registers PgkRecall-v0)

RECALL = "PgkRecall-v0"


def _config(**changes):
    values = dict(env_id=RECALL, recurrent_cell="lstm", recurrent_units=8, hidden_sizes=(8,),
                  value_hidden_sizes=(8,), num_envs=3, steps_per_update=5, total_steps=300,
                  eval_every=0, collect_mode="steps")
    return pg_keras.Config(**{**values, **changes})


# --------------------------------------------------------------------------- config


def test_config_defaults_keep_older_files_equal():
    assert pg_keras.Config().recurrent_cell == "none"
    assert pg_keras.Config().recurrent_units == 64
    stored = {k: v for k, v in pg_keras.Config().to_stored().items()
              if not k.startswith("recurrent_")}
    assert pg_keras.Config.from_dict(stored) == pg_keras.Config()
    assert pg_keras.Config().differences(stored) == []


@pytest.mark.parametrize("changes, named", [
    ({"recurrent_cell": "rnn"}, "recurrent_cell='rnn'"),
    ({"recurrent_units": 0}, "recurrent_units=0"),
])
def test_bad_recurrent_settings_are_refused_in_one_line(changes, named):
    with pytest.raises(pg_keras.InputError) as error:
        pg_keras.Config(**changes)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_the_launcher_has_the_flags():
    from absl import flags
    from pg_keras.cli.config_flags import config_from_flags, define_config_flags
    values = flags.FlagValues()
    define_config_flags(values)
    values(["prog", "--recurrent_cell=gru", "--recurrent_units=8"])
    config = config_from_flags(values)
    assert (config.recurrent_cell, config.recurrent_units) == ("gru", 8)


# --------------------------------------------------------------------------- the contract


def _stateful_lstm(observation_shape, output_units):
    return keras.Sequential([keras.Input(shape=(1,) + tuple(observation_shape), batch_size=2),
                             keras.layers.LSTM(4, stateful=True),
                             keras.layers.Dense(output_units)])


def _lstm_of_one_step(observation_shape, output_units):
    return keras.Sequential([keras.Input(shape=tuple(observation_shape)),
                             keras.layers.Reshape((1,) + tuple(observation_shape)),
                             keras.layers.LSTM(4), keras.layers.Dense(output_units)])


class _Recurrent(keras.Model):
    """A recurrent model that can break the contract in one chosen way."""

    def __init__(self, units, state_sizes=(4,), flat_output=False, bad_state=False):
        super().__init__()
        self.dense = keras.layers.Dense(units)
        self.state_sizes = state_sizes
        self.flat_output, self.bad_state = flat_output, bad_state

    def call(self, inputs):
        observations, state, reset = inputs
        outputs = self.dense(observations)
        if self.flat_output:
            outputs = outputs[:, -1]
        return outputs, (state[0][:, :2],) if self.bad_state else tuple(state)


@pytest.mark.parametrize("model, named", [
    (_stateful_lstm, "stateful layer"),
    (_lstm_of_one_step, "declares no state_sizes"),
    (lambda shape, units: _Recurrent(units, state_sizes=(0,)), "state_sizes=(0,)"),
    (lambda shape, units: _Recurrent(units, flat_output=True), "received shape [2, 2]"),
    (lambda shape, units: _Recurrent(units, bad_state=True), "received shapes [[2, 2]]"),
    (lambda shape, units: _Recurrent(units + 1), "received shape [2, 3, 3]"),
])
def test_bad_models_are_refused_in_one_line(model, named):
    with pytest.raises(pg_keras.InputError) as error:
        networks.resolve_model(model, (3,), 2, "policy")
    message = str(error.value)
    assert named in message and "\n" not in message, message


def test_the_default_recurrent_model_refuses_images():
    with pytest.raises(pg_keras.InputError, match="vector observations only"):
        networks.default_recurrent_network(
            gym.spaces.Box(0, 255, (8, 8, 3), np.uint8), 2, (8,), "tanh", "gru", 4, 1.0, 0, "p")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_segment_equals_its_steps_with_resets(cell):
    """The model on a [B, T] segment with resets equals T one-step calls whose state is
    zeroed where the reset flag is set: what collection does, step by step."""
    model = networks.RecurrentNetwork(2, 3, (8,), "tanh", cell, 5, 1.0, 0)
    x = tf.random.stateless_normal((4, 6, 2), [1, 2])
    state = tuple(tf.random.stateless_normal((4, 5), [3, i]) for i in range(len(model.state_sizes)))
    reset = np.zeros((4, 6), np.float32)
    reset[1, 3] = reset[2, 0] = 1.0
    outputs, final = model((x, state, reset))
    steps, carried = [], state
    for t in range(6):
        carried = tuple(tf.where(reset[:, t:t + 1] > 0, 0.0, s) for s in carried)
        out, carried = model((x[:, t:t + 1], carried, tf.zeros((4, 1))))
        steps.append(out[:, 0])
    np.testing.assert_array_equal(np.stack(steps, 1), outputs.numpy())
    for a, b in zip(carried, final):
        np.testing.assert_array_equal(a, b)
    # The reset matters: env 1 after step 3 forgets what it saw before.
    unreset, _ = model((x, state, np.zeros((4, 6), np.float32)))
    assert not np.allclose(unreset[1, 3:], outputs[1, 3:])
    np.testing.assert_array_equal(unreset[1, :3], outputs[1, :3])


# --------------------------------------------------------------------------- collection


class _Recorder:
    """Wraps the collector's recurrent acting step; records, per step, the state given,
    the log-probability of the sampled action and the value, as collection computed them."""

    def __init__(self, collector):
        self.steps, self.step = collector.actor.steps, collector.actor.steps.sample
        self.policy = collector.policy
        self.rows = []
        self.steps.sample = self

    def __call__(self, observations, mask, state):
        raw, env_action, next_state = self.step(observations, mask, state)
        policy = self.policy
        params, values, _ = policy.step(observations, state, value=True)
        self.rows.append(dict(
            state=tf.nest.map_structure(np.copy, state),
            log_prob=policy.head.distribution(params).log_prob(raw).numpy(),
            value=values.numpy(), params=params.numpy(), observations=np.copy(observations)))
        return raw, env_action, next_state


def _collector(config, delay=2):
    envs = make_vector_env(config.env_id, config.num_envs, delay=delay)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    return learner, Collector(envs, learner.policy, config)


@pytest.mark.parametrize("cell, mode", [
    ("lstm", "steps"), pytest.param("gru", "episodes", marks=pytest.mark.slow)])
def test_the_update_replays_the_log_probs_collection_computed(cell, mode):
    """Episodes of 3 steps in segments of 5: they start inside segments (autoreset) and
    cross from one segment into the next. Three batches in a row."""
    config = _config(recurrent_cell=cell, collect_mode=mode)
    learner, collector = _collector(config)
    policy = learner.policy
    for _ in range(3):
        recorder = _Recorder(collector)
        batch, _ = collector.collect()
        recorder.steps.sample = recorder.step
        params, values = policy.replay(
            tf.constant(batch.observations), tf.nest.map_structure(tf.constant, batch.initial_state),
            tf.constant(batch.terminated | batch.truncated))
        steps = len(recorder.rows)
        log_probs = policy.head.distribution(params).log_prob(
            tf.reshape(batch.actions, [-1])).numpy().reshape(batch.rewards.shape)
        collected = np.stack([r["log_prob"] for r in recorder.rows])
        np.testing.assert_allclose(log_probs[:steps], collected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(values.numpy().reshape(batch.rewards.shape)[:steps],
                                   np.stack([r["value"] for r in recorder.rows]),
                                   rtol=1e-5, atol=1e-6)


def test_a_dropped_episode_resets_the_state_as_the_replay_does():
    """Each env's first episode pays NaN at its 2nd step and is dropped (on_nonfinite=drop);
    the next episode must start from a zero state in collection as in the replay."""
    config = _config(num_envs=2, steps_per_update=6, on_nonfinite="drop")
    envs = make_vector_env(RECALL, 2, delay=3, nan_at=2)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    collector = Collector(envs, learner.policy, config)
    recorder = _Recorder(collector)
    batch, _ = collector.collect()
    assert batch.mask[:2].sum() == 0 and batch.mask[2:].all()
    params, _ = learner.policy.replay(
        tf.constant(batch.observations), tf.nest.map_structure(tf.constant, batch.initial_state),
        tf.constant(batch.terminated | batch.truncated))
    log_probs = learner.policy.head.distribution(params).log_prob(
        tf.reshape(batch.actions, [-1])).numpy().reshape(batch.rewards.shape)
    collected = np.stack([r["log_prob"] for r in recorder.rows])
    np.testing.assert_allclose(log_probs[2:], collected[2:], rtol=1e-5, atol=1e-6)
    assert [r["state"]["reset"].tolist() for r in recorder.rows[:3]] == [[1, 1], [0, 0], [1, 1]]


def test_states_reset_exactly_where_episodes_start():
    config = _config(num_envs=2, steps_per_update=4)
    learner, collector = _collector(config)  # episodes of 3 steps
    recorder = _Recorder(collector)
    # Copies: the collector refills the same arrays.
    batches = [tf.nest.map_structure(np.copy, collector.collect()[0]) for _ in range(3)]
    done = np.concatenate([b.terminated | b.truncated for b in batches])  # [12, 2]
    resets = np.stack([r["state"]["reset"] for r in recorder.rows])
    # An episode starts at step 0 and after each done step: at rows 0, 3, 6, 9.
    expected = np.concatenate([[[True, True]], done[:-1]]).astype(np.float32)
    np.testing.assert_array_equal(resets, expected)
    assert resets[:, 0].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    # Each batch records the state its first row started from.
    for i, batch in enumerate(batches):
        first = recorder.rows[4 * i]["state"]
        for role in ("policy", "value"):
            for kept, live in zip(batch.initial_state[role], first[role]):
                np.testing.assert_array_equal(kept[0], live)
        np.testing.assert_array_equal(batch.initial_state["reset"][0], first["reset"])
    # Where an episode starts, the policy acts as from a zero state; elsewhere not.
    policy = learner.policy
    zero = {**policy.initial_state(2), "reset": np.zeros(2, np.float32)}
    for row in recorder.rows:
        params = policy.step(row["observations"], zero, value=False)[0].numpy()
        starts = row["state"]["reset"] > 0
        np.testing.assert_array_equal(params[starts], row["params"][starts])
        for i in np.flatnonzero(~starts):
            assert not np.allclose(params[i], row["params"][i])


def test_truncations_bootstrap_from_the_carried_value_state():
    """A time limit of 2 on episodes of 4 steps: every second step is a truncation."""
    config = _config(num_envs=2, steps_per_update=5)
    envs = make_vector_env(RECALL, 2, delay=3, max_episode_steps=2)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    collector = Collector(envs, learner.policy, config)
    recorder = _Recorder(collector)
    batch, _ = collector.collect()
    policy = learner.policy
    assert batch.truncated[1].all() and batch.truncated[3].all()
    for t in (1, 3):
        # V(final observation) continuing the episode: the state after row t, no reset.
        _, _, after = policy.step(recorder.rows[t]["observations"], recorder.rows[t]["state"],
                                  value=True)
        state = {**after, "reset": np.zeros(2, np.float32)}
        expected = policy.value(tf.zeros((2, 1)), state).numpy()
        np.testing.assert_allclose(batch.bootstrap[t], expected, rtol=1e-6)
    assert not np.allclose(batch.bootstrap[1], batch.bootstrap[3])


# --------------------------------------------------------------------------- resume


class Crash(Exception):
    pass


def _weights(result):
    learner = result.learner
    return [v.numpy() for v in learner.policy_variables + learner.value_variables
            + list(learner.policy_optimizer.variables)]


def test_a_restored_collector_continues_with_the_live_states():
    config = _config(num_envs=2, steps_per_update=3)
    learner, collector = _collector(config, delay=3)  # episodes of 4 steps
    collector.collect()
    saved = pickle.dumps(collector.state())  # with the sampling streams
    assert np.abs(pickle.loads(saved)["recurrent_state"]["policy"][0]).max() > 0
    expected = tf.nest.map_structure(np.copy, collector.collect()[0])
    for keep_states in (True, False):
        state = pickle.loads(saved)
        if not keep_states:
            state["recurrent_state"] = None
        restored = Collector(make_vector_env(RECALL, 2, delay=3), learner.policy, config)
        assert restored.restore(state)
        batch = restored.collect()[0]
        same = [np.array_equal(a, b) for a, b in zip(tf.nest.flatten(expected),
                                                       tf.nest.flatten(batch))]
        assert all(same) == keep_states


@pytest.mark.slow
def test_resume_after_a_crash_is_bit_identical(tmp_path):
    # Episodes of 4 steps, segments of 3: each checkpoint falls inside episodes.
    config = _config(num_envs=4, steps_per_update=3, total_steps=192, eval_every=48,
                     eval_episodes=2)
    uninterrupted = pg_keras.train(config, root_dir=str(tmp_path / "a"))
    seen = []

    def crash_after_11(record):
        seen.append(record)
        if len(seen) == 11:  # past the checkpoint at update 8
            raise Crash

    with pytest.raises(Crash):
        pg_keras.train(config, root_dir=str(tmp_path / "b"), callbacks=[
            pg_keras.LambdaCallback(on_update_end=crash_after_11)])
    with open(str(tmp_path / "b" / "checkpoints" / "environments-8.pkl"), "rb") as f:
        kept = pickle.load(f)
    live = kept["recurrent_state"]
    assert np.abs(live["policy"][0]).max() > 0 and np.abs(live["value"][1]).max() > 0
    resumed = pg_keras.train(config, root_dir=str(tmp_path / "b"))
    for a, b in zip(_weights(uninterrupted), _weights(resumed)):
        np.testing.assert_array_equal(a, b)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in uninterrupted.history]


# --------------------------------------------------------------------------- memory


def _recall_config(cell):
    return pg_keras.Config(**with_earlier_defaults(
        env_id=RECALL, recurrent_cell=cell, recurrent_units=16, hidden_sizes=(16,),
        num_envs=16, steps_per_update=4, total_steps=6400, eval_every=0,
        collect_mode="episodes", baseline=False, gamma=1.0, policy_learning_rate=1e-2))


def test_an_lstm_policy_remembers_a_cue_seen_three_steps_earlier():
    """PgkRecall-v0 pays 3 to a policy that remembers the cue of step 0, 1.5 in
    expectation to one that cannot (see tests/recurrent_envs.py)."""
    result = pg_keras.train(_recall_config("lstm"))
    assert evaluate(result.policy, RECALL, episodes=50, seed=7).mean() >= 2.7


@pytest.mark.slow
@pytest.mark.parametrize("cell, solved", [("gru", True), ("none", False)])
def test_recall_needs_the_recurrence(cell, solved):
    result = pg_keras.train(_recall_config(cell))
    mean = evaluate(result.policy, RECALL, episodes=50, seed=7).mean()
    assert (mean >= 2.7) == solved, mean


# --------------------------------------------------------------------------- the task


def test_cartpole_without_velocities_is_cartpole_with_two_entries():
    import experiments.envs  # noqa: F401  (registers it)
    hidden = gym.make("CartPoleNoVelocity-v1")
    full = gym.make("CartPole-v1")
    a, _ = hidden.reset(seed=3)
    b, _ = full.reset(seed=3)
    np.testing.assert_array_equal(a, b[[0, 2]])
    for action in [0, 1, 1, 0, 1]:
        a, ra, ta, _, _ = hidden.step(action)
        b, rb, tb, _, _ = full.step(action)
        np.testing.assert_array_equal(a, b[[0, 2]])
        assert (ra, ta) == (rb, tb)
    assert hidden.observation_space.shape == (2,) and hidden.spec.max_episode_steps == 500


# --------------------------------------------------------------------------- export


def test_the_exported_policy_carries_its_state_like_policy_act(tmp_path):
    import experiments.envs  # noqa: F401  (registers CartPoleNoVelocity-v1)
    from pg_keras.export import export_policy
    config = _config(env_id="experiments.envs:CartPoleNoVelocity-v1", recurrent_units=6)
    env = gym.make("CartPoleNoVelocity-v1")
    learner = build_learner(config, env.observation_space, env.action_space)
    policy = learner.policy
    loaded = tf.saved_model.load(export_policy(policy, str(tmp_path / "export")))
    assert set(loaded.signatures) == {"serving_default", "sample", "initial_state"}
    serve, sample = loaded.signatures["serving_default"], loaded.signatures["sample"]
    assert set(serve.structured_input_signature[1]) == {"observations", "state_0", "state_1"}
    state = loaded.signatures["initial_state"](batch_size=tf.constant(1))
    assert sorted(state) == ["state_0", "state_1"] and not np.any(state["state_0"])
    observation, _ = env.reset(seed=0)
    carried, steps, actions = None, 0, []
    while True:
        expected, carried = policy.predict(observation[None], state=carried)
        out = serve(observations=tf.constant(observation[None]), **state)
        state = {name: out[name] for name in ("state_0", "state_1")}
        np.testing.assert_array_equal(out["actions"], expected)
        for name, kept in zip(("state_0", "state_1"), carried["policy"]):
            np.testing.assert_allclose(state[name], kept, rtol=1e-6, atol=1e-7)
        drawn = sample(observations=tf.constant(observation[None]), seed=tf.constant([1, steps]),
                       **state)
        assert drawn["actions"].shape == (1,) and drawn["log_probs"].shape == (1,)
        actions.append(int(expected[0]))
        observation, _, terminated, truncated, _ = env.step(int(expected[0]))
        steps += 1
        if terminated or truncated:
            break
    assert steps > 5 and np.abs(state["state_1"]).max() > 0
    with pytest.raises(pg_keras.InputError, match="recurrent policy"):
        export_policy(policy, str(tmp_path / "tflite"), format="tflite")


def test_the_flagfile_gives_an_lstm_config():
    from absl import flags
    from pg_keras.cli.config_flags import config_from_flags, define_config_flags
    values = flags.FlagValues()
    define_config_flags(values)
    values(["prog", "--flagfile=experiments/configs/cartpole_novelocity_lstm.cfg"])
    config = config_from_flags(values)
    assert (config.recurrent_cell, config.env_id) == (
        "lstm", "experiments.envs:CartPoleNoVelocity-v1")


# --------------------------------------------------------------------------- distributed

MIRRORED = '''
import json
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
import pg_keras
import tests.recurrent_envs

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
config = pg_keras.Config(env_id="PgkRecall-v0", recurrent_cell="lstm", recurrent_units=8,
                         hidden_sizes=(8,), value_hidden_sizes=(8,), num_envs=4,
                         steps_per_update=5, normalize_observations=True)
envs = pg_keras.make_vector_env(config.env_id, config.num_envs, delay=2)
space = (envs.single_observation_space, envs.single_action_space)
keras.utils.set_random_seed(0)
single = pg_keras.build_learner(config, *space)
keras.utils.set_random_seed(0)
mirrored = pg_keras.build_learner(config, *space, strategy=strategy)
weights = lambda learner: [v.numpy() for v in learner.policy_variables + learner.value_variables]
initial = weights(single)
collector = pg_keras.Collector(envs, single.policy, config)
gaps, losses = [], []
for _ in range(3):
    batch, _ = collector.collect()
    a, b = single.update(batch), mirrored.update(batch)
    gaps.append(max(float(np.abs(x - y).max()) for x, y in zip(weights(single), weights(mirrored))))
    losses.append([float(a["loss"]), float(b["loss"])])
moved = max(float(np.abs(x - y).max()) for x, y in zip(weights(single), initial))
print(json.dumps({"gaps": gaps, "losses": losses, "moved": moved}))
'''


@pytest.mark.slow
def test_two_mirrored_replicas_replay_their_own_envs_states():
    """Each replica replays its half of the environments from their own initial states;
    the update equals the single-device one on the whole batch."""
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                         cwd=repo, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["moved"] > 1e-3
    assert max(result["gaps"]) < 2e-5, result
    for single, mirrored in result["losses"]:
        assert mirrored == pytest.approx(single, rel=1e-4, abs=1e-5)


# --------------------------------------------------------------------------- compiled


@pytest.mark.slow
def test_the_compiled_rollout_carries_the_state_the_replay_ends_with():
    """Segments of 40 CartPole steps (episodes end inside them): each segment starts from
    the state the replay of the one before ends with, and its V(s_T) bootstrap continues
    from there too."""
    from pg_keras.collect import CompiledCollector, make_compiled_env
    config = pg_keras.Config(backend="compiled", recurrent_cell="gru", recurrent_units=6,
                             hidden_sizes=(8,), value_hidden_sizes=(8,), num_envs=3,
                             steps_per_update=40, xla_rollout=False)
    env = make_compiled_env(config.env_id)
    learner = build_learner(config, env.observation_space, env.action_space)
    collector = CompiledCollector(env, learner.policy, config)
    policy = learner.policy
    first, second = collector.collect()[0], collector.collect()[0]
    done = first.terminated | first.truncated
    assert done.numpy().any()
    features = policy.features(tf.reshape(first.observations, [-1, 4]))
    sequence = tf.transpose(tf.reshape(features, [40, 3, 4]), [1, 0, 2])
    reset = tf.transpose(tf.concat([first.initial_state["reset"],
                                    tf.cast(done[:-1], tf.float32)], 0))
    for role, network in (("policy", policy.network), ("value", policy.value_network)):
        _, final = network((sequence, tuple(s[0] for s in first.initial_state[role]), reset))
        for kept, replayed in zip(second.initial_state[role], final):
            np.testing.assert_allclose(kept[0], replayed, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(second.initial_state["reset"][0],
                                  tf.cast(done[-1], tf.float32))
    state = tf.nest.map_structure(lambda x: x[0], second.initial_state)
    open_ = ~done[-1].numpy()
    expected = policy.value(second.observations[0], state).numpy()
    np.testing.assert_allclose(first.bootstrap[-1].numpy()[open_], expected[open_], rtol=1e-5)
    restored = CompiledCollector(env, learner.policy, config)
    restored.restore(collector.state())
    for a, b in zip(tf.nest.flatten(restored._recurrent_state),
                    tf.nest.flatten(collector._recurrent_state)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("greedy", [True, False])
def test_evaluation_acts_among_the_legal_actions(greedy):
    """Taxi's info["action_mask"]: a policy whose logits all but force drop-off (illegal
    without the passenger, -10) must still take only legal actions (-1 a step)."""
    config = _config(env_id="Taxi-v4", hidden_sizes=(8,))
    envs = make_vector_env(config.env_id, 1)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    kernel, bias = [v for v in learner.policy_variables if v.shape[-1] == 6][-2:]
    kernel.assign(tf.zeros_like(kernel))
    bias.assign([0.0, 0.0, 0.0, 0.0, 0.0, 20.0])
    returns = evaluate(learner.policy, config.env_id, 4, seed=3, max_steps=30, greedy=greedy)
    assert (returns >= -30).all(), returns  # no -10: drop-off was never taken illegally


def test_a_feed_forward_policy_with_a_recurrent_value_model_exports(tmp_path):
    def dense_policy(observation_shape, output_units):
        inputs = keras.Input(observation_shape)
        return keras.Model(inputs, keras.layers.Dense(output_units)(inputs))

    config = pg_keras.Config(env_id="CartPole-v1", recurrent_cell="lstm", recurrent_units=4,
                             hidden_sizes=(4,), value_hidden_sizes=(4,), num_envs=2,
                             steps_per_update=4, total_steps=8, eval_every=0)
    result = pg_keras.train(config, policy_network=dense_policy)
    assert result.policy.state_sizes["value"] and not result.policy.state_sizes["policy"]
    pg_keras.export_policy(result.policy, tmp_path / "policy")
    loaded = tf.saved_model.load(str(tmp_path / "policy"))
    observations = np.zeros((3, 4), np.float32)
    np.testing.assert_array_equal(loaded.signatures["serving_default"](
        observations=observations)["actions"].numpy(),
        result.policy.greedy(observations, result.policy.all_legal(3),
                             result.policy.initial_state(3))[0])
    assert "value" not in loaded.signatures
