"""Tests of pg_keras.export and experiments/evaluate.py.

The exported models are checked where they will be used: in a fresh interpreter where
importing pg_keras or tensorflow_probability fails, comparing their actions with the
in-process policy's on fixed observations. Three action spaces (Discrete, Box with
observation normalization, MultiDiscrete with start offsets on a Discrete observation
space) share one such interpreter, to keep TensorFlow's start-up cost to a few runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import launchers
import pg_keras
from pg_keras.export import export_policy, load_policy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
ENV_MODULE = "pgk_export_envs"
GRID_ID = f"{ENV_MODULE}:PgkGrid-v0"

# A tiny env with a Discrete observation space, a MultiDiscrete action space with start
# offsets, and an rgb_array rendering that needs only numpy. It is a module written to
# disk, because the evaluate command and the loader interpreter import it by name.
ENV_SOURCE = textwrap.dedent('''
    import gymnasium as gym
    import numpy as np

    class PgkGrid(gym.Env):
        """Position 0..5; reward = how close the action's sum is to the position."""

        metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
        observation_space = gym.spaces.Discrete(6)
        action_space = gym.spaces.MultiDiscrete([3, 2, 4], start=[1, 0, -2])

        def __init__(self, render_mode=None):
            self.render_mode = render_mode
            self.position = 0

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.position = int(self.np_random.integers(6))
            return self.position, {}

        def step(self, action):
            if not self.action_space.contains(action):
                raise ValueError(f"action {action!r} not in {self.action_space}")
            reward = -abs(float(np.sum(action)) - self.position)
            self.position = (self.position + int(action[0])) % 6
            return self.position, reward, self.position == 5, False, {}

        def render(self):
            frame = np.zeros((12, 36, 3), np.uint8)
            frame[:, 6 * self.position:6 * self.position + 6] = 255
            return frame

    gym.register("PgkGrid-v0", entry_point=PgkGrid, max_episode_steps=12)
''')

# Run first in every subprocess of these tests: the exported model must work without
# pg_keras and tensorflow_probability, so importing either is an error there.
BLOCK_IMPORTS = textwrap.dedent('''
    import os, sys

    class _Blocked:
        names = ("pg_keras", "tensorflow_probability") + tuple(
            n for n in os.environ.get("PGK_TEST_BLOCK", "").split(",") if n)
        allowed = ()  # modules a script lets through by name

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names and name not in self.allowed:
                raise ImportError(f"{name} must not be imported by an exported model's user")
            return None

    sys.meta_path.insert(0, _Blocked())
