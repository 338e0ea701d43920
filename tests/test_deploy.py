"""Tests of pg_keras.convert and ``experiments.export --format``: the converted policies
run in the LiteRT interpreter and in onnxruntime and compute what the SavedModel does.

Three small untrained policies (random weights, so the actions vary): CartPole-v1
(Discrete actions, observation normalization), Pendulum-v1 (a clipped Box action,
normalized returns) and a MultiBinary action space without a value network. Each is
exported once and converted to both formats; every signature is run on 256 observations.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

import launchers
import pg_keras
from pg_keras import convert
from pg_keras.export import export_policy

pytest.importorskip("ai_edge_litert", reason="the deploy extra is not installed")
pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")
pytest.importorskip("tf2onnx", reason="the deploy extra is not installed")

import onnxruntime  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 256
SEEDS = [[s, 17] for s in range(24)]  # 24 x 256 draws per runtime for the law tests
BINARY_SPACES = (gym.spaces.Box(-1.0, 1.0, (3,), np.float32), gym.spaces.MultiBinary(4))


def _observations(env_id, rng):
    """N observations of a random-action rollout (resets included)."""
    env = gym.make(env_id)
    env.action_space.seed(0)
    observation, _ = env.reset(seed=0)
    rows = []
    while len(rows) < N:
        rows.append(observation)
        observation, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            observation, _ = env.reset()
    return np.asarray(rows, np.float32)


def _learner(name, rng):
    if name == "multibinary":
        config = pg_keras.Config(baseline=False)
        learner = pg_keras.build_learner(config, *BINARY_SPACES)
        observations = rng.uniform(-1.0, 1.0, (N, 3)).astype(np.float32)
    else:
        env_id = {"cartpole": "CartPole-v1", "pendulum": "Pendulum-v1"}[name]
        config = pg_keras.Config(env_id=env_id, normalize_observations=True,
                                 normalize_returns=True)
        env = gym.make(env_id)
        learner = pg_keras.build_learner(config, env.observation_space, env.action_space)
        observations = _observations(env_id, rng)
        learner.normalizer.update(observations)
        learner.return_stats.update(rng.normal(0.0, 5.0, (N,)))
    for variable in learner.policy_variables + learner.value_variables:
        if "normalizer" in variable.name or "return_stats" in variable.name:
            continue
        shape = tuple(variable.shape)
        std = 1.0 / np.sqrt(shape[0]) if len(shape) == 2 else 0.3
        variable.assign(rng.normal(0.0, std, shape).astype(np.float32))
    return learner, observations


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> (learner, SavedModel dir, tflite path, onnx dir, observations)."""
    root = tmp_path_factory.mktemp("deploy")
    rng = np.random.default_rng(0)
    result = {}
    for name in ("cartpole", "pendulum", "multibinary"):
        learner, observations = _learner(name, rng)
        saved = export_policy(learner.policy, root / name / "saved_model")
        tflite_dir, onnx_dir = root / name / "tflite", root / name / "onnx"
        tflite_dir.mkdir(), onnx_dir.mkdir()
        [tflite] = convert.to_tflite(saved, str(tflite_dir))
        convert.to_onnx(saved, str(onnx_dir))
        result[name] = (learner, saved, tflite, str(onnx_dir), observations)
    return result


def _runners(case):
    """runtime -> run(signature, **inputs) -> dict of numpy outputs."""
    _, saved, tflite, onnx_dir, _ = case
    model = tf.saved_model.load(saved)
    interpreter = Interpreter(model_path=tflite)
    sessions = {}

    def saved_model(name, **inputs):
        outputs = model.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        return {k: v.numpy() for k, v in outputs.items()}

    def onnx(name, **inputs):
        if name not in sessions:
            sessions[name] = onnxruntime.InferenceSession(
                os.path.join(onnx_dir, f"{name}.onnx"), providers=["CPUExecutionProvider"])
        session = sessions[name]
        return dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))

    return {"saved_model": saved_model, "onnx": onnx,
            "tflite": lambda name, **inputs: interpreter.get_signature_runner(name)(**inputs)}


def test_each_format_holds_every_signature(converted):
    for name, (learner, saved, tflite, onnx_dir, _) in converted.items():
        masked = ["distribution_masked", "greedy_masked", "sample_masked"]
        expected = sorted(["distribution", "sample", "serving_default"] + (
            ["value"] if learner.has_baseline else []) + (
            masked if learner.head.mask_size else []))
        assert sorted(Interpreter(model_path=tflite).get_signature_list()) == expected
        assert sorted(os.listdir(onnx_dir)) == [f"{s}.onnx" for s in expected]


@pytest.mark.parametrize("runtime", ["tflite", "onnx"])
@pytest.mark.parametrize("name", ["cartpole", "pendulum", "multibinary"])
def test_greedy_actions_parameters_and_values_equal_the_saved_models(converted, name, runtime):
    case = converted[name]
    learner, observations = case[0], case[4]
    runners = _runners(case)
    reference, run = runners["saved_model"], runners[runtime]
    greedy = reference("serving_default", observations=observations)["actions"]
    assert len(np.unique(greedy.reshape(N, -1), axis=0)) > 1, "a constant policy proves little"
    actions = run("serving_default", observations=observations)["actions"]
    assert actions.dtype == greedy.dtype
    if np.issubdtype(greedy.dtype, np.integer):
        np.testing.assert_array_equal(actions, greedy)
    else:  # a Box action: the mean, clipped, computed by another runtime's kernels
        np.testing.assert_allclose(actions, greedy, rtol=1e-4, atol=1e-4)
    signatures = ["distribution"] + (["value"] if learner.has_baseline else [])
    for signature in signatures:
        expected = reference(signature, observations=observations)
        outputs = run(signature, observations=observations)
        assert sorted(outputs) == sorted(expected)
        for key in expected:
            np.testing.assert_allclose(outputs[key], expected[key], rtol=1e-4, atol=1e-4,
                                       err_msg=f"{signature}/{key}")


