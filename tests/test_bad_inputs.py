"""Bad input is refused in one line that names it, before long work where it can be known:
flags and options, envs whose observations do not fit their space, ``Policy.predict`` calls,
output paths, rendering without a display; no file a run writes holds a bare NaN; and
evaluations act as ``eval_mode`` says (a greedy policy that loops is seen beside its
sampled return)."""

import json
import math
import os
import sys
import types

import gymnasium as gym
import numpy as np
import pytest
from absl import flags

import launchers
import pg_keras
import toy_envs  # noqa: F401  (registers PgkFaultyReward-v0)
from pg_keras.cli.config_flags import config_from_flags, define_config_flags
from pg_keras import reporting, strict_json
from pg_keras.run_dir import Evaluation
from pg_keras.collect.gym_envs import check_env, make_vector_env
from pg_keras.config import InputError, check_run_options
from pg_keras.env_limits import check_render_mode
from pg_keras.learner import build_learner
from pg_keras.training import evaluation_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVED_MODEL = os.path.join(ROOT, "saved_models", "cartpole-v1")


class MisfitEnv(gym.Env):
    """Declares a Box(4,) (or a Dict) observation and returns another at ``where``."""

    action_space = gym.spaces.Discrete(2)

    def __init__(self, where="reset"):
        self.where = where
        if where == "key":
            self.observation_space = gym.spaces.Dict({
                "position": gym.spaces.Box(-1, 1, (2,), np.float32),
                "goal": gym.spaces.Discrete(3)})
        else:
            self.observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)

    def _observation(self, now):
        if self.where == "key":
            return {"position": np.zeros(2, np.float32)}
        return np.zeros(3 if now == self.where else 4, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._observation("reset"), {}

    def step(self, action):
        return self._observation("step"), 0.0, False, False, {}


class SwitchEnv(gym.Env):
    """One constant observation; the episode ends (reward 1) at the first action that
    differs from the episode's first. The greedy policy repeats its action until the time
    limit (return 0); a policy that samples switches within a few steps (return 1)."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.first = None
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.first = int(action) if self.first is None else self.first
        switched = int(action) != self.first
        return np.zeros(1, np.float32), float(switched), switched, False, {}


for _where in ("reset", "step", "key"):
    gym.register(f"PgkMisfit{_where.title()}-v0", entry_point=MisfitEnv,
                 kwargs={"where": _where})
gym.register("PgkSwitch-v0", entry_point=SwitchEnv, max_episode_steps=20)


def _strict_json(text: str):
    """The JSON value of ``text``; a bare NaN or Infinity token fails the test."""
    def refuse(token):
        raise AssertionError(f"a bare {token} in a JSON file")
    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------ flags and options


@pytest.mark.parametrize("argv, message", [
    (["--hidden_sizes="], r"hidden_sizes must list the hidden layers' units .* or be "
     r"--hidden_sizes=none for no hidden layer .*; received an empty --hidden_sizes="),
    (["--value_hidden_sizes="], r"--value_hidden_sizes=none"),
    (["--hidden_sizes=64,x"], r"hidden_sizes must be a tuple of positive integers; "
     r"received hidden_sizes='64,x'"),
    (["--eval_every=-5"], r"eval_every must be a non-negative integer .*received eval_every=-5"),
    (["--eval_mode=argmax"], r"eval_mode must be one of 'greedy', 'sample'; received "
     r"eval_mode='argmax'"),
    (["--vectorization=threads"], r"vectorization must be one of 'sync', 'async'"),
], ids=lambda value: value[0] if isinstance(value, list) else "")
def test_bad_config_flags_are_one_line(argv, message):
    values = flags.FlagValues()
    define_config_flags(values)
    values(["train", *argv])
    with pytest.raises(InputError, match=message) as error:
        config_from_flags(values)
    assert "\n" not in str(error.value)


def test_none_asks_for_no_hidden_layer():
    values = flags.FlagValues()
    define_config_flags(values)
    values(["train", "--hidden_sizes=none", "--value_hidden_sizes=32"])
    config = config_from_flags(values)
    assert config.hidden_sizes == () and config.value_hidden_sizes == (32,)


@pytest.mark.parametrize("options, message", [
    (dict(checkpoint_every=-5), r"checkpoint_every must be a non-negative integer .*"
     r"received checkpoint_every=-5"),
    (dict(checkpoint_every=2.5), r"received checkpoint_every=2.5"),
    (dict(target_return=float("nan")), r"target_return must be a finite number .*"
     r"received target_return=nan"),
    (dict(target_return=float("inf")), r"received target_return=inf"),
    (dict(target_return=-float("inf")), r"received target_return=-inf"),
], ids=str)
def test_bad_run_options_are_refused_before_anything_is_built(options, message):
    with pytest.raises(InputError, match=message):
        check_run_options(**options)
    with pytest.raises(InputError, match=message):
        if "checkpoint_every" in options:
            pg_keras.Checkpointing(every=options["checkpoint_every"])
        else:
            pg_keras.StopWhenSolved(options["target_return"])


def test_good_run_options_pass():
    check_run_options(0, None)
    check_run_options(np.int64(500), np.float32(195.0))


def test_a_window_without_a_display_is_refused_and_frames_go_to_the_dummy_driver(
        monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    message = r"render_mode='human' opens a window, but this machine has no display"
    if sys.platform.startswith("linux"):
        with pytest.raises(InputError, match=message):
            check_render_mode({"render_mode": "human"})
        with pytest.raises(InputError, match=message):
            make_vector_env(pg_keras.Config(env_kwargs={"render_mode": "human"}), 1)
    monkeypatch.setenv("DISPLAY", ":0")
    check_render_mode({"render_mode": "human"})
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    check_render_mode({"render_mode": "rgb_array"})
    assert os.environ["SDL_VIDEODRIVER"] == "dummy"


# -------------------------------------------------------------------------------- envs


@pytest.mark.filterwarnings("ignore:.*is not within the observation space")  # gymnasium's
@pytest.mark.parametrize("env_id, message", [
    ("PgkMisfitReset-v0", r"env 'PgkMisfitReset-v0' returned an observation that does not "
     r"fit its observation_space .* from reset\(\): shape \[3\], but the space's is \[4\]"),
    ("PgkMisfitStep-v0", r"from its first step\(\): shape \[3\], but the space's is \[4\]"),
    ("PgkMisfitKey-v0", r"env 'PgkMisfitKey-v0' failed gymnasium's env check at reset\(\):"
     r" .*obs keys: \['position'\], space keys: \['goal', 'position'\]"),
])
def test_an_observation_that_does_not_fit_its_space_is_named_before_training(
        env_id, message, tmp_path):
    with pytest.raises(InputError, match=message):
        check_env(env_id)
    with pytest.raises(InputError, match=message):
        pg_keras.train(pg_keras.Config(env_id=env_id, total_steps=256),
                       root_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------ Policy.predict

DICT_SPACE = gym.spaces.Dict({"position": gym.spaces.Box(-1, 1, (2,), np.float32),
                              "goal": gym.spaces.Discrete(3)})
BOX_SPACE = gym.spaces.Box(-1, 1, (4,), np.float32)


def _policies():
    small = pg_keras.Config(hidden_sizes=(8,), value_hidden_sizes=(8,))
    return {
        "feed-forward": (build_learner(small, BOX_SPACE, gym.spaces.Discrete(2)).policy,
                         BOX_SPACE),
        "dict": (build_learner(small, DICT_SPACE, gym.spaces.Discrete(2)).policy, DICT_SPACE),
        "recurrent": (build_learner(small.replace(recurrent_cell="gru", recurrent_units=8),
                                    BOX_SPACE, gym.spaces.Box(-1, 1, (2,))).policy, BOX_SPACE),
    }


@pytest.fixture(scope="module")
def policies():
    return _policies()


@pytest.mark.parametrize("kind", ["feed-forward", "dict", "recurrent"])
def test_predict_takes_one_observation_and_gives_one_action(policies, kind):
    policy, space = policies[kind]
    space.seed(0)
    observation = space.sample()
    batched, _ = policy.predict(spaces_batch([observation, space.sample()]))
    single, state = policy.predict(observation)
    np.testing.assert_array_equal(single, batched[0])
    assert np.shape(single) == np.shape(batched[0])
    if policy.recurrent:  # the state keeps its batch of one, to be passed back
        assert state["reset"].shape == (1,)
        policy.predict(observation, state=state)
    sampled, _ = policy.predict(observation, deterministic=False, seed=3)
    assert np.shape(sampled) == np.shape(batched[0])


def spaces_batch(observations):
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.stack(observations)


@pytest.mark.parametrize("kind, observations, message", [
    ("feed-forward", np.array([0.0, np.nan, 0.0, 0.0]),
     r"^observations must be finite; received NaN or inf in row\(s\) \[0\]$"),
    ("feed-forward", np.array([[0.0] * 4, [0.0, 0.0, np.inf, 0.0]]), r"in row\(s\) \[1\]"),
    ("feed-forward", np.zeros(3), r"^observations must have shape \[B, 4\] \(a batch\) or "
     r"\[4\] \(one observation\); received shape \[3\]$"),
    ("feed-forward", np.zeros((2, 2, 4)), r"received shape \[2, 2, 4\]"),
    ("dict", {"position": np.array([np.nan, 0.0]), "goal": 1},
     r"^observations at observation key 'position' must be finite"),
    ("dict", {"position": np.zeros(3), "goal": 1}, r"^observations at observation key "
     r"'position' must have shape \[B, 2\] \(a batch\) or \[2\]"),
    ("dict", {"position": np.zeros((2, 2)), "goal": 1}, r"all batched or all single"),
    ("recurrent", np.full((1, 4), np.nan), r"^observations must be finite"),
    ("recurrent", np.zeros(5), r"received shape \[5\]"),
    ("feed-forward", [[0.0] * 4, [0.0] * 2], r"^observations must be arrays of numbers of "
     r"the observation space Box\(.*\); received list \(.*inhomogeneous"),
    ("feed-forward", "abcd", r"^observations must be arrays of numbers"),
], ids=lambda value: value if isinstance(value, str) and " " not in value else "")
def test_predict_refuses_bad_observations_in_one_line(policies, kind, observations, message):
    policy, _ = policies[kind]
    with pytest.raises(InputError, match=message):
        policy.predict(observations)


@pytest.mark.parametrize("seed", [-1, 2**31, 1.5, "3"])
def test_predict_refuses_a_seed_out_of_range(policies, seed):
    policy, _ = policies["feed-forward"]
    with pytest.raises(InputError, match=r"^seed must be an integer in \[0, 2\*\*31\) or "
                       rf"None; received seed={seed!r}$"):
        policy.predict(np.zeros(4), deterministic=False, seed=seed)


# ------------------------------------------------------------------- no NaN in JSON files


def test_strict_json_writes_null_for_non_finite_values():
    assert strict_json.dumps({"a": float("nan"), "b": [1.0, float("inf")], "c": (2,)}) == \
        '{"a": null, "b": [1.0, null], "c": [2]}'


@pytest.mark.parametrize("returns, mean, left_out", [
    ([1.0, 3.0], 2.0, 0), ([1.0, float("nan"), 3.0, float("inf")], 2.0, 2),
    ([float("nan")] * 3, None, 3)])
def test_an_evaluation_is_of_its_finite_episodes_and_counts_the_others(returns, mean,
                                                                       left_out):
    evaluation = evaluation_of(100, np.array(returns))
    assert evaluation.nonfinite_episodes == left_out
    assert (math.isnan(evaluation.mean_return) if mean is None
            else evaluation.mean_return == mean)
    line = reporting.evaluation_line(evaluation, "greedy", 4.0)
    assert "nan" not in line and "train return (sampled) 4.00" in line
    # Through JSON and back (a checkpoint's loop state): the same evaluation.
    again = Evaluation(**_strict_json(strict_json.dumps(evaluation.__dict__)))
    assert again.nonfinite_episodes == left_out and (
        math.isnan(again.mean_return) if mean is None else again.mean_return == mean)


def test_a_run_whose_evaluations_are_all_non_finite_writes_null_and_the_count(tmp_path):
    config = pg_keras.Config(env_id="PgkFaultyReward-v0", env_kwargs={"nan_every": 1},
                             on_nonfinite="drop", num_envs=2, steps_per_update=10,
                             total_steps=40, eval_every=20, eval_episodes=3,
                             hidden_sizes=(8,), value_hidden_sizes=(8,))
    root = tmp_path / "run"
    result = pg_keras.train(config, root_dir=str(root),
                            callbacks=[pg_keras.StopWhenSolved(target_return=1.0)])
    assert [e.nonfinite_episodes for e in result.evaluations] == [3, 3]
    summary = _strict_json((root / "summary.json").read_text())
    assert summary["final_return_mean"] is None and summary["final_nonfinite_episodes"] == 3
    assert summary["final_evaluation"]["mean_return"] is None
    assert summary["eval_mode"] == "greedy" and summary["solved_at"] is None
    written = [root / "evaluations.jsonl", root / "metrics.jsonl",
               *(root / "checkpoints").glob("loop-*.json")]
    for path in written:
        text = path.read_text()
        for line in (text.splitlines() if path.suffix == ".jsonl" else [text]):
            _strict_json(line)


# ------------------------------------------------------------------------- eval_mode


@pytest.mark.parametrize("eval_mode, expected", [("greedy", 0.0), ("sample", 1.0)])
def test_evaluations_act_as_eval_mode_says(eval_mode, expected, tmp_path, capsys):
    config = pg_keras.Config(env_id="PgkSwitch-v0", num_envs=4, steps_per_update=20,
                             total_steps=80, eval_every=80, eval_episodes=16,
                             eval_mode=eval_mode, policy_learning_rate=1e-6,
                             hidden_sizes=(8,), value_hidden_sizes=(8,))
    result = pg_keras.train(config, root_dir=str(tmp_path / "run"),
                            callbacks=[pg_keras.ProgressLogger(bar=False)])
    # Barely trained: the sampled policy switches within the 20 steps (2^-19 it does not).
    assert result.final_return == expected
    summary = _strict_json((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval_mode"] == eval_mode
    line = [l for l in capsys.readouterr().out.splitlines() if "eval return" in l][-1]
    # The training episodes (sampled) reached the goal: a looping greedy policy shows.
    assert f"eval return ({eval_mode})" in line and "train return (sampled) 1.00" in line


def test_the_progress_line_shows_the_training_return_beside_the_evaluation(capsys):
    logger = pg_keras.ProgressLogger()
    run = types.SimpleNamespace(config=pg_keras.Config(num_envs=1, steps_per_update=10,
                                                            total_steps=100), resumed_from=None)
    logger.set_run(run)
    logger.on_train_begin(run)
    logger.on_update_end({"env_steps": 10, "steps_per_second": 5.0})
    logger.on_update_end({"env_steps": 20, "steps_per_second": 5.0, "return_mean": 0.75})
    logger.on_evaluation(Evaluation(20, 0.0, 0.0))
    logger._progress.last_print = -math.inf  # due again
    logger.on_update_end({"env_steps": 30, "steps_per_second": 5.0})
    lines = capsys.readouterr().out.splitlines()
    assert "train return        -  eval        -" in lines[0]
    assert "train return     0.75  eval     0.00" in lines[-1]


class _Killed(Exception):
    pass


def _kill_at(env_steps):
    def on_update(record):
        if record["env_steps"] >= env_steps:
            raise _Killed
    return on_update


def test_async_envs_collect_and_a_resume_resets_them_with_a_clear_line(tmp_path, capsys):
    config = pg_keras.Config(num_envs=2, steps_per_update=8, total_steps=48, eval_every=0,
                             vectorization="async", hidden_sizes=(8,), value_hidden_sizes=(8,))
    root = str(tmp_path / "run")
    with pytest.raises(_Killed):  # after the checkpoint at 16 env steps
        pg_keras.train(config, root_dir=root, callbacks=[
            pg_keras.Checkpointing(every=16), pg_keras.LambdaCallback(on_update_end=_kill_at(32))])
    capsys.readouterr()
    resumed = pg_keras.train(config, root_dir=root,
                             callbacks=[pg_keras.Checkpointing(every=16)])
    assert resumed.env_steps == 48 and len(resumed.history) == 48 // 16
    assert "with vectorization='async' they run in subprocesses" in capsys.readouterr().err


# ---------------------------------------------------------------------------- launchers


def test_output_paths_are_checked_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    bad = str(blocker / "out")
    cases = {
        "experiments.evaluate": [f"--saved_model={SAVED_MODEL}", f"--video_dir={bad}"],
        "experiments.plot": [f"--root_dirs={ROOT}/tests/fixtures/cartpole-run",
                             f"--out={bad}.png"],
        "experiments.suite": ["--quick", f"--root={bad}"],
        "experiments.tune": ["--flagfile=experiments/configs/cartpole.cfg", "--search=gamma",
                             f"--study={tmp_path}/study.db", f"--out={bad}.cfg"],
    }
    for module, args in cases.items():
        run = launchers.run(module, *args)
        assert run.returncode == 2, (module, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1 and "cannot be written" in run.stderr, \
            (module, run.stderr)
        assert "episode" not in run.stdout and "trial" not in run.stdout, (module, run.stdout)
    assert not os.path.exists(tmp_path / "study.db")


def test_the_plot_command_says_what_is_missing_in_one_line(tmp_path):
    run = launchers.run("experiments.plot", f"--out={tmp_path}/curves.png")
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "plot: error: flag --root_dirs=None: Flag --root_dirs must have a value other than "
        "None."]
    run = launchers.run("experiments.plot", f"--root_dirs={tmp_path}/runs/a",
                        f"--out={tmp_path}/curves.png")
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f"plot: error: --root_dirs entry '{tmp_path}/runs/a' is not a run directory (it has "
        "no config.json)"]


def test_the_train_launcher_refuses_bad_flags_in_one_line_before_tensorflow(tmp_path):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("DISPLAY", "WAYLAND_DISPLAY", "PG_KERAS_TF_LOGS")}
    environment["PYTHONPATH"] = ROOT
    cases = {"--checkpoint_every=-5": "checkpoint_every must be a non-negative integer",
             "--target_return=nan": "target_return must be a finite number",
             "--hidden_sizes=": "--hidden_sizes=none for no hidden layer",
             '--env_kwargs={"render_mode": "human"}': "this machine has no display"}
    runs = launchers.run_processes(*[
        [sys.executable, "-m", "experiments.train", flag, f"--root_dir={tmp_path}/run"]
        for flag in cases], env=environment, cwd=ROOT)
    for (flag, message), run in zip(cases.items(), runs):
        assert run.returncode == 2, (flag, run.stderr)
        assert run.stderr.startswith("train: error: ") and message in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # 50,000 env steps of MiniGrid through a CNN
def test_minigrid_with_eval_mode_sample_shows_the_sampled_policys_return(tmp_path):
    """Config's defaults on MiniGrid-Empty-5x5 learn a policy whose samples reach the goal
    while its greedy action may loop; eval_mode="sample" evaluates what was trained."""
    pytest.importorskip("minigrid", reason="minigrid (the experiments extra) is not installed")
    config = pg_keras.Config(env_id="minigrid:MiniGrid-Empty-5x5-v0",
                             env_wrappers=("minigrid.wrappers:ImgObsWrapper",),
                             eval_mode="sample")
    result = pg_keras.train(config, root_dir=str(tmp_path / "run"))
    summary = _strict_json((tmp_path / "run" / "summary.json").read_text())
    assert summary["eval_mode"] == "sample"
    # Reaching the goal is worth 1 - 0.9 * steps / 100: above 0.5 within 55 steps.
    assert summary["final_return_mean"] == result.final_return > 0.5, result.evaluations


def test_empty_seed_lists_are_refused_in_one_line(tmp_path):
    run = launchers.run("experiments.tune", "--flagfile=experiments/configs/cartpole.cfg",
                        "--search=gamma", f"--study={tmp_path}/study.db", "--seeds=")
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "tune: error: seeds must name at least one seed; received --seeds=''"]


def test_the_evaluate_command_samples_with_eval_mode_sample():
    run = launchers.run("experiments.evaluate", f"--saved_model={SAVED_MODEL}",
                        "--episodes=2", "--max_steps=20", "--eval_mode=sample")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["eval_mode"] == "sample" and result["greedy"] is False
    # The export's config.json has no eval_mode: greedy, as the run evaluated.
    run = launchers.run("experiments.evaluate", f"--saved_model={SAVED_MODEL}",
                        "--episodes=2", "--max_steps=20")
    assert json.loads(run.stdout.strip().splitlines()[-1])["eval_mode"] == "greedy"
    run = launchers.run("experiments.evaluate", f"--saved_model={SAVED_MODEL}",
                        "--eval_mode=greedy", "--nogreedy")
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "evaluate: error: --eval_mode=greedy contradicts --nogreedy; pass one of them"]


@pytest.mark.parametrize("module, args, line", [
    ("experiments.train", ["--collective_timeout=nan"],
     "train: error: collective_timeout must be a positive number of seconds; received "
     "--collective_timeout=nan"),
    ("experiments.train", ["--group_start_timeout=-5"], "train: error: group_start_timeout "
     "must be a positive number of seconds; received --group_start_timeout=-5.0"),
    ("experiments.suite", ["--quick", "--bootstrap_reps=0"],
     "suite: error: bootstrap_reps must be >= 1; received --bootstrap_reps=0"),
    ("experiments.suite", ["--quick", "--hold_fraction=nan"],
     "suite: error: hold_fraction must be in [0, 1]; received --hold_fraction=nan"),
    ("experiments.tune", ["--random_trials=-1"],
     "tune: error: flag --random_trials=-1: -1 is not a non-negative integer"),
    ("experiments.solve_rate", ["--target=inf"], "solve_rate: error: target must be a "
     "finite number (or left out for the env's reward_threshold); received --target=inf"),
], ids=lambda value: value if isinstance(value, str) and " " not in value else None)
def test_launcher_flags_out_of_range_are_one_line(module, args, line, tmp_path):
    run = launchers.run(module, *args, f"--root_dir={tmp_path}/run" if
                        module.endswith("train") else "--seeds=0")
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [line], run.stderr
    assert not (tmp_path / "run").exists()