''')


def _python_environ(env_dir, block=()):
    """The environment of a fresh interpreter where pg_keras, tfp and ``block`` cannot be
    imported, with the test env module and the repository on its path."""
    path = [env_dir, REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(path),
                PGK_TEST_BLOCK=",".join(block))


def _run_python(code, env_dir, *args, block=()):
    """Runs ``code`` in such a fresh interpreter (``_python_environ``)."""
    return subprocess.run([sys.executable, "-c", BLOCK_IMPORTS + code, *args], cwd=REPO,
                          env=_python_environ(env_dir, block), capture_output=True, text=True,
                          timeout=300)


def _randomize(learner, seed, scale=1.0):
    """Replaces every weight with a seeded random one, so a model exported with its
    initial weights (or without them) cannot pass as the trained one. Kernels get a
    1/sqrt(fan_in) spread, so the actions vary with the observation instead of saturating."""
    rng = np.random.default_rng(seed)
    for variable in learner.policy_variables + learner.value_variables:
        shape = tuple(variable.shape)
        std = scale / np.sqrt(shape[0]) if len(shape) == 2 else 0.3 * scale
        variable.assign(rng.normal(0.0, std, shape).astype(np.float32))


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("envs")
    (directory / f"{ENV_MODULE}.py").write_text(ENV_SOURCE)
    sys.path.insert(0, str(directory))
    __import__(ENV_MODULE)
    yield str(directory)
    sys.path.remove(str(directory))


def _grid_learner(seed=0):
    config = pg_keras.Config(env_id=GRID_ID, baseline=False)
    env = gym.make("PgkGrid-v0")
    learner = pg_keras.build_learner(config, env.observation_space, env.action_space)
    _randomize(learner, seed)
    return config, learner


@pytest.fixture(scope="module")
def exported(env_dir, tmp_path_factory):
    """name -> (config, learner, export dir, fixed observations) for three action spaces."""
    root = tmp_path_factory.mktemp("exports")
    rng = np.random.default_rng(0)
    models = {}

    config = pg_keras.Config(env_id="CartPole-v1")
    env = gym.make("CartPole-v1")
    learner = pg_keras.build_learner(config, env.observation_space, env.action_space)
    _randomize(learner, 4)
    models["cartpole"] = (config, learner, rng.normal(0.0, 1.0, (16, 4)).astype(np.float32))

    config = pg_keras.Config(env_id="Pendulum-v1", normalize_observations=True,
                             normalize_returns=True)
    env = gym.make("Pendulum-v1")
    learner = pg_keras.build_learner(config, env.observation_space, env.action_space)
    _randomize(learner, 2, scale=3.0)  # means past the bounds: the clip is exercised
    # Statistics far from the initial (0, 1), so an export that dropped them would differ.
    learner.normalizer.update(rng.normal([0.5, -0.5, 2.0], [0.3, 0.2, 3.0], (256, 3)))
    learner.return_stats.update(rng.normal(0.0, 5.0, (256,)))
    low, high = env.observation_space.low, env.observation_space.high
    models["pendulum"] = (config, learner, rng.uniform(low, high, (16, 3)).astype(np.float32))

    config, learner = _grid_learner(3)
    models["grid"] = (config, learner, np.arange(12, dtype=np.int32) % 6)

    result = {}
    for name, (config, learner, observations) in models.items():
        path = export_policy(learner.policy, root / name, config=config)
        np.save(root / f"{name}_obs.npy", observations)
        result[name] = (config, learner, path, observations)
    return result


LOADER = textwrap.dedent('''
    import json, os, sys
    import gymnasium as gym
    import numpy as np
    import tensorflow as tf
    import pgk_export_envs

    root, out = sys.argv[1], {}
    for name, env_id in [("cartpole", "CartPole-v1"), ("pendulum", "Pendulum-v1"),
                         ("grid", "PgkGrid-v0")]:
        model = tf.saved_model.load(os.path.join(root, name))
        obs = np.load(os.path.join(root, name + "_obs.npy"))
        wide = obs.astype(np.float64 if obs.dtype == np.float32 else np.int64)
        env = gym.make(env_id)
        actions = model.greedy(obs).numpy()
        record = {
            "greedy": actions.tolist(),
            "call": model(obs).numpy().tolist(),
            "greedy_wide": model.greedy(wide).numpy().tolist(),
            "sample": model.sample(obs, tf.constant([7, 3])).numpy().tolist(),
            "sample_int64_seed": model.sample(wide, np.array([7, 3])).numpy().tolist(),
            "distribution": {k: v.numpy().tolist() for k, v in model.distribution(obs).items()},
            "has_value": hasattr(model, "value"),
            "signatures": sorted(model.signatures),
            "variables": [v.name for v in model.policy_variables],
            "in_space": bool(all(env.action_space.contains(a) for a in actions)),
            "config_env_id": json.load(open(os.path.join(root, name, "config.json")))["env_id"],
        }
        if hasattr(model, "value"):
            record["value"] = model.value(obs).numpy().tolist()
        serving = model.signatures["serving_default"](observations=tf.constant(obs))
        record["serving"] = serving["actions"].numpy().tolist()
        first, _ = env.reset(seed=0)
        action = model.greedy(np.asarray([first])).numpy()[0]
        env.step(action)  # raises if the env refuses the action
        errors = []
        wrong = [np.zeros((2,) + obs.shape[1:] + (2,), obs.dtype), np.zeros((3, 7), obs.dtype)]
        for bad in wrong:
            try:
                model.greedy(bad)
                errors.append(None)
            except tf.errors.InvalidArgumentError as error:
                errors.append(error.message)
        record["errors"] = errors
        out[name] = record
    out["modules"] = sorted(m for m in sys.modules
                            if m.split(".")[0] in ("pg_keras", "tensorflow_probability"))
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def fresh_interpreters(exported, env_dir):
    """The LOADER script on the three exports and the evaluate command on the grid export,
    each in a fresh interpreter without pg_keras, the two at once: name -> completed
    process."""
    root = os.path.dirname(exported["cartpole"][2])
    loader, evaluate = launchers.run_processes(
        [sys.executable, "-c", BLOCK_IMPORTS + LOADER, root],
        [sys.executable, "-c", BLOCK_IMPORTS + EVALUATE, f"--saved_model={exported['grid'][2]}",
         f"--env={GRID_ID}", "--episodes=4", "--seed=5"], cwd=REPO, env=_python_environ(env_dir))
    return {"loader": loader, "evaluate": evaluate}


