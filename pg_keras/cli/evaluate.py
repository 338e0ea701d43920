"""Evaluate an exported policy with TensorFlow and gymnasium alone.

    pg-keras-evaluate --saved_model=saved_models/cartpole --episodes=20
    pg-keras-evaluate --saved_model=DIR --env=Pendulum-v1 --eval_mode=sample --seed=3
    pg-keras-evaluate --saved_model=DIR --video_dir=videos --video_episodes=2

Loads a SavedModel written by ``pg_keras.export_policy`` and runs ``--episodes`` episodes,
one in each of as many copies of the environment, stepped together. Prints one line for
people and one JSON line for programs:

    mean return over 20 episodes: 500.00 +- 0.00 (CartPole-v1, greedy, saved_models/cartpole)
    {"env": "CartPole-v1", "episodes": 20, "mean_return": 500.0, "std_return": 0.0, ...}

This program deliberately imports nothing of pg_keras but its own modules and the config
it reads, and neither Keras nor tensorflow_probability: it is the proof that an exported
policy runs on TensorFlow alone. ``--env`` defaults to the
``env_id`` of the ``config.json`` exported with the model, and the env is made as the run
made it: that file's ``env_kwargs`` go to ``gym.make`` and its ``env_wrappers`` wrap each
env (``--env_kwargs`` and ``--env_wrappers`` replace them). That file is data: code it
names (an env id's ``module:`` prefix, wrappers) is imported only when the command line
names it (``--env=module:Env-v0``, ``--env_wrappers=...``); without the flag the program
stops in one line naming the flag to pass. A bare registered env id needs no flag. The
SavedModel itself is a program: load only models you trust (SECURITY.md). Where the env gives an action
mask (``info["action_mask"]`` or a Dict observation's ``action_mask`` key) and the run
used it, the policy acts among the legal actions (its ``greedy_masked`` and
``sample_masked`` functions). Dict and Tuple observations go to the model as the dict of
their leaves (keys joined with ``/``). ``--env=module:Env-v0`` imports ``module`` first,
for environments a package of your own registers. ``--video_dir``
records the first ``--video_episodes`` episodes as GIF files; it needs Pillow, and the
env's ``rgb_array`` rendering (pygame for the classic-control envs).
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import tempfile
from typing import List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Rendering to frames needs no display or sound device.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

from absl import flags  # noqa: E402

from pg_keras.cli import common as cli  # noqa: E402
from pg_keras.config import FORMAT_VERSION, InputError, format_message  # noqa: E402  (no TensorFlow)
from pg_keras.imports import import_env_module  # noqa: E402


def define_flags(flag_values: flags.FlagValues) -> None:
    """Defines the command's flags on ``flag_values``."""
    define = {"flag_values": flag_values}
    flags.DEFINE_string("saved_model", None, "Directory of the exported policy (a SavedModel).",
                        required=True, **define)
    flags.DEFINE_string("env", None, "Gymnasium env id; 'module:Env-v0' imports module first. "
                        "Default: env_id in the model's config.json, where it has no module.",
                        **define)
    flags.DEFINE_string("env_wrappers", None, "Comma-separated module:name wrappers applied in "
                        "order to each env (imported: the model's config.json names them but "
                        "is never imported from; '' for none).", **define)
    flags.DEFINE_string("env_kwargs", None, "gym.make keyword arguments as a JSON object. "
                        "Default: env_kwargs in the model's config.json.", **define)
    flags.DEFINE_integer("episodes", 10, "Episodes to run (one per env copy).", lower_bound=1,
                         **define)
    flags.DEFINE_integer("seed", 0, "Seeds the env resets (env i gets seed + i) and the "
                         "sampling.", lower_bound=0, **define)
    flags.DEFINE_bool("greedy", True, "Act with the most likely action; --nogreedy samples "
                      "(as --eval_mode=sample).", **define)
    flags.DEFINE_enum("eval_mode", None, ["greedy", "sample"], "greedy: the most likely action; "
                      "sample: actions drawn from the policy, as in training. Default: the "
                      "eval_mode of the model's config.json (greedy without one), or sample "
                      "with --nogreedy.", **define)
    flags.DEFINE_string("video_dir", None, "Write GIFs of the first --video_episodes episodes "
                        "here (needs Pillow).", **define)
    flags.DEFINE_integer("video_episodes", 1, "Episodes to record with --video_dir; capped by "
                         "--episodes. Each GIF is held in memory until its episode ends.",
                         lower_bound=1, **define)
    flags.DEFINE_integer("max_steps", 100_000, "Stop episodes still running after this many "
                         "steps.", lower_bound=1, **define)


