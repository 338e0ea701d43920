"""Every hyperparameter of a run, in one frozen, typed dataclass validated on creation.

The launcher's flags are generated from these fields, so the two cannot drift. A field of
choices is typed ``Literal[...]``: the annotation is the one list of its values, which
validation (and :meth:`Config.choices`) read. Derived sizes (steps per iteration, number
of updates) are computed here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import sys
import typing
from typing import Any, List, Literal, Mapping, Tuple

Activation = Literal["tanh", "relu", "elu", "gelu", "silu", "swish", "leaky_relu", "selu",
                     "sigmoid"]
Optimizer = Literal["adam", "adamw", "rmsprop", "sgd"]
CollectMode = Literal["auto", "steps", "episodes"]
ActionBounds = Literal["clip", "tanh"]
OnNonfinite = Literal["stop", "drop"]
Backend = Literal["gymnasium", "compiled"]
RecurrentCell = Literal["none", "lstm", "gru"]
Schedule = Literal["constant", "linear"]
AdvantageNormalization = Literal["batch", "minibatch"]
EvalMode = Literal["greedy", "sample"]
Vectorization = Literal["sync", "async"]
# A model factory importable by name; and the record of a model given as a Python object.
MODEL_REFERENCE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
PYTHON_OBJECT = re.compile(r"<python object .*>")
STRATEGIES = ("default", "mirrored", "multi_worker")  # a launcher flag, not a Config field

# The one format version of every file pg_keras writes in a run directory (config.json,
# spaces.json, the checkpoints' loop state) and in an export (config.json). Before 1.0
# there is one: a file of any other version is refused in one line.
FORMAT_VERSION = 3


class InputError(ValueError):
    """Bad input from the user: a config value, an env id, a space, a path.

    The message is one line that names the thing and the value received. Launchers turn it
    into that line on stderr and exit code 2; anything else is a bug and keeps its traceback.
    """


class TrainingError(RuntimeError):
    """A run stopped by what happened during training (not by bad input).

    Raised for non-finite environment data (with ``on_nonfinite="stop"``) and for too many
    consecutive skipped updates. The last checkpoint before the fault is kept intact.
    (Defined here, beside InputError, so that the launchers can name both without
    importing TensorFlow.)
    """


class FrozenDict(dict):
    """A dict that refuses changes, so that a frozen Config stays frozen and hashable
    (``env_kwargs``); it pickles, copies and serializes to JSON as a dict."""

    def _refuse(self, *args, **kwargs):
        raise TypeError("a Config's env_kwargs are read-only; make another Config with "
                        "config.replace(env_kwargs=...)")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self) -> int:
        return hash(json.dumps(self, sort_keys=True))

    def __reduce__(self):
        return type(self), (dict(self),)


@dataclasses.dataclass(frozen=True)
class Config:
    """Hyperparameters of a REINFORCE run.

    Attributes:
        env_id: Gymnasium environment id (``"module:Env-v0"`` imports ``module`` first).
        env_wrappers: Gymnasium wrappers applied in order to every env of the run
            (training, evaluation, export, resume), before vectorization: ``module:name``
            entries, each a wrapper class or a function taking the env and returning it
            wrapped (``module`` is imported); the flag takes them comma-separated.
        env_kwargs: Keyword arguments of ``gym.make`` for every env of the run: a mapping
            of names to JSON values (``{"max_episode_steps": 100}``; the flag takes it as
            JSON text). Stored read-only, as a JSON object in config.json.
        use_action_mask: Obey the action mask the env gives (``info["action_mask"]``, or
            a Dict observation's ``action_mask`` key) when sampling, in the update and in
            evaluations; False hides it, so every action is legal to the policy.
        seed: Fixes the environments, the initial weights and the action sampling.
        num_envs: Environments stepped together in one gymnasium vector env.
        vectorization: How that vector env steps them: ``sync`` (one after the other, in
            this process) or ``async`` (each in a subprocess of its own: for envs whose
            step costs more than passing its data between processes, on as many cores).
            An async run's checkpoints do not hold the envs' state: a resumed run resets
            them.
        steps_per_update: Steps taken in each environment between two updates. In
            ``episodes`` collect mode it is the longest episode an update waits for.
        total_steps: Environment steps to train for, summed over the environments. A
            finished (or interrupted) run resumed with a larger ``total_steps`` continues
            from its last checkpoint to the new total; a ``linear`` schedule is a function
            of the env steps and this total, so from the resumed step on it follows the
            schedule of a run of the new total (its values rise, back onto that line).
            Changing ``eval_every`` likewise continues the run, evaluating from then on at
            multiples of the new interval.
        collect_mode: ``steps`` collects fixed-length segments and bootstraps the cut
            episodes from the value model; ``episodes`` resets the environments and runs
            each for one whole episode per update (textbook Monte-Carlo REINFORCE);
            ``auto`` picks ``steps`` with a baseline and ``episodes`` without one.
        gamma: Discount factor.
        gae_lambda: GAE(lambda) for the advantage; 1.0 is the Monte-Carlo return minus
            the baseline (REINFORCE with baseline). Used only with a baseline.
        baseline: Learn a value model V(s) and subtract it from the return.
        policy_learning_rate: Step size of the policy optimizer (alpha_theta).
        value_learning_rate: Step size of the value optimizer (alpha_w).
        optimizer: One of ``adam``, ``adamw``, ``rmsprop``, ``sgd``; both models use it.
        lr_schedule: ``constant``, or ``linear``: both learning rates decay linearly to 0
            over ``total_steps`` (each update uses the rate at the env steps taken before
            its batch, counted over all workers): ``rate * max(0, 1 - steps /
            total_steps)``, with the ``total_steps`` of the run's current config (a run
            continued to a larger total goes on at the rate of that total's line).
        entropy_coef: Weight beta of the entropy bonus.
        entropy_schedule: ``constant``, or ``linear``: the entropy bonus decays linearly
            to 0 over ``total_steps``, like ``lr_schedule``.
        max_grad_norm: Clip the policy's gradient to this global norm; 0 disables.
        value_max_grad_norm: Clip the value model's gradient to this global norm; 0
            disables; -1 uses ``max_grad_norm`` (the value gradient is often on another
            scale than the policy's).
        normalize_advantages: Standardize the policy-gradient weight (G_t, or
            G_t - V(s_t) with a baseline) over the batch.
        advantage_std_floor: With ``normalize_advantages``, divide by the batch's
            standard deviation or by this floor, whichever is larger (in the weight's
            units: the return's, or the running return std with ``normalize_returns``).
            0 always divides by the batch's. A floor keeps a batch of near-identical
            returns (a solved task whose every episode reaches the time limit) from being
            scaled up into full-size steps of noise. Small batches and long horizons
            (gamma near 1) give small spreads in running-return units, which the floor
            then damps from the start: lower it, or set 0, there.
        update_epochs: Passes over each batch (sample reuse). 1, with ``minibatches`` 1
            and no clips, is the REINFORCE update, bit for bit; more passes need
            ``clip_ratio`` to keep each step near the policy that collected the batch
            (the clipped surrogate of PPO; docs/reinforce.md).
        minibatches: Gradient steps per pass, each on an equal share of the batch's rows
            in a fresh random order (a recurrent policy's: whole environments' sequences,
            replayed from their initial state). Must divide the rows (``num_envs *
            steps_per_update``; ``num_envs`` for a recurrent policy) of each device.
        clip_ratio: eps of the clipped surrogate -min(r Psi, clip(r, 1 - eps, 1 + eps) Psi),
            r = pi / pi_old; 0 keeps the plain surrogate.
        value_clip: PPO's clipped value loss: the value model moves at most this far from
            its prediction at collection (in return-scale units) where that helps; 0 off.
        target_kl: Stop an update's remaining gradient steps once the approximate KL
            divergence from the collecting policy exceeds this; 0 off.
        advantage_normalization: With ``normalize_advantages``, standardize Psi over the
            whole ``batch`` (the default: the same scale for every minibatch, and the
            floor applies to the batch's spread) or over each ``minibatch``.
        normalize_returns: Divide rewards by a running estimate of the returns' standard
            deviation, so value targets stay near unit scale.
        gamma_weighting: Multiply each step's term by gamma^t, t counted from the
            episode's start (Sutton & Barto's pseudocode; the unbiased discounted
            objective, usually slower in practice).
        normalize_observations: Standardize observations with running statistics kept in
            a Keras layer that is exported with the policy.
        clip_observations: Clip normalized observations to [-clip, clip] inside that
            layer (so the exported policy clips too); 0 disables. Used only with
            ``normalize_observations``.
        hidden_sizes: Units of the default policy MLP's hidden layers; empty for none (a
            linear model; the flag says it as ``--hidden_sizes=none``).
        value_hidden_sizes: Units of the default value MLP's hidden layers (likewise).
        activation: Activation of the default MLPs' hidden layers.
        policy_network: Your own policy model, as ``module:factory``: a callable
            ``(observation_shape, output_units) -> keras.Model`` that ``module`` defines
            (see pg_keras.networks for the contract); empty: the default MLP.
        value_network: Your own value model, as ``module:factory`` (output units 1);
            empty: the default MLP.
        recurrent_cell: ``none``, or ``lstm`` or ``gru``: the default policy and value
            models end their torso in that recurrent cell (each its own), carry its state
            across an episode's steps, and learn by backpropagation through each batch's
            segment from the state they had when it was collected (pg_keras.recurrent).
        recurrent_units: Units of that recurrent cell.
        state_dependent_std: Gaussian heads predict log-std from the state instead of
            learning one state-independent vector.
        init_log_std: Initial log standard deviation of Gaussian heads.
        action_bounds: How Box actions reach the env: ``clip`` (sample is clipped) or
            ``tanh`` (sample is squashed into the bounds).
        eval_every: Evaluate the policy (as ``eval_mode`` says) every this many env steps;
            0 disables.
        eval_episodes: Episodes per evaluation.
        eval_mode: How evaluations act: ``greedy`` (the most likely action) or ``sample``
            (drawn from pi(.|s), as in training: for a policy whose greedy action loops).
        on_nonfinite: What a NaN or inf in an env's reward or observation does: ``stop``
            the run with an error naming the env step and the field (the last checkpoint
            stays intact), or ``drop`` the episode (its steps are masked out, the env is
            reset, and ``dropped_episodes`` counts it).
        max_consecutive_skips: Updates whose loss or gradients are not finite are skipped
            (weights and optimizer state unchanged); this many in a row stop the run.
        backend: How experience is collected: ``gymnasium`` (any registered env, stepped
            in Python by a gymnasium vector env) or ``compiled`` (a graph-native version
            of the env in pg_keras.envs; rollout and update run as one ``tf.function``).
        jit_compile: Compile the update (and, with ``backend="compiled"``, the whole
            iteration) with XLA.
        xla_rollout: With ``backend="compiled"`` and ``jit_compile=False``, compile the
            rollout alone with XLA: it fuses the env's many small operations, while
            TensorFlow's own kernels keep the update's matrix products (faster than XLA's
            on the CPU). Turn it off for a model XLA cannot compile.
        deterministic: Enable TensorFlow's op determinism (``enable_op_determinism``), so
            runs repeat bit for bit on any device, at some speed cost. On the CPU, runs of
            the same seed repeat without it.
    """

    env_id: str = "CartPole-v1"
    env_wrappers: Tuple[str, ...] = ()
    env_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=FrozenDict)
    use_action_mask: bool = True
    seed: int = 0
    num_envs: int = 8
    vectorization: Vectorization = "sync"
    steps_per_update: int = 32
    total_steps: int = 50_000
    collect_mode: CollectMode = "auto"
    gamma: float = 0.99
    gae_lambda: float = 1.0
    baseline: bool = True
    policy_learning_rate: float = 1e-3
    value_learning_rate: float = 1e-2
    optimizer: Optimizer = "adam"
    lr_schedule: Schedule = "linear"
    entropy_coef: float = 0.0
    entropy_schedule: Schedule = "constant"
    max_grad_norm: float = 0.0
    value_max_grad_norm: float = -1.0
    normalize_advantages: bool = True
    advantage_std_floor: float = 0.2
    update_epochs: int = 1
    minibatches: int = 1
    clip_ratio: float = 0.0
    value_clip: float = 0.0
    target_kl: float = 0.0
    advantage_normalization: AdvantageNormalization = "batch"
    normalize_returns: bool = True
    gamma_weighting: bool = False
    normalize_observations: bool = False
    clip_observations: float = 10.0
    hidden_sizes: Tuple[int, ...] = (64, 64)
    value_hidden_sizes: Tuple[int, ...] = (64, 64)
    activation: Activation = "tanh"
    policy_network: str = ""
    value_network: str = ""
    recurrent_cell: RecurrentCell = "none"
    recurrent_units: int = 64
    state_dependent_std: bool = False
    init_log_std: float = 0.0
    action_bounds: ActionBounds = "clip"
    eval_every: int = 10_000
    eval_episodes: int = 20
    eval_mode: EvalMode = "greedy"
    on_nonfinite: OnNonfinite = "stop"
    max_consecutive_skips: int = 10
    backend: Backend = "gymnasium"
    jit_compile: bool = False
    xla_rollout: bool = True
    deterministic: bool = False

    def __post_init__(self):
        # Tuples may arrive as lists (from JSON or flags); store them as tuples so the
        # config stays hashable and comparable.
        # numpy scalars (np.int64(8) from a sweep, np.float32 from arithmetic) are valid
        # values; store them as Python ones so validation accepts them and to_dict is JSON.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("hidden_sizes", "value_hidden_sizes") and isinstance(
                    value, (list, tuple)):
                value = tuple(_python_scalar(v) for v in value)
            object.__setattr__(self, field.name, _python_scalar(value))
        object.__setattr__(self, "env_wrappers", _wrapper_names(self.env_wrappers))
        object.__setattr__(self, "env_kwargs", _frozen_kwargs(self.env_kwargs))
        self._validate()

    def _validate(self) -> None:
        self._validate_numbers()
        self._validate_choices()
        self._validate_env_options()
        self._validate_combinations()

    def _fail(self, name: str, requirement: str) -> None:
        raise InputError(
            f"{name} must be {requirement}; received {name}={getattr(self, name)!r}")

    def _validate_numbers(self) -> None:
        fail = self._fail
        if not isinstance(self.env_id, str) or not self.env_id.strip():
            fail("env_id", "a non-empty gymnasium environment id")
        for name in ("seed",):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "a non-negative integer")
        for name in ("num_envs", "steps_per_update", "total_steps", "eval_episodes",
                     "max_consecutive_skips", "recurrent_units", "update_epochs",
                     "minibatches"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "a positive integer")
        if not _is_int(self.eval_every) or self.eval_every < 0:
            fail("eval_every", "a non-negative integer (0 disables evaluation)")
        for name in ("gamma", "gae_lambda"):
            if not _is_real(getattr(self, name)) or not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, "in [0, 1]")
        for name in ("policy_learning_rate", "value_learning_rate"):
            if not _is_real(getattr(self, name)) or not getattr(self, name) > 0:
                fail(name, "a positive finite number")
        for name in ("entropy_coef", "max_grad_norm", "clip_observations",
                     "advantage_std_floor", "value_clip", "target_kl"):
            if not _is_real(getattr(self, name)) or getattr(self, name) < 0:
                fail(name, "a non-negative finite number")
        if not _is_real(self.value_max_grad_norm) or not (
                self.value_max_grad_norm >= 0 or self.value_max_grad_norm == -1):
            fail("value_max_grad_norm", "a non-negative finite number, or -1 for max_grad_norm")
        if not _is_real(self.clip_ratio) or not 0.0 <= self.clip_ratio < 1.0:
            fail("clip_ratio", "in [0, 1) (0 keeps the plain surrogate)")
        if not _is_real(self.init_log_std):
            fail("init_log_std", "a finite number")

    def _validate_choices(self) -> None:
        fail = self._fail
        for name, kind in _field_types().items():
            value = getattr(self, name)
            if kind is bool and not isinstance(value, bool):
                fail(name, "True or False")
            choices = self.choices(name)
            if choices and not (isinstance(value, str) and value in choices):
                fail(name, "one of " + ", ".join(repr(c) for c in choices))
        for name in ("hidden_sizes", "value_hidden_sizes"):
            sizes = getattr(self, name)
            if not isinstance(sizes, tuple) or not all(_is_int(s) and s > 0 for s in sizes):
                fail(name, "a tuple of positive integers")
        for name in ("policy_network", "value_network"):
            value = getattr(self, name)
            if not isinstance(value, str) or not (
                    value == "" or MODEL_REFERENCE.fullmatch(value)
                    or PYTHON_OBJECT.fullmatch(value)):
                fail(name, "'module:factory' (a callable (observation_shape, output_units) "
                     "-> keras.Model that module defines), or empty for the default MLP")

    def _validate_env_options(self) -> None:
        wrappers = self.env_wrappers
        if not isinstance(wrappers, tuple) or not all(
                isinstance(w, str) and MODEL_REFERENCE.fullmatch(w) for w in wrappers):
            shown = ",".join(map(str, wrappers)) if isinstance(wrappers, tuple) else wrappers
            raise InputError(
                "env_wrappers must be comma-separated 'module:name' entries (a gymnasium "
                "wrapper class, or a function taking the env and returning it wrapped); "
                f"received env_wrappers={shown!r}")
        if not isinstance(self.env_kwargs, FrozenDict):
            raise InputError(
                "env_kwargs must be a mapping of gym.make keyword arguments (names to JSON "
                "values, e.g. {'max_episode_steps': 100}; the --env_kwargs flag takes it as "
                f"JSON text); received env_kwargs={self.env_kwargs!r}")

    def _validate_combinations(self) -> None:
        if self.backend == "compiled" and (self.env_wrappers or self.env_kwargs):
            raise InputError(
                "backend='compiled' steps pg_keras's own graph-native env, which takes no "
                "env_wrappers or env_kwargs; use backend='gymnasium'; received "
                f"env_wrappers={','.join(self.env_wrappers)!r}, "
                f"env_kwargs={json.dumps(self.env_kwargs, sort_keys=True)}")
        if self.collect_mode == "steps" and not self.baseline:
            raise InputError(
                "collect_mode='steps' cuts episodes at the segment end and needs a value "
                "baseline to bootstrap them; use collect_mode='episodes' (or 'auto') for "
                "REINFORCE without a baseline; received collect_mode='steps', baseline=False")
        self._validate_sample_reuse()
        if self.total_steps < self.steps_per_iteration:
            raise InputError(
                "total_steps must be at least one update's worth of steps (num_envs * "
                f"steps_per_update = {self.steps_per_iteration}); received "
                f"total_steps={self.total_steps}")

    def _validate_sample_reuse(self) -> None:
        if self.value_clip > 0 and not self.baseline:
            raise InputError("value_clip clips the value model's loss and needs a baseline; "
                             f"received value_clip={self.value_clip}, baseline=False")
        recurrent = self.recurrent_cell != "none"
        rows = self.num_envs if recurrent else self.steps_per_iteration
        if rows % self.minibatches:
            what = ("num_envs (a recurrent policy's minibatches are whole environments)"
                    if recurrent else f"the batch's num_envs * steps_per_update = {rows} rows")
            raise InputError(f"minibatches must divide {what}; received minibatches="
                             f"{self.minibatches}, num_envs={self.num_envs}, "
                             f"steps_per_update={self.steps_per_update}")

    @property
    def reuses_samples(self) -> bool:
        """Whether the update is more than REINFORCE's one step (epochs, minibatches, a
        clip or an early stop)."""
        return (self.update_epochs, self.minibatches, self.clip_ratio, self.value_clip,
                self.target_kl) != (1, 1, 0.0, 0.0, 0.0)

    @classmethod
    def choices(cls, name: str) -> tuple:
        """The values field ``name`` allows, from its ``Literal`` annotation (() if it is
        not one)."""
        kind = _field_types()[name]
        return typing.get_args(kind) if typing.get_origin(kind) is Literal else ()

    @property
    def resolved_collect_mode(self) -> str:
        """``steps`` or ``episodes``: ``auto`` resolved against ``baseline``."""
        if self.collect_mode != "auto":
            return self.collect_mode
        return "steps" if self.baseline else "episodes"

    @property
    def resolved_value_max_grad_norm(self) -> float:
        """The value model's clipping norm: ``value_max_grad_norm``, -1 resolved."""
        return self.max_grad_norm if self.value_max_grad_norm == -1 else self.value_max_grad_norm

    @property
    def steps_per_iteration(self) -> int:
        """Environment steps in one update's batch (at most, in episodes mode)."""
        return self.num_envs * self.steps_per_update

    def replace(self, **changes) -> "Config":
        """A copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as JSON-ready values (``env_kwargs`` a plain dict)."""
        return {**dataclasses.asdict(self), "env_kwargs": dict(self.env_kwargs)}

    def to_stored(self) -> dict:
        """What a config.json holds: :meth:`to_dict` and the ``format_version``."""
        return {"format_version": FORMAT_VERSION, **self.to_dict()}

    @classmethod
    def completed(cls, values: dict) -> dict:
        """``values`` with each field it lacks at its default (a config written by hand)."""
        return {**field_defaults(), **values}

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "Config":
        """The Config of ``values``, a :meth:`to_dict` or a stored config.json.

        Fields missing from ``values`` take their defaults; ``source`` names the file in
        messages.

        Raises:
            InputError: for an unknown field, an invalid value, or a stored config of
                another format version.
        """
        _stored_version(values, source, required=False)
        values = {k: v for k, v in values.items() if k != "format_version"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"unknown Config field(s) {unknown} in {source}; known fields: "
                             f"{sorted(names)}")
        return cls(**cls.completed(values))

    @classmethod
    def from_stored(cls, values: dict, source: str) -> "Config":
        """The Config of a stored config.json (run directory or export), which must hold
        this version's ``format_version``.

        Raises:
            InputError: as :meth:`from_dict` does, and for a file without the field.
        """
        _stored_version(values, source, required=True)
        return cls.from_dict(values, source)

    def differences(self, stored: dict, source: str = "config") -> List[str]:
        """The fields where a stored config.json differs from this config.

        The one rule for run directories and exports: a field missing from ``stored``
        counts as its default.

        Returns:
            ``"field: stored -> this"`` for each differing field, sorted by name.

        Raises:
            InputError: if ``stored`` has another format version, or none.
        """
        _stored_version(stored, source, required=True)
        # Compared as JSON values: tuples are lists there, as in the file.
        old = json.loads(json.dumps(Config.completed(
            {k: v for k, v in stored.items() if k != "format_version"})))
        new = json.loads(json.dumps(self.to_dict()))
        changes = []
        for name in sorted(set(old) | set(new)):
            before, after = old.get(name, _ABSENT), new.get(name, _ABSENT)
            if before != after:
                changes.append(f"{name}: {before!r} -> {after!r}")
        return changes

    def differences_to_resume(self, stored: dict, source: str = "config") -> List[str]:
        """The :meth:`differences` that keep a run stored with ``stored`` from going on
        with this config: all but a larger ``total_steps`` and another ``eval_every``,
        which a resumed run continues with (see ``total_steps``).

        Raises:
            InputError: if ``stored`` is not a config object, or was written in another
                format version.
        """
        if not isinstance(stored, dict):
            raise InputError(f"{source} holds {type(stored).__name__}, not a config")
        before = stored.get("total_steps")
        grows = isinstance(before, int) and self.total_steps >= before
        return [line for line in self.differences(stored, source)
                if not (line.startswith("eval_every:")
                        or (line.startswith("total_steps:") and grows))]


class _Absent:
    """A field one side of a comparison does not have."""

    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def check_run_options(checkpoint_every: int = 0, target_return=None) -> None:
    """Refuses the options of ``train`` that are not Config fields, before any work.

    Raises:
        InputError: for a negative or non-integer ``checkpoint_every``, or a
            ``target_return`` that is not a finite number (None: the env's threshold).
    """
    checkpoint_every = _python_scalar(checkpoint_every)
    if not _is_int(checkpoint_every) or checkpoint_every < 0:
        raise InputError("checkpoint_every must be a non-negative integer (0: at every "
                         f"evaluation); received checkpoint_every={checkpoint_every!r}")
    if target_return is not None and not _is_real(_python_scalar(target_return)):
        raise InputError("target_return must be a finite number (or None for the env's "
                         f"reward_threshold); received target_return={target_return!r}")


def _stored_version(values: dict, source: str, required: bool) -> None:
    """Refuses a stored config of another format version than this one's; without the
    field, a stored file (``required``) is format 1, a :meth:`Config.to_dict` is fine."""
    if "format_version" not in values:
        if required:
            raise InputError(format_message(source, 1))
        return
    version = values["format_version"]
    if not _is_int(version) or version < 1:
        raise InputError(f"{source} has an invalid format_version; received "
                         f"format_version={version!r}")
    if version != FORMAT_VERSION:
        raise InputError(format_message(source, version))


def format_message(source: str, version) -> str:
    """The one line that refuses a config.json of another format version."""
    newer = isinstance(version, int) and version > FORMAT_VERSION
    remedy = ("upgrade pg_keras to use it" if newer else "train again with this version, or "
              "use the pg_keras release that wrote it")
    return (f"{source} was written by {'a later' if newer else 'an earlier'} version of "
            f"pg_keras (format_version {version!r}; this version reads format "
            f"{FORMAT_VERSION} only): {remedy}")


def _wrapper_names(value):
    """``env_wrappers`` as a tuple of stripped names: a comma-separated string (a flag's
    text) or a list (JSON) is accepted; anything else is left for validation to refuse."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, (list, tuple)):
        return tuple(v.strip() if isinstance(v, str) else v for v in value
                     if not (isinstance(v, str) and not v.strip()))
    return value


def _frozen_kwargs(value):
    """``env_kwargs`` as a :class:`FrozenDict` of its own (deep) copy, keys sorted (one
    spelling of equal mappings in config.json and messages): a mapping of string keys to
    JSON values is accepted; anything else is left for validation to refuse."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        return value
    try:
        return FrozenDict(json.loads(json.dumps(dict(value), sort_keys=True, allow_nan=False)))
    except (TypeError, ValueError):
        return value


@functools.lru_cache(maxsize=None)
def _field_types() -> dict:
    """Config field -> its type (the annotations, evaluated once)."""
    return typing.get_type_hints(Config)


def field_defaults() -> dict:
    """Config field -> its default value."""
    return {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
            for f in dataclasses.fields(Config)}


def _python_scalar(value):
    """``value`` as a Python scalar if it is a numpy one (np.bool_ -> bool stays a bool)."""
    # Without numpy imported there is no numpy scalar; not importing it here keeps the
    # launchers' flag checks fast.
    numpy = sys.modules.get("numpy")
    return value.item() if numpy is not None and isinstance(value, numpy.generic) else value


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