@pytest.fixture(scope="module")
def loaded(fresh_interpreters):
    """What a fresh interpreter without pg_keras computes with the three exports."""
    result = fresh_interpreters["loader"]
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _reference(learner, observations):
    policy = learner.policy
    greedy = policy.predict(observations)[0]
    raw_params = policy.params(tf.constant(observations))
    # The export samples with the head's portable sampler (ops TFLite and ONNX run).
    sample = policy.head.to_env(policy.head.portable_sample(raw_params, tf.constant([7, 3])))
    sample = sample.numpy()
    params = {k: v.numpy() for k, v in policy.head.parameters(raw_params).items()}
    value = (policy.value(tf.constant(observations), policy.initial_state(len(observations)))
             .numpy() if learner.has_baseline else None)
    return greedy, sample, params, value


@pytest.mark.parametrize("name", ["cartpole", "grid"])
def test_discrete_exports_match_the_policy_exactly_without_pg_keras(exported, loaded, name):
    _, learner, _, observations = exported[name]
    greedy, sample, params, _ = _reference(learner, observations)
    record = loaded[name]
    assert loaded["modules"] == []
    assert len(np.unique(np.asarray(greedy).reshape(len(greedy), -1), axis=0)) > 1, (
        "fixture policy is constant; the comparison would prove little")
    for key in ("greedy", "call", "greedy_wide", "serving"):
        np.testing.assert_array_equal(np.asarray(record[key]), greedy, err_msg=key)
    np.testing.assert_array_equal(np.asarray(record["sample"]), sample)
    np.testing.assert_array_equal(np.asarray(record["sample_int64_seed"]), sample)
    np.testing.assert_allclose(np.asarray(record["distribution"]["logits"]), params["logits"],
                               rtol=1e-5, atol=1e-5)
    assert record["in_space"]


def test_multidiscrete_actions_carry_the_start_offsets(exported, loaded):
    actions = np.asarray(loaded["grid"]["greedy"])
    assert actions.shape == (12, 3)
    space = gym.spaces.MultiDiscrete([3, 2, 4], start=[1, 0, -2])
    assert all(space.contains(a.astype(space.dtype)) for a in actions)
    assert actions[:, 2].min() < 0, "start=-2 sub-action never below 0: offset not applied?"


def test_box_export_matches_the_policy_with_normalization_inside(exported, loaded):
    _, learner, _, observations = exported["pendulum"]
    greedy, sample, params, value = _reference(learner, observations)
    record = loaded["pendulum"]
    assert float(learner.normalizer.count.numpy()) == 256.0
    for key in ("greedy", "call", "greedy_wide", "serving"):
        np.testing.assert_allclose(np.asarray(record[key]), greedy, rtol=1e-5, atol=1e-5,
                                   err_msg=key)
    # Large random weights push some means past the bounds: the clip must be inside.
    assert np.abs(greedy).max() == pytest.approx(2.0)
    assert np.abs(greedy).min() < 2.0
    np.testing.assert_allclose(np.asarray(record["sample"]), sample, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(record["distribution"]["mean"]), params["mean"],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(record["distribution"]["std"]), params["std"],
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(record["value"]), value, rtol=1e-5, atol=1e-4)
    assert record["in_space"]
    assert any("observation_normalizer/mean" in v for v in record["variables"])
    assert any("return_stats/variance" in v for v in record["variables"])


def test_signatures_value_only_with_a_value_network_and_config_json(exported, loaded):
    # Discrete actions: each also with an action_mask input.
    assert loaded["cartpole"]["signatures"] == [
        "distribution", "distribution_masked", "greedy_masked", "sample", "sample_masked",
        "serving_default", "value"]
    assert loaded["cartpole"]["has_value"]
    assert loaded["grid"]["signatures"] == [
        "distribution", "distribution_masked", "greedy_masked", "sample", "sample_masked",
        "serving_default"]
    assert not loaded["grid"]["has_value"]
    assert loaded["grid"]["config_env_id"] == GRID_ID
    config, _, path, _ = exported["pendulum"]
    with open(os.path.join(path, "config.json")) as f:
        assert pg_keras.Config.from_dict(json.load(f)) == config


