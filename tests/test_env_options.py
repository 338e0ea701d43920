"""Env wrappers, env kwargs and the action-mask switch: every env a run makes gets them.

The options are Config fields (``--env_wrappers``, ``--env_kwargs``, ``--use_action_mask``),
recorded in config.json; training, evaluation, resume, the export's restore and the
evaluate command all make their envs with them. Bad options are one line, before any work.
"""

import json
import os
import pickle
import signal

import numpy as np
import pytest
from absl import flags

import launchers
import pg_keras
import toy_envs  # noqa: F401  (registers PgkMaskedChoice-v0)
import wrapped_envs
from pg_keras.cli.config_flags import config_from_flags, define_config_flags
from pg_keras.collect import Collector, EnvOptions, make_vector_env
from pg_keras.config import InputError
from pg_keras.learner import build_learner

WRAPPERS = "wrapped_envs:CountingWrapper,wrapped_envs:scale_reward"
LIMIT = 20  # max_episode_steps through env_kwargs; CartPole's own limit is 500


def test_the_fields_parse_from_flags_and_round_trip_through_config_json():
    values = flags.FlagValues()
    define_config_flags(values)
    values(["train", f"--env_wrappers={WRAPPERS}", '--env_kwargs={"b": [1, 2], "a": 1}',
            "--nouse_action_mask"])
    config = config_from_flags(values)
    assert config.env_wrappers == ("wrapped_envs:CountingWrapper", "wrapped_envs:scale_reward")
    assert config.env_kwargs == {"a": 1, "b": [1, 2]} and not config.use_action_mask
    stored = json.loads(json.dumps(config.to_stored()))
    assert stored["env_kwargs"] == {"a": 1, "b": [1, 2]}  # a JSON object, not JSON text
    assert pg_keras.Config.from_dict(stored) == config and config.differences(stored) == []
    # The same mapping in another order is the same config.
    assert config.replace(env_kwargs={"b": [1, 2], "a": 1}) == config
    assert config.differences({**stored, "env_kwargs": {}}) == [
        "env_kwargs: {} -> {'a': 1, 'b': [1, 2]}"]


def test_env_kwargs_round_trip_through_the_stored_config_and_the_flag():
    config = pg_keras.Config(env_kwargs={"max_episode_steps": 50})
    stored = json.loads(json.dumps(config.to_stored()))
    assert stored["env_kwargs"] == {"max_episode_steps": 50}
    again = pg_keras.Config.from_stored(stored, "config.json")
    assert again == config and hash(again) == hash(config)
    assert again.env_kwargs == {"max_episode_steps": 50}
    values = flags.FlagValues()
    define_config_flags(values)
    values(["train", "--env_kwargs=" + json.dumps(dict(config.env_kwargs))])
    assert config_from_flags(values) == config
    values = flags.FlagValues()
    define_config_flags(values)
    values(["train"])
    assert config_from_flags(values).env_kwargs == {}  # the flag's default, "{}"


def test_env_kwargs_are_read_only_and_a_copy_of_the_callers():
    given = {"max_episode_steps": 50, "nested": [1]}
    config = pg_keras.Config(env_kwargs=given)
    given["nested"].append(2)
    assert config.env_kwargs == {"max_episode_steps": 50, "nested": [1]}
    with pytest.raises(TypeError, match="read-only"):
        config.env_kwargs["max_episode_steps"] = 9
    assert pickle.loads(pickle.dumps(config)) == config


def test_a_stored_configs_missing_fields_count_as_their_defaults():
    old = {k: v for k, v in pg_keras.Config().to_stored().items()
           if k not in ("env_wrappers", "env_kwargs", "use_action_mask")}
    old = json.loads(json.dumps(old))
    assert pg_keras.Config.from_dict(old) == pg_keras.Config()
    assert pg_keras.Config(env_kwargs={}, env_wrappers="").differences(old) == []
    assert pg_keras.Config(env_wrappers=("a:B",)).differences(old) == [
        "env_wrappers: [] -> ['a:B']"]