CONFIG_FILENAME = "config.json"


class EvaluationError(Exception):
    """A problem with the model, the env or the installation, reported in one line."""


def stored_config(saved_model: str) -> dict:
    """The model's ``config.json`` (empty without one)."""
    path = os.path.join(saved_model, CONFIG_FILENAME)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            stored = json.load(f)
    except (OSError, ValueError) as error:
        raise EvaluationError(f"cannot read {path}: {error}") from None
    version = stored.get("format_version")
    if version != FORMAT_VERSION:
        raise EvaluationError(format_message(path, version))
    return stored


def env_options(flag_values: flags.FlagValues, stored: dict) -> Tuple[dict, list]:
    """(``gym.make`` kwargs, wrappers) from the flags, else from the stored config.

    Raises:
        EvaluationError: for kwargs that are not a JSON object, or a wrapper that cannot
            be imported.
    """
    text = flag_values.env_kwargs
    if text is None:  # config.json holds the object itself
        text = json.dumps(stored.get("env_kwargs", {}))
    try:
        kwargs = json.loads(text or "{}")
    except ValueError as error:
        kwargs = error
    if not isinstance(kwargs, dict):
        raise EvaluationError(f"--env_kwargs must be a JSON object; received "
                              f"--env_kwargs={text}")
    if flag_values.env_wrappers is not None:
        entries = flag_values.env_wrappers.split(",")
    else:
        entries = stored.get("env_wrappers") or []
        if entries:  # code the export names: imported only when the flag names it
            raise EvaluationError(
                f"the model's {CONFIG_FILENAME} records env_wrappers {entries}, which are code, "
                f"and an export's record is never imported: pass --env_wrappers="
                f"{','.join(map(str, entries))} to import them (or --env_wrappers= for none)")
    return kwargs, [_wrapper(entry.strip()) for entry in entries if entry.strip()]


def recorded_env_id(stored: dict, saved_model: str) -> str:
    """The env id the export records, where it names no module to import.

    Raises:
        EvaluationError: without one, or where it has a ``module:`` prefix (code the
            export names: imported only when ``--env`` names it).
    """
    env_id = stored.get("env_id")
    if not env_id or not isinstance(env_id, str):
        raise EvaluationError(f"--env is required: {saved_model} has no {CONFIG_FILENAME} "
                              f"naming its env")
    if ":" in env_id:
        raise EvaluationError(
            f"the model's {CONFIG_FILENAME} records env_id {env_id!r}, whose module "
            f"{env_id.split(':', 1)[0]!r} is code, and an export's record is never imported: "
            f"pass --env={env_id} to import it")
    return env_id


def _wrapper(entry: str):
    """The wrapper (a class or a function of the env) a ``module:name`` entry names."""
    module_name, _, name = entry.partition(":")
    try:
        value = importlib.import_module(module_name)
        for part in name.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError, ValueError) as error:
        raise EvaluationError(f"cannot load the env wrapper {entry!r}: {error}") from None
    return value


def resolve_env_id(env_id: str) -> str:
    """Imports the module of a ``"module:Env-v0"`` id; returns the bare id."""
    try:
        return import_env_module(env_id, name="--env")
    except InputError as error:
        raise EvaluationError(str(error)) from None


def eval_mode(flag_values: flags.FlagValues, stored: dict) -> str:
    """``greedy`` or ``sample``: --eval_mode, else sample for --nogreedy, else the export's.

    Raises:
        EvaluationError: for --eval_mode=greedy with --nogreedy.
    """
    if flag_values.eval_mode == "greedy" and not flag_values.greedy:
        raise EvaluationError("--eval_mode=greedy contradicts --nogreedy; pass one of them")
    if flag_values.eval_mode:
        return flag_values.eval_mode
    if not flag_values.greedy:
        return "sample"
    recorded = stored.get("eval_mode", "greedy")
    return recorded if recorded in ("greedy", "sample") else "greedy"