@pytest.mark.parametrize("name,expected", [("cartpole", "[None, 4]"), ("grid", "[None]")])
def test_wrong_observation_shape_is_named_in_the_error(loaded, name, expected):
    for message in loaded[name]["errors"]:
        assert message is not None, "a wrong-shape batch was accepted"
        assert f"observations must have shape {expected}" in message
        assert "received shape" in message


def test_saved_model_cli_lists_signatures_and_runs_serving_default(exported):
    _, learner, path, _ = exported["cartpole"]
    environ = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    show, run = launchers.run_processes(
        [SAVED_MODEL_CLI, "show", "--dir", path, "--all"],
        [SAVED_MODEL_CLI, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
         "serving_default", "--input_exprs", "observations=[[0.,0.,0.,0.]]"], env=environ)
    assert show.returncode == 0, show.stderr[-2000:]
    for name in ("serving_default", "sample", "distribution", "value"):
        assert f"signature_def['{name}']" in show.stdout
    assert "inputs['observations']" in show.stdout
    assert "inputs['seed']" in show.stdout
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Result for output key actions" in run.stdout
    expected = int(learner.policy.predict(np.zeros((1, 4), np.float32))[0][0])
    assert run.stdout.strip().splitlines()[-1].strip() == f"[{expected}]"


def _previous_export(exported, target):
    """The fixture's grid export copied to ``target``, as an earlier export_policy left it:
    (its learner, observations and the actions it takes on them)."""
    _, learner, path, _ = exported["grid"]
    shutil.copytree(path, target)
    observations = np.arange(6, dtype=np.int32)
    return learner, observations, learner.policy.predict(observations)[0]


def test_existing_dir_is_refused_then_replaced_with_overwrite(exported, tmp_path):
    target = tmp_path / "model"
    learner, observations, previous = _previous_export(exported, target)
    with pytest.raises(ValueError, match="already exists.*overwrite=True") as error:
        export_policy(learner.policy, target)
    assert str(target) in str(error.value) and "\n" not in str(error.value)

    _, replacement = _grid_learner(seed=11)
    expected = replacement.policy.predict(observations)[0]
    assert not np.array_equal(expected, previous)
    assert export_policy(replacement.policy, target, overwrite=True) == str(target)
    model = load_policy(target)  # kept: its functions need the object alive
    np.testing.assert_array_equal(model.greedy(observations).numpy(), expected)
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_crash_while_saving_keeps_the_previous_export(exported, tmp_path, monkeypatch):
    target = tmp_path / "model"
    learner, observations, expected = _previous_export(exported, target)

    def crash(*args, **kwargs):
        os.makedirs(os.path.join(args[1], "variables"))  # a half-written model
        raise RuntimeError("simulated crash in tf.saved_model.save")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export_policy(learner.policy, target, overwrite=True)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export_policy(learner.policy, tmp_path / "fresh")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model"]
    model = tf.saved_model.load(str(target))
    np.testing.assert_array_equal(model.greedy(observations).numpy(), expected)


def test_a_killed_exports_temp_dir_is_removed_by_the_next_export(env_dir, tmp_path):
    """SIGKILL in the middle of writing leaves a temp dir; the next export deletes it, and
    leaves alone the temp dir of a writer that is still alive."""
    _, learner = _grid_learner(seed=14)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = tmp_path / f".model.tmp-{dead.pid}-abc123"
    (abandoned / "variables").mkdir(parents=True)
    live = tmp_path / f".model.tmp-{os.getpid()}-def456"
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead.pid}-ghi789"  # another export's: not ours to touch
    other.mkdir()
    export_policy(learner.policy, tmp_path / "model")
    assert sorted(os.listdir(tmp_path)) == sorted(["model", live.name, other.name])