def _discrete_outcome_probs(name, params):
    """[N, outcomes] probability of each joint action, from the distribution signature."""
    logits = params["logits"].astype(np.float64)
    if name == "cartpole":
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        return probs / probs.sum(-1, keepdims=True)
    bits = (np.arange(16)[:, None] >> np.arange(3, -1, -1)[None, :]) & 1  # [16, 4]
    log_one, log_zero = -np.logaddexp(0, -logits), -np.logaddexp(0, logits)
    return np.exp(log_one @ bits.T + log_zero @ (1 - bits).T)


def _outcome_index(name, actions):
    if name == "cartpole":
        return actions.astype(np.int64)
    return (actions.astype(np.int64) * (1 << np.arange(3, -1, -1))).sum(-1)


def _assert_discrete_law(name, actions, probs):
    """Pearson's chi-square of the counts of each outcome against the summed
    probabilities of the observations they were drawn for (conservative for rows with
    different laws); 0.1% level, Wilson-Hilferty quantile."""
    counts = np.bincount(_outcome_index(name, actions).ravel(), minlength=probs.shape[1])
    expected = probs.sum(0) * len(SEEDS)
    keep = expected >= 5
    statistic = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = keep.sum() - 1
    critical = dof * (1 - 2 / (9 * dof) + 3.09 * math.sqrt(2 / (9 * dof))) ** 3
    assert statistic < critical, (statistic, critical, counts, expected)


def _assert_clipped_gaussian_law(actions, params, low, high):
    """Randomized probability integral transform of the clipped Gaussian, uniform by KS."""
    rng = np.random.default_rng(0)
    mean = np.tile(params["mean"], (len(SEEDS), 1)).astype(np.float64)
    std = np.tile(params["std"], (len(SEEDS), 1)).astype(np.float64)
    cdf = lambda x: 0.5 * (1 + np.vectorize(math.erf)((x - mean) / (std * math.sqrt(2))))
    u = cdf(actions.astype(np.float64))
    at_low, at_high = actions <= low, actions >= high
    u = np.where(at_low, rng.uniform(size=u.shape) * cdf(low), u)
    u = np.where(at_high, cdf(high) + rng.uniform(size=u.shape) * (1 - cdf(high)), u)
    u = np.sort(u.ravel())
    n = len(u)
    statistic = max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n))
    assert statistic < 1.95 / math.sqrt(n), statistic


@pytest.mark.parametrize("runtime", ["tflite", "onnx"])
@pytest.mark.parametrize("name", ["cartpole", "pendulum", "multibinary"])
def test_samples_follow_the_policys_law_and_log_probs_match(converted, name, runtime):
    case = converted[name]
    observations = case[4]
    runners = _runners(case)
    params = runners["saved_model"]("distribution", observations=observations)
    draws, reference = [], []
    for seed in SEEDS:
        inputs = {"observations": observations, "seed": np.asarray(seed, np.int32)}
        outputs = runners[runtime]("sample", **inputs)
        expected = runners["saved_model"]("sample", **inputs)
        # The same seed draws the same noise in every runtime.
        np.testing.assert_allclose(outputs["log_probs"], expected["log_probs"], rtol=1e-4,
                                   atol=1e-4)
        draws.append(outputs["actions"]), reference.append(expected["actions"])
    actions, reference = np.concatenate(draws), np.concatenate(reference)
    if name == "pendulum":
        np.testing.assert_allclose(actions, reference, rtol=1e-4, atol=1e-4)
        _assert_clipped_gaussian_law(actions, params, -2.0, 2.0)
    else:
        assert np.mean(actions == reference) > 0.999
        _assert_discrete_law(name, actions, _discrete_outcome_probs(name, params))


def _run_export(*args, block=""):
    """experiments.export in a fresh interpreter where ``block`` cannot be imported."""
    code = ("import sys, runpy\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if {block!r} and name.split('.')[0] == {block!r}:\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "sys.argv = ['export'] + sys.argv[1:]\n"
            "runpy.run_module('experiments.export', run_name='__main__', alter_sys=True)\n")
    environ = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run") / "cartpole"
    pg_keras.train(pg_keras.Config(env_id="CartPole-v1", total_steps=512, num_envs=4,
                                   steps_per_update=32, eval_episodes=1), root_dir=str(root))
    return str(root)


def test_export_command_writes_tflite_that_acts_as_the_run(run_dir, tmp_path):
    target = tmp_path / "tflite"
    result = launchers.run("experiments.export", f"--root_dir={run_dir}",
                           f"--export_dir={target}", "--format=tflite")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(target)) == ["config.json", "policy.tflite"]
    from pg_keras.run_dir import restore_learner
    policy = restore_learner(run_dir).policy
    observations = np.random.default_rng(3).normal(size=(N, 4)).astype(np.float32)
    runner = Interpreter(model_path=str(target / "policy.tflite")).get_signature_runner(
        "serving_default")
    np.testing.assert_array_equal(runner(observations=observations)["actions"],
                                  policy.predict(observations)[0])


def test_export_command_names_the_extra_when_a_converter_is_missing(run_dir, tmp_path):
    target = tmp_path / "onnx"
    result = _run_export(f"--root_dir={run_dir}", f"--export_dir={target}", "--format=onnx",
                         block="tf2onnx")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [l for l in result.stderr.splitlines() if l.startswith("export: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "tf2onnx" in errors[0] and 'pip install -e ".[deploy]"' in errors[0]
    assert not target.exists()
