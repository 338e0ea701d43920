"""Gymnasium vector environments -> time-major batches.

The vector env runs in gymnasium's same-step autoreset mode: the step that ends an
episode returns the next episode's first observation and puts the true final observation
in ``info["final_obs"]``. So every transition in the batch is a real one (no transition
crosses a reset), and a time-limit truncation can bootstrap from V(final observation).
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
from typing import Callable, List, Optional, Tuple

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf
from gymnasium.vector import AutoresetMode

from pg_keras.config import Config, InputError, check_num_envs
from pg_keras.batch import Batch, observation_dtype
from pg_keras.learner import Learner
from pg_keras.policy import Policy


def split_env_id(env_id: str) -> str:
    """Imports the module of a ``"module:EnvName-v0"`` id and returns the bare env id.

    Raises:
        InputError: if the module cannot be imported or the id is not registered (the
            message carries gymnasium's suggestions of close matches).
    """
    bare = env_id
    if ":" in env_id:
        module, bare = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise InputError(f"env_id {env_id!r} names module {module!r}, which cannot be "
                             f"imported: {error}") from None
    try:
        gym.spec(bare)
    except gym.error.Error as error:
        hint = _package_hint(env_id, error)
        reason = str(error).rstrip(".") + hint if hint else error
        raise InputError(f"env_id {env_id!r} is not a registered gymnasium environment: "
                         f"{reason}") from None
    return bare


def _package_hint(env_id: str, error: Exception) -> str:
    """For an id no close match explains, how to have the package that registers it imported.

    Third-party packages (minigrid, ale_py, highway_env, ...) register their ids when they
    are imported, which a launcher never does by itself.
    """
    if ":" in env_id or "Did you mean" in str(error) or not isinstance(
            error, (gym.error.NameNotFound, gym.error.NamespaceNotFound)):
        return ""
    guess = env_id.split("/", 1)[0] if "/" in env_id else env_id.split("-", 1)[0]
    package = "package"
    if guess.lower() != guess and importlib.util.find_spec(guess.lower()) is not None:
        package = guess.lower()  # installed: name it
    return (f"; if a package registers it, --env_id={package}:{env_id} imports that package "
            f"first (env_id='{package}:{env_id}' in Python)")


def make_vector_env(env_id: str, num_envs: int, **kwargs) -> gym.vector.VectorEnv:
    """A synchronous vector env in same-step autoreset mode.

    Raises:
        InputError: for an unknown env id, an env whose package lacks a dependency, or
            more environments than ``pg_keras.config.check_num_envs`` allows.
    """
    check_num_envs(num_envs)
    bare = split_env_id(env_id)
    try:
        return gym.make_vec(bare, num_envs=num_envs, vectorization_mode="sync",
                            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)
    except gym.error.DependencyNotInstalled as error:
        raise InputError(f"env_id {env_id!r} needs a package that is not installed: "
                         f"{error}") from None


def _finite_rows(array, num: int) -> np.ndarray:
    """[num] bool: whether each row of a batched array is finite (integers always are)."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return np.ones(num, bool)
    return np.isfinite(array.reshape(num, -1)).all(axis=1)


class NonFiniteError(RuntimeError):
    """An environment returned NaN or inf (with ``on_nonfinite="stop"``)."""


_NUMPY_ACTIVATIONS = {
    "linear": lambda x: x,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
}


def _numpy_activation(layer) -> Optional[Callable[[np.ndarray], np.ndarray]]:
    """The NumPy twin of a Dense layer's activation, or None for one of the user's own."""
    name = layer.get_config()["activation"]  # a dict (its serialization) for a function
    if not isinstance(name, str) or name not in _NUMPY_ACTIVATIONS:
        return None
    # A function of the user's own that happens to bear a built-in's name is not that one.
    if layer.activation is not keras.activations.get(name):
        return None
    return _NUMPY_ACTIVATIONS[name]


class _NumpyNetwork:
    """A Keras ``Sequential`` of Dense and Flatten layers, run in NumPy."""

    def __init__(self, network: keras.Model):
        self.network = network
        self._plan = []  # (kernel variable, bias variable or None, activation) or None
        for layer in network.layers:
            if isinstance(layer, keras.layers.Flatten):
                self._plan.append(None)
            else:
                self._plan.append((layer.kernel, layer.bias if layer.use_bias else None,
                                   _numpy_activation(layer)))

    @staticmethod
    def supports(network) -> bool:
        if not isinstance(network, keras.Sequential):
            return False
        for layer in network.layers:
            if isinstance(layer, keras.layers.Flatten):
                continue
            if type(layer) is not keras.layers.Dense:
                return False
            if _numpy_activation(layer) is None:
                return False
        return True

    def variables(self) -> list:
        """The variables :meth:`refresh` reads, in order."""
        return [v for step in self._plan if step is not None for v in step[:2] if v is not None]

    def refresh(self, values) -> None:
        """Takes the current values of :meth:`variables` (read together, in one call)."""
        values = iter(values)
        self._weights = [None if step is None else
                         (next(values), 0.0 if step[1] is None else next(values), step[2])
                         for step in self._plan]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for weights in self._weights:
            if weights is None:
                x = x.reshape(len(x), -1)
            else:
                kernel, bias, activation = weights
                x = activation(x @ kernel + bias)
        return x


class NumpyPolicy:
    """The sampling policy (and the value model) in NumPy, for Dense-layer networks.

    A TensorFlow call costs 150-500 microseconds however small the model, as much as
    stepping 16 CartPoles; this runs the default MLP in about 15. It reads the weights
    once per update (:meth:`refresh`) and samples with the head's
    :meth:`~pg_keras.heads.ActionHead.numpy_sampler`; the update itself still runs in
    TensorFlow on the stored raw actions, so the algorithm does not change, only who
    draws the samples.

    Args:
        policy: The policy to mirror; see :meth:`supports`.
        seed: Seeds the NumPy sampling stream.
    """

    def __init__(self, policy: Policy, seed: int):
        self.policy = policy
        self.rng = np.random.default_rng(seed)
        space = policy.observation_space
        self._one_hot = (np.eye(space.n, dtype=np.float32), space.start) if isinstance(
            space, gym.spaces.Discrete) else None
        self._network = _NumpyNetwork(policy.network)
        self._value = None
        if policy.value_network is not None and _NumpyNetwork.supports(policy.value_network):
            self._value = _NumpyNetwork(policy.value_network)
        # Reading a variable from Python costs ~40 microseconds; one call reads them all.
        # The concrete function skips tf.function's dispatch: 230 instead of 330
        # microseconds a call between env steps (measured; each TF call made after a stretch
        # of Python work costs about twice what the same call costs back to back).
        networks = [self._network] + ([self._value] if self._value is not None else [])
        variables = [v for n in networks for v in n.variables()]
        normalizer = policy.normalizer
        if normalizer is not None:
            variables += [normalizer.mean, normalizer.variance]
        self._read = tf.function(lambda: ([tf.convert_to_tensor(v) for v in variables],
                                          policy.return_scale())).get_concrete_function()
        self.refresh()

    @staticmethod
    def supports(policy: Policy) -> bool:
        """Whether every layer of the policy network has a NumPy twin here."""
        return _NumpyNetwork.supports(policy.network)

    @property
    def has_value(self) -> bool:
        return self._value is not None

    def refresh(self) -> None:
        """Reads the current weights, normalizer statistics and head state."""
        tensors, scale = self._read()
        values = [t.numpy() for t in tensors]
        count = len(self._network.variables())
        self._network.refresh(values[:count])
        if self._value is not None:
            value_count = len(self._value.variables())
            self._value.refresh(values[count:count + value_count])
            count += value_count
            self._value_scale = float(scale.numpy())
        normalizer = self.policy.normalizer
        self._normalizer = None
        if normalizer is not None:
            mean, variance = values[count:count + 2]
            self._normalizer = (mean, 1.0 / np.sqrt(variance + normalizer.epsilon),
                                normalizer.clip)
        self._sample = self.policy.head.numpy_sampler()

    def __call__(self, observations: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(raw actions, env actions) sampled for a batch of observations."""
        return self._sample(self.params(observations), self.rng)

    def _features(self, observations) -> np.ndarray:
        if self._one_hot is not None:
            eye, start = self._one_hot
            x = eye[np.asarray(observations) - start]
        else:
            x = np.asarray(observations, np.float32)
        if self._normalizer is not None:
            mean, inv_std, clip = self._normalizer
            x = (x - mean) * inv_std
            if clip > 0:
                x = np.clip(x, -clip, clip)
        return x

    def params(self, observations: np.ndarray) -> np.ndarray:
        """The policy network's output, as ``Policy.params`` computes it in TensorFlow."""
        return self._network(self._features(observations))

    def values(self, observations: np.ndarray) -> np.ndarray:
        """V(s), as ``Policy.value`` computes it (needs :attr:`has_value`)."""
        return self._value(self._features(observations)).reshape(-1) * self._value_scale


class Collector:
    """Steps a vector env with the learner's policy and fills fixed-shape batches.

    In ``steps`` mode the environments run on across updates; the batch is cut after
    ``steps_per_update`` steps and the cut episodes bootstrap from V(s_T). In ``episodes``
    mode each update resets the environments and runs each for one whole episode (at most
    ``steps_per_update`` steps); the rows after an environment's episode end are padding
    (mask 0), and collection stops as soon as every environment has finished.

    Args:
        envs: A vector env in same-step autoreset mode (see :func:`make_vector_env`).
        learner: Supplies the sampling policy and the value model.
        config: Hyperparameters.
    """

    def __init__(self, envs: gym.vector.VectorEnv, learner: Learner, config: Config):
        if envs.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise InputError("the vector env must use AutoresetMode.SAME_STEP; received "
                             f"autoreset_mode={envs.metadata.get('autoreset_mode')!r}")
        self.envs = envs
        self.learner = learner
        self.config = config
        self.episodic = config.resolved_collect_mode == "episodes"
        steps, num = config.steps_per_update, envs.num_envs
        spec = learner.batch_spec
        self._obs_dtype = observation_dtype(envs.single_observation_space).as_numpy_dtype
        float_obs = np.issubdtype(envs.single_observation_space.dtype, np.floating)
        self._finite_obs = (lambda x: np.isfinite(x).all()) if float_obs else (lambda x: True)
        self._buffers = {name: np.zeros(s.shape, s.dtype.as_numpy_dtype)
                         for name, s in spec._asdict().items()}
        # The NumPy twin of the policy acts when it can: see NumpyPolicy.
        self.numpy_policy = (NumpyPolicy(learner.policy, config.seed + 15485863)
                             if NumpyPolicy.supports(learner.policy) else None)
        self._observations, _ = envs.reset(seed=config.seed)
        envs.action_space.seed(config.seed)
        self._episode_return = np.zeros(num, np.float64)
        self._episode_length = np.zeros(num, np.int64)
        self.dropped_episodes = 0
        self._drop = config.on_nonfinite == "drop"
        self.completed_returns: List[float] = []
        self.completed_lengths: List[int] = []
        self.total_steps = 0
        self._steps = steps

    def _value(self, observations) -> np.ndarray:
        if self.numpy_policy is not None and self.numpy_policy.has_value:
            return self.numpy_policy.values(observations)
        return self.learner.policy.value(
            tf.convert_to_tensor(np.asarray(observations, self._obs_dtype))).numpy()

    def collect(self) -> Tuple[Batch, int]:
        """Collects one batch.

        Returns:
            (batch of numpy arrays matching ``learner.batch_spec``, env steps taken).
        """
        b = self._buffers
        if self.episodic:
            for array in b.values():
                array.fill(0)
            self._observations, _ = self.envs.reset()
            self._episode_return[:] = 0
            self._episode_length[:] = 0
        else:
            b["mask"].fill(1.0)
            b["bootstrap"].fill(0.0)
        active = np.ones(self.envs.num_envs, bool)
        baseline = self.learner.has_baseline
        obs = self._observations
        steps_taken = 0
        act = self.numpy_policy
        if act is not None:
            act.refresh()  # the weights changed in the last update
        # The loop body runs once per env step, so it does only what each step needs:
        # per-episode work waits for the steps where an episode ends, and a step's data is
        # checked in one cheap test that has a slow path for the rare bad step.
        observations, actions, rewards = b["observations"], b["actions"], b["rewards"]
        terminated_rows, truncated_rows = b["terminated"], b["truncated"]
        episode_steps, mask = b["episode_steps"], b["mask"]
        episode_return, episode_length = self._episode_return, self._episode_length
        step, finite_obs = self.envs.step, self._finite_obs
        for t in range(self._steps):
            row = observations[t]
            row[...] = obs  # stored in the batch's dtype, and what the policy sees
            if act is not None:
                raw, env_action = act(row)
            else:
                raw, env_action = (x.numpy() for x in self.learner.collect_step(row))
            actions[t] = raw
            next_obs, reward, terminated, truncated, info = step(env_action)
            rewards[t] = reward
            terminated_rows[t] = terminated
            truncated_rows[t] = truncated
            episode_steps[t] = episode_length
            if self.episodic:
                mask[t] = active
            done = terminated | truncated
            any_done = done.any()
            if not (np.isfinite(reward).all() and finite_obs(next_obs)
                    and not (any_done and self._bad_final_obs(info, done).any())):
                bad = self._non_finite(t, next_obs, reward, done, info)
                if bad is not None:
                    next_obs, terminated, truncated = self._drop_episodes(
                        t, bad, next_obs, reward, terminated, truncated)
                    reward = np.where(bad, 0.0, reward)
                    if self.episodic:
                        active &= ~bad
                    done = terminated | truncated
                    any_done = done.any()
            steps_taken += 1
            episode_return += reward
            episode_length += 1
            if any_done:
                self._finish_episodes(done & active if self.episodic else done)
                cut = truncated & ~terminated
                if baseline and cut.any():
                    final = np.stack([info["final_obs"][i] for i in np.flatnonzero(cut)])
                    b["bootstrap"][t, cut] = self._value(final)
                if self.episodic:
                    active &= ~done
            obs = next_obs
            if self.episodic and not active.any():
                break
        self._observations = obs
        last = steps_taken - 1
        if steps_taken == self._steps:
            open_ = ~(b["terminated"][last] | b["truncated"][last])
            if self.episodic:
                # The cap acts as a time limit: the episode is truncated there and counted.
                open_ &= active
                b["truncated"][last, open_] = True
                self._finish_episodes(open_)
            if baseline and open_.any():
                b["bootstrap"][last, open_] = self._value(np.asarray(obs)[open_])
        env_steps = steps_taken * self.envs.num_envs
        self.total_steps += env_steps
        return Batch(**b), env_steps

    def _bad_final_obs(self, info, done) -> np.ndarray:
        """[num] bool: the envs that ended this step with a NaN or inf final observation."""
        bad = np.zeros(self.envs.num_envs, bool)
        if "final_obs" in info:
            for i in np.flatnonzero(done):
                bad[i] = not _finite_rows(np.asarray(info["final_obs"][i])[None], 1)[0]
        return bad

    def _non_finite(self, t, next_obs, reward, done, info) -> Optional[np.ndarray]:
        """The environments whose step returned NaN or inf, or None if all are finite.

        Raises:
            NonFiniteError: naming the env step and the field, unless episodes are dropped.
        """
        num = self.envs.num_envs
        fields = {"reward": ~np.isfinite(reward), "observation": ~_finite_rows(next_obs, num)}
        fields["final observation"] = self._bad_final_obs(info, done)
        bad = np.zeros(num, bool)
        for field, rows in fields.items():
            if rows.any() and not self._drop:
                i = int(np.flatnonzero(rows)[0])
                value = reward[i] if field == "reward" else "non-finite entries"
                raise NonFiniteError(
                    f"env step {self.total_steps + (t + 1) * num}: environment {i} of "
                    f"{self.config.env_id} returned a non-finite {field} ({value})")
            bad |= rows
        return bad if bad.any() else None

    def _drop_episodes(self, t, bad, next_obs, reward, terminated, truncated):
        """Masks out the current episode of each ``bad`` env and resets those envs."""
        b = self._buffers
        for i in np.flatnonzero(bad):
            start = max(0, t - int(self._episode_length[i]))
            b["mask"][start:t + 1, i] = 0.0
            # Zeroed as well as masked: NaN * 0 is NaN in any sum that forgets the mask.
            b["rewards"][start:t + 1, i] = 0.0
            b["observations"][start:t + 1, i] = 0
            b["bootstrap"][start:t + 1, i] = 0.0
            b["terminated"][t, i] = True
        self.dropped_episodes += int(bad.sum())
        self._episode_return[bad] = 0.0
        self._episode_length[bad] = -1  # the increment after this step brings it to 0
        reset_obs, _ = self.envs.reset(options={"reset_mask": bad})
        next_obs = np.where(bad.reshape((-1,) + (1,) * (np.ndim(next_obs) - 1)), reset_obs,
                            next_obs)
        return next_obs, terminated & ~bad, truncated & ~bad

    def _finish_episodes(self, finished: np.ndarray) -> None:
        self.completed_returns.extend(self._episode_return[finished].tolist())
        self.completed_lengths.extend(self._episode_length[finished].tolist())
        self._episode_return[finished] = 0.0
        self._episode_length[finished] = 0

    def state(self) -> dict:
        """Everything needed to continue collecting exactly where this collector is.

        The environments themselves are pickled when they can be (classic-control and
        most Python envs); otherwise ``envs`` is None and a restored collector resets them.
        """
        try:
            envs = pickle.dumps(self.envs.envs) if hasattr(self.envs, "envs") else None
        except Exception:  # an env holding a handle that cannot be pickled
            envs = None
        rng = self.numpy_policy.rng.bit_generator.state if self.numpy_policy else None
        return {"observations": self._observations, "envs": envs, "numpy_rng": rng,
                "episode_return": self._episode_return.copy(),
                "episode_length": self._episode_length.copy(), "total_steps": self.total_steps}

    def restore(self, state: dict) -> bool:
        """Continues from a :meth:`state`.

        Returns:
            True if the environments were restored exactly; False if they had to be reset
            (then the run is not bit-identical to an uninterrupted one).
        """
        self.total_steps = state["total_steps"]
        if self.numpy_policy is not None and state.get("numpy_rng") is not None:
            self.numpy_policy.rng.bit_generator.state = state["numpy_rng"]
        if state["envs"] is not None:
            self.envs.envs = pickle.loads(state["envs"])
            self._observations = state["observations"]
            self._episode_return[:] = state["episode_return"]
            self._episode_length[:] = state["episode_length"]
            return True
        self._observations, _ = self.envs.reset(seed=self.config.seed + self.total_steps)
        self._episode_return[:] = 0
        self._episode_length[:] = 0
        return False

    def pop_episodes(self) -> Tuple[List[float], List[int]]:
        """Returns and lengths of the episodes finished since the last call."""
        out = (self.completed_returns, self.completed_lengths)
        self.completed_returns, self.completed_lengths = [], []
        return out


def evaluate(policy: Policy, env_id: str, episodes: int, seed: int,
             max_steps: int = 100_000, greedy: bool = True) -> np.ndarray:
    """Runs ``episodes`` episodes in parallel, one per environment, and returns their returns.

    Args:
        policy: The policy to act with.
        env_id: Gymnasium env id.
        episodes: Number of episodes (and of environments).
        seed: Seeds the environments' resets (and the sampling when not greedy).
        max_steps: Give up on episodes still running after this many steps.
        greedy: Act with the most likely action instead of a sample.

    Returns:
        [episodes] float64 undiscounted returns.
    """
    envs = make_vector_env(env_id, episodes)
    try:
        obs, _ = envs.reset(seed=seed)
        dtype = observation_dtype(envs.single_observation_space).as_numpy_dtype
        totals = np.zeros(episodes, np.float64)
        running = np.ones(episodes, bool)
        for t in range(max_steps):
            obs = tf.convert_to_tensor(np.asarray(obs, dtype))
            if greedy:
                action = policy.greedy(obs)
            else:
                action = policy.sample(obs, tf.constant([seed, t], tf.int32))[1]
            obs, reward, terminated, truncated, _ = envs.step(action.numpy())
            totals += np.where(running, reward, 0.0)
            running &= ~(terminated | truncated)
            if not running.any():
                break
        return totals
    finally:
        envs.close()