def test_failed_rename_puts_the_previous_export_back(exported, tmp_path, monkeypatch):
    target = tmp_path / "model"
    _previous_export(exported, target)
    _, learner = _grid_learner(seed=13)
    before = sorted(os.listdir(target))
    real_rename, calls = os.rename, []

    def rename(source, destination):
        calls.append(source)
        if len(calls) == 2:  # the new model into place, after the old one was set aside
            raise OSError("simulated failure of the second rename")
        real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="second rename"):
        export_policy(learner.policy, target, overwrite=True)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert sorted(os.listdir(target)) == before


def test_image_observations_are_accepted_in_the_env_dtype(tmp_path):
    space = gym.spaces.Box(0, 255, (5, 4, 1), np.uint8)
    learner = pg_keras.build_learner(pg_keras.Config(baseline=False), space, gym.spaces.Discrete(3))
    _randomize(learner, 5)
    observations = np.random.default_rng(0).integers(0, 256, (8, 5, 4, 1), np.uint8)
    model = load_policy(export_policy(learner.policy, tmp_path / "model"))
    expected = learner.policy.predict(observations.astype(np.float32))[0]
    np.testing.assert_array_equal(model.greedy(observations).numpy(), expected)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"observations must have shape \[None, 5, 4, 1\] .* dtype "
                             r"float32, float64, uint8 "):
        model.greedy(observations[:, :4])
    # The signatures take the images as the env gives them, and the Keras model too.
    serving = model.signatures["serving_default"]
    assert serving.structured_input_signature[1]["observations"].dtype == tf.uint8
    np.testing.assert_array_equal(serving(observations=tf.constant(observations))["actions"],
                                  expected)
    logits = model.signatures["distribution"](observations=tf.constant(observations))["logits"]
    keras_model = learner.policy.keras_model()
    assert keras_model.inputs[0].dtype == "uint8"
    np.testing.assert_allclose(keras_model(observations)["logits"], logits, atol=1e-5)


def test_export_refuses_what_is_not_a_policy(tmp_path):
    class Result:
        policy = None

    with pytest.raises(ValueError, match=r"pass result\.policy.*received Result"):
        export_policy(Result(), tmp_path / "model")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        export_policy(pg_keras.build_learner(pg_keras.Config(), gym.spaces.Box(-1, 1, (2,)),
                                             gym.spaces.Discrete(2)).policy,
                      tmp_path / "file", overwrite=True)


EVALUATE = textwrap.dedent('''
    import runpy
    # The command's own modules, the config it reads and the import of an env id's module
    # (no model, no TensorFlow): all of pg_keras it may import.
    OWN = ("pg_keras", "pg_keras.config", "pg_keras.cli", "pg_keras.cli.common",
           "pg_keras.cli.evaluate", "pg_keras.imports")
    sys.meta_path[0].allowed = OWN
    sys.argv = ["evaluate"] + sys.argv[1:]
    try:
        runpy.run_module("experiments.evaluate", run_name="__main__", alter_sys=True)
    finally:
        blocked = [m for m in sys.modules if m not in OWN
                   and m.split(".")[0] in ("pg_keras", "tensorflow_probability")]
        print("IMPORTED " + ",".join(blocked), flush=True)
''')


def test_evaluate_command_prints_mean_and_std_without_pg_keras(exported, fresh_interpreters):
    config, learner, path, _ = exported["grid"]
    # A module:Env id is imported only when --env names it (the export's record is data).
    result = fresh_interpreters["evaluate"]
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1].strip() == "IMPORTED"  # nothing of pg_keras's models, nor tfp
    assert lines[-3].startswith("mean return over 4 episodes: ")
    summary = json.loads(lines[-2])
    expected = pg_keras.evaluate(learner.policy, GRID_ID, 4, seed=5)
    np.testing.assert_allclose(summary["returns"], expected)
    assert summary["mean_return"] == pytest.approx(np.mean(expected))
    assert summary["std_return"] == pytest.approx(np.std(expected))
    assert summary["env"] == GRID_ID and summary["videos"] == []


def test_evaluate_command_writes_gifs(exported, env_dir, tmp_path):
    pytest.importorskip("PIL", reason="Pillow, which writes the GIFs, is not installed")
    path = exported["grid"][2]
    video_dir = tmp_path / "videos"
    # In this process (the command without pg_keras is the test above).
    result = launchers.run("experiments.evaluate", f"--saved_model={path}", f"--env={GRID_ID}",
                           "--episodes=3", f"--video_dir={video_dir}", "--video_episodes=2")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    gifs = [os.path.join(video_dir, f"episode_00{i}.gif") for i in range(2)]
    assert summary["videos"] == gifs and summary["episodes"] == 3
    assert sorted(os.listdir(video_dir)) == ["episode_000.gif", "episode_001.gif"]
    for gif in gifs:
        with open(gif, "rb") as f:
            assert f.read(6) in (b"GIF87a", b"GIF89a")