def check_writable(path: str, name: str) -> None:
    """Refuses an output directory that cannot be made, before any episode is played
    (pg_keras.paths's check, which this program cannot import)."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise EvaluationError(f"{name} {path!r} cannot be written: {existing!r} is not a "
                              "directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".evaluate-probe-", dir=existing))
    except OSError as error:
        raise EvaluationError(f"{name} {path!r} cannot be written: a directory cannot be "
                              f"created in {existing!r} ({error.strerror or error})") from None


def gif_writer():
    """Pillow's ``Image`` module, or a one-line error naming the missing package."""
    try:
        from PIL import Image
    except ImportError:
        raise EvaluationError("--video_dir writes GIF files with Pillow, which is not "
                              "installed; install it (pip install Pillow) or leave out "
                              "--video_dir") from None
    return Image


def write_gif(path: str, frames: List, fps: float) -> None:
    """Writes RGB frames ([H, W, 3] uint8) as a looping GIF."""
    image_module = gif_writer()
    images = [image_module.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:],
                   duration=max(1, round(1000.0 / fps)), loop=0)


def run_episodes(policy, env_id: str, episodes: int, seed: int, greedy: bool,
                 record: int = 0, max_steps: int = 100_000, env_kwargs: Optional[dict] = None,
                 wrappers: Tuple = (), use_action_mask: bool = True):
    """Runs one episode in each of ``episodes`` env copies, stepped together.

    Args:
        policy: The loaded SavedModel (its ``greedy`` and ``sample`` callables, and
            ``greedy_masked`` and ``sample_masked`` for the masks of an env that has them).
        env_id: A bare gymnasium id (see :func:`resolve_env_id`).
        episodes: Env copies, hence episodes.
        seed: Env i is reset with ``seed + i``; sampling uses ``[seed, step]``.
        greedy: Greedy actions, or samples.
        record: The first ``record`` envs render ``rgb_array`` frames.
        max_steps: Episodes still running after this many steps are cut.
        env_kwargs: ``gym.make`` keyword arguments.
        wrappers: Applied in order to each env.
        use_action_mask: Act among the legal actions where the env gives a mask.

    Returns:
        (returns [episodes] as a list of floats, frames: one list per recorded episode,
        frames per second to play them at).
    """
    import numpy as np

    envs = _vector_env(env_id, episodes, record, env_kwargs or {}, wrappers)
    try:
        _check_observation_shape(policy, envs, env_id)
        act = _actor(policy, greedy, seed, use_action_mask, episodes)
        obs, info = envs.reset(seed=seed)
        frames = [[_render(envs.envs[i], env_id)] for i in range(record)]
        totals = np.zeros(episodes, np.float64)
        running = np.ones(episodes, bool)
        for t in range(max_steps):
            actions = act(obs, info, t)
            if t == 0 and not envs.single_action_space.contains(actions[0]):
                raise EvaluationError(
                    f"the model's action {actions[0]!r} is not in the env's action space "
                    f"{envs.single_action_space}; received --env={env_id}")
            obs, reward, terminated, truncated, info = envs.step(actions)
            totals += np.where(running, reward, 0.0)
            for i in range(record):
                if running[i]:
                    frames[i].append(_render(envs.envs[i], env_id))
            running &= ~(terminated | truncated)
            if not running.any():
                break
        fps = envs.envs[0].metadata.get("render_fps") or 30
        return [float(r) for r in totals], frames, float(fps)
    finally:
        envs.close()


def _vector_env(env_id: str, episodes: int, record: int, kwargs: dict, wrappers):
    import gymnasium as gym

    def make(i):
        def env():
            # render_mode only where frames are recorded: not every env takes it
            rendering = {"render_mode": "rgb_array"} if i < record else {}
            single = gym.make(env_id, **rendering, **kwargs)
            for wrapper in wrappers:
                single = wrapper(single)
                if not isinstance(single, gym.Env):
                    raise TypeError(f"the wrapper {wrapper!r} returned a "
                                    f"{type(single).__name__}, not a gymnasium Env")
            return single
        return env

    # The default next-step autoreset: the step that ends an episode leaves the env in its
    # final state, so the recorded episode's last frame is its true end, and we stop
    # counting an env at its first episode's end anyway.
    try:
        return gym.vector.SyncVectorEnv([make(i) for i in range(episodes)])
    except Exception as error:  # noqa: BLE001  (the env's and the wrappers' own code)
        # an unknown id, a missing dependency, kwargs the env refuses, a failing wrapper
        raise EvaluationError(f"cannot make --env={env_id} (env_kwargs {kwargs}): "
                              f"{type(error).__name__}: {error}") from None