@pytest.mark.parametrize("changes, message", [
    (dict(env_wrappers="no_colon"), r"env_wrappers must be comma-separated 'module:name' "
     r"entries .*; received env_wrappers='no_colon'"),
    (dict(env_kwargs='{"max_episode_steps": 9}'), r"env_kwargs must be a mapping of gym.make "
     r"keyword arguments .*the --env_kwargs flag takes it as JSON text\); received "
     r"env_kwargs='\{\"max_episode_steps\": 9\}'$"),
    (dict(env_kwargs=[1, 2]), r"env_kwargs must be a mapping .*; received "
     r"env_kwargs=\[1, 2\]$"),
    (dict(env_kwargs={1: 2}), r"env_kwargs must be a mapping .*; received env_kwargs=\{1: 2\}$"),
    (dict(env_kwargs={"a": {1, 2}}), r"env_kwargs must be a mapping .*names to JSON values"),
    (dict(backend="compiled", env_kwargs={"max_episode_steps": 9}),
     r"backend='compiled' .* takes no env_wrappers or env_kwargs"),
])
def test_malformed_options_are_refused_by_the_config(changes, message):
    with pytest.raises(InputError, match=message) as error:
        pg_keras.Config(**changes)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("{max: 1}", r"env_kwargs must be a JSON object .*\(Expecting property name .*\); "
     r"received env_kwargs='\{max: 1\}'"),
    ("[1, 2]", r"env_kwargs must be a JSON object .*; received env_kwargs='\[1, 2\]'"),
])
def test_the_flag_refuses_text_that_is_not_a_json_object(text, message):
    values = flags.FlagValues()
    define_config_flags(values)
    values(["train", f"--env_kwargs={text}"])
    with pytest.raises(InputError, match=message):
        config_from_flags(values)


def _train_flags(tmp_path, *extra):
    return ("--env_id=CartPole-v1", "--total_steps=512", "--num_envs=4",
            "--steps_per_update=32", "--eval_every=256", "--eval_episodes=3", "--quiet",
            f"--root_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'model'}", *extra)