def test_evaluate_command_names_the_missing_gif_writer(exported, env_dir, tmp_path):
    result = _run_python(EVALUATE, env_dir, f"--saved_model={exported['grid'][2]}",
                         f"--env={GRID_ID}",
                         f"--video_dir={tmp_path / 'videos'}", block=("PIL",))
    assert result.returncode == 2  # one line on stderr, as for any bad input
    errors = [l for l in result.stderr.splitlines() if l.startswith("evaluate: error:")]
    assert len(errors) == 1 and "Pillow" in errors[0], result.stderr[-2000:]
    assert not os.path.exists(tmp_path / "videos")


# The serving edges: what a serving client may send that the policy must not act on.

def _calls(model, observations, signatures=True):
    """name -> a call of each exported function (and signature) on ``observations``."""
    seed = tf.constant([1, 2])
    calls = {"greedy": lambda: model.greedy(observations), "call": lambda: model(observations),
             "sample": lambda: model.sample(observations, seed),
             "distribution": lambda: model.distribution(observations),
             "value": lambda: model.value(observations)}
    for name, signature in (model.signatures.items() if signatures else ()):
        inputs = {"observations": tf.constant(observations)}
        if name.startswith("sample"):
            inputs["seed"] = seed
        if name.endswith("_masked"):
            inputs["action_mask"] = tf.ones((len(observations), 2), tf.bool)
        calls[f"signature {name}"] = lambda s=signature, i=inputs: s(**i)
    return calls


@pytest.fixture(scope="module")
def cartpole_model(exported):
    """The CartPole export loaded once: these tests only call it."""
    return tf.saved_model.load(exported["cartpole"][2])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_observations_are_refused_by_every_function(cartpole_model, value):
    model = cartpole_model
    observations = np.zeros((4, 4), np.float32)
    for name, call in _calls(model, observations).items():
        call()  # finite: served
    observations[2, 1] = value
    for name, call in _calls(model, observations).items():
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"observations must be finite \(no NaN or inf\)"):
            call()
            pytest.fail(f"{name} acted on a non-finite observation")


def test_float64_beyond_float32_range_is_refused(cartpole_model):
    model = cartpole_model
    observations = np.zeros((2, 4), np.float64)
    observations[1, 0] = 1e300  # inf once cast to the policy's float32
    for name, call in _calls(model, observations, signatures=False).items():
        with pytest.raises(tf.errors.InvalidArgumentError, match="observations must be finite"):
            call()


def test_an_unbatched_observation_to_a_signature_names_the_expected_shape(cartpole_model):
    model = cartpole_model
    calls = _calls(model, np.zeros(4, np.float32))
    assert len(calls) == 12  # 5 functions, 4 signatures, 3 masked signatures
    for name, call in calls.items():
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            call()
        message = error.value.message
        assert "observations must have shape [None, 4]" in message, (name, message)
        assert "obs[None]" in message and "received shape] [4]" in message, (name, message)


@pytest.mark.parametrize("name", ["cartpole", "pendulum", "grid"])
def test_keras_model_is_the_policy_and_round_trips(exported, name, tmp_path):
    import keras

    _, learner, _, observations = exported[name]
    policy = learner.policy
    expected = {k: v.numpy() for k, v in
                policy.head.parameters(policy.params(tf.constant(observations))).items()}
    model = policy.keras_model()
    assert isinstance(model, keras.Model)
    outputs = model(observations)
    assert sorted(outputs) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(outputs[key], expected[key], rtol=1e-6, atol=1e-6)
    model.save(tmp_path / "policy.keras")
    loaded = keras.models.load_model(tmp_path / "policy.keras")
    for key, value in loaded(observations).items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-6, atol=1e-6)
    if name == "pendulum":  # the normalizer is in the model: the network alone differs
        alone = policy.network(tf.constant(observations)).numpy()
        assert np.abs(alone - expected["mean"]).max() > 0.1