def _check_observation_shape(policy, envs, env_id: str) -> None:
    model_shape = _model_observation_shape(policy)
    if model_shape is None or not hasattr(envs.single_observation_space, "shape"):
        return
    env_shape = tuple(envs.single_observation_space.shape or ())
    if env_shape != model_shape:
        raise EvaluationError(
            f"the env's observations have shape {list(env_shape)} but the model takes "
            f"[B, {', '.join(map(str, model_shape))}]; received --env={env_id}")


MASK_KEY = "action_mask"


def _actor(policy, greedy: bool, seed: int, use_action_mask: bool, episodes: int):
    """``act(observations, info, t)`` -> env actions: the model's greedy or sampled
    actions, among the legal ones where the env gives a mask and the model takes one."""
    import numpy as np
    import tensorflow as tf

    masked = use_action_mask and hasattr(policy, "greedy_masked")
    # A recurrent export (pg_keras.export_recurrent) takes and returns its state; each
    # env runs one episode, so the state never goes back to zeros.
    state = policy.initial_state(episodes) if hasattr(policy, "initial_state") else None
    dtypes = _input_dtypes(policy)

    def act(observations, info, t):
        mask = None
        if isinstance(observations, dict) and MASK_KEY in observations:
            mask = np.asarray(observations[MASK_KEY], bool)
            observations = {k: v for k, v in observations.items() if k != MASK_KEY}
        elif MASK_KEY in info:
            present = np.asarray(info.get("_" + MASK_KEY, True), bool)
            mask = np.where(np.reshape(present, (-1, 1)), np.asarray(info[MASK_KEY], bool), True)
        observations = _leaves(observations)
        if isinstance(observations, dict):  # each leaf in its input's dtype
            observations = {name: value.astype(dtypes.get(_input_name(name), value.dtype))
                            for name, value in observations.items()}
        if state is not None:
            return recurrent(observations, t)
        if not masked or mask is None:
            return (policy.greedy(observations) if greedy else policy.sample(
                observations, tf.constant([seed, t], tf.int32))).numpy()
        if greedy:
            return policy.greedy_masked(observations, mask).numpy()
        return policy.sample_masked(observations, tf.constant([seed, t], tf.int32),
                                    mask).numpy()

    def recurrent(observations, t):
        nonlocal state
        out = (policy.greedy(observations, state) if greedy else
               policy.sample(observations, tf.constant([seed, t], tf.int32), state))
        state = {name: out[name] for name in state}
        return out["actions"].numpy()
    return act


def _leaves(observations, prefix: str = ""):
    """A batch of Dict or Tuple observations as the model takes it: {leaf name: array},
    a leaf named by its keys (a Tuple's by positions) joined with ``/``; else the array."""
    import numpy as np

    if isinstance(observations, dict):
        items = [(str(k), v) for k, v in observations.items()]
    elif isinstance(observations, tuple):
        items = [(str(i), v) for i, v in enumerate(observations)]
    else:
        return {prefix: np.asarray(observations)} if prefix else np.asarray(observations)
    flat = {}
    for key, value in items:
        flat.update(_leaves(value, f"{prefix}/{key}" if prefix else key))
    return flat


def _input_name(leaf_name: str) -> str:
    """A leaf's input name in the signatures (pg_keras.spaces.input_name's rule)."""
    name = "".join(c if c.isalnum() else "_" for c in leaf_name) or "observations"
    return name if name[0].isalpha() else "arg_" + name


def _input_dtypes(policy) -> dict:
    """Input name -> numpy dtype, from the serving signature (empty if it has none)."""
    signature = getattr(policy, "signatures", {}).get("serving_default")
    if signature is None:
        return {}
    return {name: spec.dtype.as_numpy_dtype
            for name, spec in signature.structured_input_signature[1].items()}