BAD_OPTIONS = {
    "module": ("--env_wrappers=no_such_module_xyz:Wrapper",
               "train: error: env_wrappers entry 'no_such_module_xyz:Wrapper' names module "
               "'no_such_module_xyz', which cannot be imported: No module named "
               "'no_such_module_xyz'"),
    "attribute": ("--env_wrappers=wrapped_envs:Missing",
                  "train: error: env_wrappers entry 'wrapped_envs:Missing': module "
                  "'wrapped_envs' has no attribute 'Missing'"),
    "not callable": ("--env_wrappers=wrapped_envs:NOT_A_WRAPPER",
                     "train: error: env_wrappers entry 'wrapped_envs:NOT_A_WRAPPER' is not a "
                     "wrapper class or a function of the env; received 3"),
    "failing": ("--env_wrappers=wrapped_envs:failing",
                "train: error: env_wrappers entry 'wrapped_envs:failing' failed to wrap "
                "CartPole-v1: RuntimeError: this wrapper refuses every env"),
    "not json": ("--env_kwargs={'a': 1}", "train: error: env_kwargs must be a JSON object"),
    "not an object": ('--env_kwargs=[1]', "train: error: env_kwargs must be a JSON object"),
    "refused": ('--env_kwargs={"gravity": 1.0}',
                'train: error: env_kwargs {"gravity": 1.0} are refused by CartPole-v1: '
                "TypeError: CartPoleEnv.__init__() got an unexpected keyword argument "
                "'gravity'"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_options_are_one_line_exit_2_and_nothing_is_written(tmp_path, case):
    flag, expected = BAD_OPTIONS[case]
    run = launchers.run("experiments.train", *_train_flags(tmp_path, flag))
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(expected), run.stderr
    assert os.listdir(tmp_path) == []


def _episode_returns(root):
    with open(os.path.join(root, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return [r[k] for r in records for k in ("return_min", "return_max")
            if r.get(k) is not None]


def _assert_scaled_and_cut(returns):
    """Returns of CartPole episodes with rewards x10 (scale_reward) cut at LIMIT steps."""
    returns = np.asarray(returns, np.float64)
    assert returns.size and np.all(returns % 10 == 0), returns
    assert returns.max() <= 10 * LIMIT and returns.min() > LIMIT, returns


def test_the_options_reach_training_evaluation_the_export_and_the_evaluate_command(tmp_path):
    made = wrapped_envs.CountingWrapper.made
    before = made.get("CartPole-v1", 0)
    run = launchers.run("experiments.train", *_train_flags(
        tmp_path, f"--env_wrappers={WRAPPERS}", f'--env_kwargs={{"max_episode_steps": {LIMIT}}}'))
    assert run.returncode == 0, run.stderr[-2000:]
    # The check's env, the 4 training envs, two evaluations of 3 envs each.
    assert made["CartPole-v1"] - before == 1 + 4 + 2 * 3
    root = tmp_path / "run"
    _assert_scaled_and_cut(_episode_returns(root))
    with open(root / "evaluations.jsonl") as f:
        _assert_scaled_and_cut([json.loads(line)["mean_return"] for line in f])
    for path in (root / "config.json", tmp_path / "model" / "config.json"):
        stored = json.loads(path.read_text())
        assert stored["env_wrappers"] == WRAPPERS.split(",")
        assert stored["env_kwargs"] == {"max_episode_steps": LIMIT}

    count = made["CartPole-v1"]
    run = launchers.run("experiments.export", f"--root_dir={root}",
                        f"--export_dir={tmp_path / 'again'}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert made["CartPole-v1"] == count  # the learner is restored from spaces.json

    # The export's record names the wrappers, but only the command line imports them.
    run = launchers.run("experiments.evaluate", f"--saved_model={tmp_path / 'model'}",
                        "--episodes=4", "--seed=3")
    assert run.returncode == 2 and f"pass --env_wrappers={WRAPPERS} to import them" in run.stderr

    run = launchers.run("experiments.evaluate", f"--saved_model={tmp_path / 'model'}",
                        "--episodes=4", "--seed=3", f"--env_wrappers={WRAPPERS}")
    assert run.returncode == 0, run.stderr[-2000:]
    returns = json.loads(run.stdout.strip().splitlines()[-1])["returns"]
    _assert_scaled_and_cut(returns)
    config = pg_keras.Config.from_dict(json.loads((root / "config.json").read_text()))
    policy = pg_keras.run_dir.restore_learner(str(root)).policy
    np.testing.assert_array_equal(returns, pg_keras.evaluate(policy, config, 4, seed=3))
    # A wrapper that does not give back an env: one line, as in training.
    run = launchers.run("experiments.evaluate", f"--saved_model={tmp_path / 'model'}",
                        "--episodes=2", "--env_wrappers=builtins:id")
    assert run.returncode == 2 and "returned a int, not a gymnasium Env" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_a_resumed_run_keeps_its_options_and_a_run_without_them_is_refused(tmp_path, capsys):
    root = str(tmp_path / "run")
    config = pg_keras.Config(env_id="CartPole-v1", total_steps=640, num_envs=4,
                             steps_per_update=32, eval_every=0, eval_episodes=2,
                             env_wrappers=WRAPPERS, env_kwargs={"max_episode_steps": LIMIT})
    first = []

    def interrupt_after_the_second(record):
        first.append(record)
        if len(first) == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    interrupted = pg_keras.train(config, root_dir=root, callbacks=[
        pg_keras.LambdaCallback(on_update_end=interrupt_after_the_second)])
    assert interrupted.interrupted == "SIGTERM"
    with pytest.raises(InputError, match=r"holds a run with a different config \(env_kwargs: "
                                         r".*, env_wrappers: .* -> \[\]\)"):
        pg_keras.train(config.replace(env_wrappers=(), env_kwargs={}), root_dir=root)
    made = wrapped_envs.CountingWrapper.made["CartPole-v1"]
    resumed = pg_keras.train(config, root_dir=root)
    # The check's env, the 4 training envs (restored from the checkpoint's pickled ones,
    # which were wrapped), the final evaluation's 2.
    assert wrapped_envs.CountingWrapper.made["CartPole-v1"] == made + 1 + 4 + 2
    assert "could not be saved" not in capsys.readouterr().out
    assert len(resumed.history) == 5 and resumed.history[:3] == first
    _assert_scaled_and_cut([r[k] for r in resumed.history[3:]
                            for k in ("return_min", "return_max")
                            if r.get(k) is not None])


@pytest.mark.parametrize("env_id", ["Taxi-v4", "PgkMaskedChoice-v0"])
def test_use_action_mask_false_hides_the_mask_from_collection_and_evaluation(env_id):
    """Taxi's info mask and a Dict observation's mask key alike: the policy then takes
    illegal actions too (its untrained choices are near uniform)."""
    config = pg_keras.Config(env_id=env_id, num_envs=4, steps_per_update=50,
                             use_action_mask=False)
    envs = make_vector_env(config, 4)
    assert "action_mask" not in getattr(envs.single_observation_space, "spaces", {})
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    batch, _ = Collector(envs, learner.policy, config).collect()
    assert batch.action_masks.all()
    masked = make_vector_env(config.replace(use_action_mask=True), 4)
    masked_batch, _ = Collector(masked, learner.policy, config).collect()
    assert not masked_batch.action_masks.all()


def test_evaluation_obeys_the_mask_unless_the_run_hides_it():
    """PgkMaskedChoice pays 1 per legal action, -1 per illegal one, over 6 steps."""
    config = pg_keras.Config(env_id="PgkMaskedChoice-v0")
    envs = make_vector_env(config, 1)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    np.testing.assert_array_equal(pg_keras.evaluate(learner.policy, config, 20, seed=0), 6.0)
    sampled = pg_keras.evaluate(learner.policy, config, 20, seed=0, greedy=False)
    np.testing.assert_array_equal(sampled, 6.0)
    hidden = pg_keras.evaluate(learner.policy, config.replace(use_action_mask=False), 20, seed=0)
    assert hidden.min() < 6.0


def test_a_text_key_is_refused_naming_the_key_and_the_wrapper_that_drops_it():
    config = pg_keras.Config(env_id="PgkTextKey-v0", num_envs=2, steps_per_update=4)
    envs = make_vector_env(config, 2)
    with pytest.raises(InputError, match=r"unsupported observation space Text\(.*\) at "
                                         r"observation key 'mission'; .*; to drop a Dict's "
                                         r"text keys: --env_wrappers=pg_keras.wrappers:"
                                         r"DropTextKeys"):
        build_learner(config, envs.single_observation_space, envs.single_action_space)
    config = config.replace(env_wrappers="pg_keras.wrappers:DropTextKeys")
    envs = make_vector_env(EnvOptions.of(config), 2)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    assert sorted(learner.batch_spec.observations) == ["cue", "nested/x"]
    batch, _ = Collector(envs, learner.policy, config).collect()
    assert set(np.unique(batch.observations["cue"])) <= {0, 1}


@pytest.mark.parametrize("use_action_mask", [True, False])
def test_the_evaluate_command_takes_dict_observations_and_obeys_the_mask_the_run_used(
        tmp_path, use_action_mask):
    config = pg_keras.Config(env_id="PgkMaskedChoice-v0", use_action_mask=use_action_mask)
    envs = make_vector_env(config.replace(use_action_mask=True), 1)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    path = pg_keras.export_policy(learner.policy, tmp_path / "model", config=config)
    run = launchers.run("experiments.evaluate", f"--saved_model={path}", "--episodes=10")
    assert run.returncode == 0, run.stderr[-2000:]
    returns = json.loads(run.stdout.strip().splitlines()[-1])["returns"]
    np.testing.assert_array_equal(returns, pg_keras.evaluate(learner.policy, config, 10, seed=0))
    assert (min(returns) == 6.0) == use_action_mask  # 6 legal steps: 6


def test_the_evaluate_command_casts_each_dict_leaf_to_its_inputs_dtype(tmp_path):
    """PgkCuePosition gives an int64 cue beside a float32 position, a mix the exported
    callables take only once each leaf has its input's dtype."""
    config = pg_keras.Config(env_id="PgkCuePosition-v0")
    envs = make_vector_env(config, 1)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    path = pg_keras.export_policy(learner.policy, tmp_path / "model", config=config)
    run = launchers.run("experiments.evaluate", f"--saved_model={path}", "--episodes=5",
                        "--seed=2")
    assert run.returncode == 0, run.stderr[-2000:]
    returns = json.loads(run.stdout.strip().splitlines()[-1])["returns"]
    np.testing.assert_array_equal(returns, pg_keras.evaluate(learner.policy, config, 5, seed=2))


@pytest.mark.parametrize("task, inputs", [("minigrid_empty8x8_img", ["image"]),
                                          ("minigrid_empty8x8_dict", ["direction", "image"])])
def test_the_minigrid_flagfiles_make_their_envs_and_models(task, inputs):
    pytest.importorskip("minigrid", reason="minigrid (the experiments extra) is not installed")
    values = flags.FlagValues()
    define_config_flags(values)
    values(["train", f"--flagfile=experiments/configs/{task}.cfg"])
    config = config_from_flags(values).replace(num_envs=2, steps_per_update=8)
    envs = make_vector_env(config, 2)
    learner = build_learner(config, envs.single_observation_space, envs.single_action_space)
    observations = learner.batch_spec.observations
    shapes = ({name: observations[name].shape[2:] for name in sorted(observations)}
              if isinstance(observations, dict) else {"image": observations.shape[2:]})
    assert list(shapes) == inputs and shapes["image"] == (7, 7, 3)
    batch, _ = Collector(envs, learner.policy, config).collect()
    assert batch.actions.shape == (8, 2)