def _model_observation_shape(policy):
    """Shape of one observation, from the serving signature; None if it has none."""
    signature = getattr(policy, "signatures", {}).get("serving_default")
    if signature is None:
        return None
    spec = signature.structured_input_signature[1].get("observations")
    return None if spec is None else tuple(spec.shape[1:])


def _render(env, env_id: str):
    from gymnasium.error import DependencyNotInstalled

    try:
        frame = env.render()
    except DependencyNotInstalled as error:  # pygame, for the classic-control envs
        raise EvaluationError(f"--video_dir: rendering --env={env_id} needs a package that "
                              f"is not installed: {error}") from None
    if frame is None:
        raise EvaluationError(f"the env rendered no rgb_array frame; it may not support "
                              f"render_mode='rgb_array'; received --env={env_id}")
    return frame


def main(flag_values: flags.FlagValues) -> int:
    result = evaluate_from_flags(flag_values)
    mean, std = result["mean_return"], result["std_return"]
    mode = "greedy" if result["greedy"] else "sampled"
    print(f"mean return over {result['episodes']} episodes: {mean:.2f} +- {std:.2f} "
          f"({result['env']}, {mode}, {result['saved_model']})")
    print(json.dumps(result), flush=True)
    return 0


def evaluate_from_flags(flag_values: flags.FlagValues) -> dict:
    """Validates the flags, runs the episodes, writes the GIFs; the JSON line's content."""
    saved_model = flag_values.saved_model
    if not os.path.isdir(saved_model):
        raise EvaluationError(f"--saved_model must be a directory written by export_policy; "
                              f"received --saved_model={saved_model}")
    stored = stored_config(saved_model)
    env_arg = flag_values.env or recorded_env_id(stored, saved_model)
    record = min(flag_values.video_episodes, flag_values.episodes) if flag_values.video_dir else 0
    mode = eval_mode(flag_values, stored)
    if record:
        check_writable(flag_values.video_dir, "--video_dir")
        gif_writer()  # Fails before the slow part when Pillow is missing.
    env_id = resolve_env_id(env_arg)
    env_kwargs, wrappers = env_options(flag_values, stored)
    if env_kwargs.get("render_mode") == "human" and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise EvaluationError("env_kwargs render_mode='human' opens a window, but this "
                              "machine has no display (neither DISPLAY nor WAYLAND_DISPLAY "
                              "is set); record GIFs with --video_dir instead")

    cli.start_tensorflow(flag_values.tf_logs)  # Late: its import is slow, bad flags fail fast.
    import tensorflow as tf

    try:
        policy = tf.saved_model.load(saved_model)
    except (OSError, ValueError) as error:  # not a SavedModel, or a damaged one
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise EvaluationError(f"cannot load a SavedModel from --saved_model={saved_model}: "
                              f"{first_line}") from None
    returns, frames, fps = run_episodes(policy, env_id, flag_values.episodes, flag_values.seed,
                                        mode == "greedy", record, flag_values.max_steps,
                                        env_kwargs, wrappers, stored.get("use_action_mask", True))
    videos = []
    if record:
        os.makedirs(flag_values.video_dir, exist_ok=True)
        for i, episode_frames in enumerate(frames):
            path = os.path.join(flag_values.video_dir, f"episode_{i:03d}.gif")
            write_gif(path, episode_frames, fps)
            videos.append(path)
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns))
    return {"env": env_arg, "saved_model": saved_model, "episodes": len(returns),
            "greedy": mode == "greedy", "eval_mode": mode, "seed": flag_values.seed,
            "mean_return": mean, "std_return": std, "returns": returns, "videos": videos}


def run(argv: Sequence[str]) -> int:
    """Runs the command on ``argv`` (program name first); returns its exit code."""
    return cli.execute("evaluate", argv, define_flags, main, usage=__doc__,
                       bad_input=(EvaluationError,), tensorflow=False)


def launch() -> None:
    """The `pg-keras-evaluate` command: runs on sys.argv and exits with its status."""
    sys.exit(run(sys.argv))


if __name__ == "__main__":
    launch()
