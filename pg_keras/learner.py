"""THE UPDATE: REINFORCE on a :class:`~pg_keras.batch.Batch` (and, with sample reuse, the
clipped surrogate of PPO over several passes), and its builder.

Reading order: :meth:`Learner._loss_and_gradients` is the algorithm (log-probabilities,
policy-gradient weights Psi_t (:func:`policy_gradient_weights`), surrogate, value loss,
entropy, tape); :meth:`Learner._update` sets the scheduled learning rates and bonus, takes
the step (:meth:`Learner._step`: clip each model's gradient to a global norm, apply it, or
skip a step that is not finite) and then moves the running statistics. With
``update_epochs``, ``minibatches`` or a clip (``Config.reuses_samples``), the learner's
:class:`~pg_keras.reuse.SampleReuse` takes the steps instead (pg_keras/reuse.py): the same
loss with the ratio to pi_old in place of log pi, over several passes of minibatches.

:func:`build_learner` makes the parts the learner holds: the policy (pg_keras/builder.py),
optimizers, and the minibatches' stream. The learner never acts: collectors take its
``policy``, and the loop hands their batches to :meth:`Learner.update` (or fuses a graph
rollout with it: :meth:`Learner.fuse`).

Under a ``tf.distribute`` strategy each replica runs :meth:`Learner._loss_and_gradients`
on its own rows; every statistic that spans replicas (the valid-step count, advantage
normalization, explained variance, the normalizers' rows, the gradient sum) comes from
distributed.py, which is also what a single replica uses: one code path for both.
"""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional, Tuple

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from pg_keras import builder, distributed, losses, networks, returns, schedules, spaces
from pg_keras.batch import Batch, batch_spec
from pg_keras.config import Config, InputError
from pg_keras.normalization import RunningNormalization
from pg_keras.policy import Policy
from pg_keras.recurrent import merge_time
from pg_keras.reuse import SampleReuse
from pg_keras.seeding import SeedStreams


class StatisticRows(NamedTuple):
    """What the running normalizers learn from, one row per step (all replicas' rows after
    :func:`distributed.all_gather`).

    Attributes:
        features: [N, size] encoded observations, flat (``normalizer.rows``; [N, 0]
            without an observation normalizer).
        mask: [N] 1 for steps to learn from.
        returns: [N] return targets in the return's units (the return normalizer's).
    """

    features: tf.Tensor
    mask: tf.Tensor
    returns: tf.Tensor


class RunningStatistics:
    """The running statistics an update moves after its steps, from all replicas' rows:
    the policy's observation normalizer and the return statistics (either may be None)."""

    def __init__(self, policy: Policy, return_stats: Optional[RunningNormalization]):
        self.policy, self.return_stats = policy, return_stats

    def rows(self, flat_observations, mask, target_returns) -> Optional[StatisticRows]:
        """All replicas' rows of this replica's steps, or None without any statistics."""
        normalizer = self.policy.normalizer
        if normalizer is None and self.return_stats is None:
            return None
        if normalizer is None:
            features = tf.zeros([mask.shape[0] * mask.shape[1], 0])
        else:
            features = normalizer.rows(spaces.encode(self.policy.observation_space,
                                                     flat_observations))
        return distributed.all_gather(StatisticRows(
            features, tf.reshape(mask, [-1]), tf.reshape(target_returns, [-1])))

    def update(self, rows: StatisticRows) -> None:
        if self.policy.normalizer is not None:
            self.policy.normalizer.update_rows(rows.features, rows.mask)
        if self.return_stats is not None:
            self.return_stats.update(rows.returns, rows.mask)


class Outputs(NamedTuple):
    """What the models say of a batch's steps (:meth:`Learner._outputs`)."""

    log_probs: tf.Tensor  # [T, B] log pi(a_t|s_t)
    entropy: tf.Tensor  # [T, B] H(pi(.|s_t))
    values: Optional[tf.Tensor]  # [T, B] V(s_t) in return-scale units; None: no baseline
    observations: object  # [T * B, ...] the observations, flat (nested like the space)


class Learner(tf.Module):
    """The REINFORCE update, and the state it changes. Made by :func:`build_learner`:
    ``policy`` and its optimizers (``value_optimizer`` None without a baseline), the
    running ``return_stats`` (or None), the ``strategy`` whose scope holds the variables,
    and ``reuse``, the passes and minibatches of ``Config.reuses_samples`` (it takes
    its steps with this learner's ``_outputs``, ``_weights``, ``statistics``,
    ``_gradients`` and ``_step``: one loss, one step).

    Each worker feeds its own batch (its own environments) to :meth:`update`; the worker's
    devices split it between them by environment. The update is the one the default
    strategy makes on all workers' batches concatenated: every mean (the loss, the
    advantage normalization, the running statistics) is over the steps of all replicas.
    """

    def __init__(self, config: Config, policy: Policy,
                 policy_optimizer: keras.optimizers.Optimizer,
                 value_optimizer: Optional[keras.optimizers.Optimizer],
                 return_stats: Optional[RunningNormalization],
                 strategy: tf.distribute.Strategy, reuse: SampleReuse):
        super().__init__(name="learner")
        self.config, self.strategy = config, strategy
        self.local_replicas = distributed.local_replicas(strategy)
        # The attribute names below are the checkpoint's object names.
        self.policy, self.head, self.normalizer = policy, policy.head, policy.normalizer
        self.return_stats, self.reuse = return_stats, reuse
        self.statistics = RunningStatistics(policy, return_stats)  # not a checkpoint object
        self.policy_variables = list(policy.network.trainable_variables) + list(
            policy.head.trainable_variables)
        self.value_variables = ([] if policy.value_network is None
                                else list(policy.value_network.trainable_variables))
        self.policy_optimizer, self.value_optimizer = policy_optimizer, value_optimizer
        with strategy.scope():
            self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
            self.skipped_updates = tf.Variable(0, dtype=tf.int64, trainable=False,
                                               name="skipped_updates")
            # Set at the start of each update that follows a schedule (_update).
            self.entropy_coef = tf.Variable(config.entropy_coef, dtype=tf.float32,
                                            trainable=False, name="entropy_coef")
        self._scheduled = schedules.is_scheduled(config)
        self.batch_spec = batch_spec(
            config, policy.observation_space, policy.head,
            policy.state_spec((1, config.num_envs)) if policy.recurrent else None)
        # autograph=False: the graph code is written with tf.cond (Python control flow
        # branches only on Python values), and converting it is slow to trace.
        self._update_function = tf.function(
            self._update, input_signature=[self.batch_spec, tf.TensorSpec([], tf.int64)],
            jit_compile=config.jit_compile, autograph=False)
        self._update_graph = None

    def update(self, batch: Batch, env_steps=0) -> Dict[str, tf.Tensor]:
        """One update on ``batch`` (arrays or tensors of :attr:`batch_spec`); its metrics.

        ``env_steps``, all workers' env steps before the batch, sets the scheduled
        learning rates and bonus (pg_keras.schedules; 0 is their start; the loop
        checkpoints it, so a resumed run applies the same values). Called eagerly, it
        calls the traced graph directly (the hot path skips the ``tf.function``'s argument
        binding); called while another function is traced (the compiled path's fused
        iteration), it adds the update to that graph.
        """
        if tf.inside_function():
            return self._update(batch, env_steps)
        if self._update_graph is None:
            self._update_graph = self._update_function.get_concrete_function()
        return self._update_graph(self.tensors(batch), tf.constant(env_steps, tf.int64))

    def tensors(self, batch: Batch) -> Batch:
        """``batch`` as tensors of :attr:`batch_spec` (see :func:`_as_tensors`)."""
        return _as_tensors(batch, self.batch_spec, self.policy.recurrent)

    def fuse(self, collector) -> Callable[[int], Tuple[Dict[str, tf.Tensor], int]]:
        """A ``CompiledCollector``'s rollout and the update on it as one ``tf.function``
        (one XLA program with ``jit_compile``): ``(env steps before) -> (metrics, env
        steps taken)``; the collector's ``record`` logs where episodes ended after it."""
        def iteration(env_steps):
            segment = collector.rollout()
            return self._update(segment.batch, env_steps), segment.ends

        compiled = tf.function(iteration, input_signature=[tf.TensorSpec([], tf.int64)],
                               autograph=False, jit_compile=self.config.jit_compile)

        def call(env_steps: int = 0):
            metrics, ends = compiled(tf.constant(env_steps, tf.int64))
            return metrics, collector.record(ends)
        return call

    @property
    def trace_count(self) -> int:
        """How many times the eager :meth:`update` has been traced (once, normally)."""
        return self._update_function.experimental_get_tracing_count()

    @property
    def has_baseline(self) -> bool:
        return self.policy.has_value

    def _outputs(self, batch: Batch) -> Outputs:
        """What the models say of this replica's rows; a recurrent policy replays each
        env's segment from the state it collected it with (``batch.initial_state``)."""
        observations = tf.nest.map_structure(merge_time, batch.observations)
        if self.policy.recurrent:
            params, values = self.policy.replay(batch.observations, batch.initial_state,
                                                batch.terminated | batch.truncated)
            pi = self.head.distribution(params, _action_masks(batch))
        else:
            pi = self.policy.distribution(observations, _action_masks(batch))
            values = (self.policy.normalized_value(observations) if self.has_baseline
                      else None)
        return Outputs(_unflatten(pi.log_prob(merge_time(batch.actions)), batch),
                       _unflatten(pi.entropy(), batch),
                       None if values is None else _unflatten(values, batch), observations)

    def _weights(self, batch: Batch, values, normalize: bool = True) -> "Weights":
        """:func:`policy_gradient_weights` in this learner's return scale."""
        return policy_gradient_weights(self.config, batch, values, self.policy.return_scale(),
                                       normalize)

    def _loss_and_gradients(self, batch: Batch):
        """REINFORCE on this replica's rows: (gradients summed over replicas, metrics, rows).

        The loss is this replica's mean over its valid steps times its share of all valid
        steps, so the replicas' gradients sum to the gradient of the whole batch's mean.
        """
        batch = distributed.local_block(batch, self.local_replicas)
        with tf.GradientTape() as tape:
            out = self._outputs(batch)
            psi = self._weights(batch, out.values)
            info = losses.reinforce_loss(
                out.log_probs, out.entropy, psi.weights, batch.mask,
                self.entropy_coef, out.values, psi.value_targets, psi.step_weights)
            loss = info.total * psi.moments.share
        gradients = self._gradients(tape, loss)
        shares = {"loss": info.total, "policy_loss": info.policy, "value_loss": info.value,
                  "entropy": info.entropy}
        gradients, metrics = distributed.sum_replicas(
            (gradients, {k: v * psi.moments.share for k, v in shares.items()}))
        metrics.update(psi.metrics)
        return gradients, metrics, self.statistics.rows(out.observations, batch.mask,
                                                        psi.returns)

    def _update(self, batch: Batch, env_steps) -> Dict[str, tf.Tensor]:
        """One update as one graph: schedules; REINFORCE's step (or the steps of
        ``reuse``); the counters; then the running statistics."""
        if self._scheduled:
            schedules.assign(self._scheduled_variables(),
                             schedules.scheduled_values(self.config, env_steps))
        if self.config.reuses_samples:
            metrics, rows, applied = self.reuse.update(self, batch)
        else:
            gradients, metrics, rows = distributed.first_replica(
                self.strategy, self.strategy.run(self._loss_and_gradients, args=(batch,)))
            applied, policy_norm, value_norm = self._step(gradients, metrics["loss"])
            metrics.update(policy_grad_norm=policy_norm, value_grad_norm=value_norm,
                           skipped=1.0 - applied)
        # An update none of whose steps was finite counts as skipped.
        self.updates.assign_add(tf.cast(applied > 0, tf.int64))
        self.skipped_updates.assign_add(tf.cast(applied <= 0, tf.int64))
        # The statistics move after the gradient, which is thus taken for exactly the
        # policy that collected the batch.
        if rows is not None:
            with tf.control_dependencies([applied]):
                self.statistics.update(rows)
        if self._scheduled:  # the values this update used
            metrics.update(schedules.as_metrics(self._scheduled_variables()))
        return metrics

    def _step(self, gradients, loss):
        """Clips each model's gradient to its global norm and applies it, unless the loss
        or a gradient is not finite: (1.0 if applied else 0.0, policy norm, value norm).
        Runs in cross-replica context: the clip sees the gradient of the whole batch."""
        cfg, split = self.config, len(self.policy_variables)
        policy_grads, value_grads = gradients[:split], gradients[split:]
        policy_norm = tf.linalg.global_norm(policy_grads)
        value_norm = tf.linalg.global_norm(value_grads) if value_grads else tf.zeros([])
        finite = (tf.math.is_finite(loss) & tf.math.is_finite(policy_norm)
                  & tf.math.is_finite(value_norm))
        policy_grads = _clip(policy_grads, cfg.max_grad_norm, policy_norm)
        value_grads = _clip(value_grads, cfg.resolved_value_max_grad_norm, value_norm)

        def apply():
            self.policy_optimizer.apply(policy_grads, self.policy_variables)
            if value_grads:
                self.value_optimizer.apply(value_grads, self.value_variables)
            return tf.constant(1.0)

        applied = tf.cond(finite, apply, lambda: tf.constant(0.0))
        return applied, policy_norm, value_norm

    def _gradients(self, tape: tf.GradientTape, loss: tf.Tensor):
        """d loss / d (policy variables + value variables), zeros where unconnected."""
        variables = self.policy_variables + self.value_variables
        return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                for g, v in zip(tape.gradient(loss, variables), variables)]

    def _scheduled_variables(self) -> schedules.Scheduled:
        """Where each update's scheduled values go (None: no value model)."""
        return schedules.Scheduled(
            self.policy_optimizer.learning_rate,
            None if self.value_optimizer is None else self.value_optimizer.learning_rate,
            self.entropy_coef)


class Weights(NamedTuple):
    """What :func:`policy_gradient_weights` gives the loss (and the metrics)."""

    weights: tf.Tensor  # [T, B] Psi_t
    value_targets: Optional[tf.Tensor]  # [T, B] in return-scale units, with a baseline
    step_weights: Optional[tf.Tensor]  # [T, B] gamma^t, with gamma_weighting
    returns: tf.Tensor  # [T, B] return targets in the return's units
    moments: distributed.Moments
    metrics: Dict[str, tf.Tensor]


def policy_gradient_weights(config: Config, batch: Batch, values: Optional[tf.Tensor],
                            scale: tf.Tensor, normalize: bool = True) -> "Weights":
    """Psi_t, the policy-gradient weight of each step: the return G_t, or the advantage
    (GAE; G_t - V(s_t) at lambda = 1), in units of the return scale, standardized over
    all replicas' valid steps if ``normalize_advantages``.

    Args:
        config: Hyperparameters (gamma, gae_lambda, the normalization, gamma weighting).
        batch: This replica's rows.
        values: [T, B] V(s_t) in units of ``scale``, or None without a baseline.
        scale: The return scale (1, or the running return std).
        normalize: Standardize here, as ``normalize_advantages`` says (False: the
            caller standardizes each minibatch).
    """
    cfg = config
    continues = 1.0 - tf.cast(batch.terminated | batch.truncated, tf.float32)
    if values is None:
        target_returns = returns.discounted_returns(
            batch.rewards, continues, batch.bootstrap, cfg.gamma)
        weights, value_targets, columns = target_returns / scale, None, ()
    else:
        predictions = tf.stop_gradient(values) * scale
        advantages, target_returns = returns.generalized_advantages(
            batch.rewards, predictions, continues, batch.bootstrap, cfg.gamma,
            cfg.gae_lambda)
        weights, value_targets = advantages / scale, target_returns / scale
        columns = (target_returns, target_returns - predictions)
    moments = distributed.masked_moments(batch.mask, weights, *columns)
    # Before normalization, in return-scale units: what the floor compares with.
    metrics = {"advantage_std": tf.sqrt(moments.variances[0])}
    if values is not None:
        metrics["explained_variance"] = 1.0 - tf.math.divide_no_nan(
            moments.variances[2], moments.variances[1])
    metrics["valid_steps"] = moments.count
    if cfg.normalize_advantages and normalize:
        weights = returns.standardize(weights, moments.means[0], moments.variances[0],
                                      std_floor=cfg.advantage_std_floor)
    step_weights = (returns.step_discounts(batch.episode_steps, cfg.gamma)
                    if cfg.gamma_weighting else None)
    return Weights(weights, value_targets, step_weights, target_returns, moments, metrics)


def _action_masks(batch: Batch) -> Optional[tf.Tensor]:
    """[T * B, W] the legal actions, or None for a head without masks; padding rows
    (mask 0) hold no mask and allow every action."""
    if not batch.action_masks.shape[-1]:
        return None
    padding = tf.reshape(batch.mask <= 0, [-1, 1])
    return merge_time(batch.action_masks) | padding


def _unflatten(x: tf.Tensor, batch: Batch) -> tf.Tensor:
    """[T * B] -> [T, B], the shape of ``batch.rewards``."""
    return tf.reshape(x, batch.rewards.shape)


def _clip(gradients, max_norm: float, norm: tf.Tensor):
    """``gradients`` scaled to global norm ``max_norm`` if larger (no clip if 0)."""
    if not gradients or max_norm <= 0:
        return gradients
    return tf.clip_by_global_norm(gradients, max_norm, norm)[0]


def build_learner(config: Config, observation_space: gym.Space, action_space: gym.Space,
                  policy_network: Optional[networks.ModelOrFactory] = None,
                  value_network: Optional[networks.ModelOrFactory] = None,
                  strategy: Optional[tf.distribute.Strategy] = None) -> Learner:
    """The learner of ``config``: its head, networks, normalizers, optimizers and stream.

    Args:
        config: Hyperparameters.
        observation_space: The env's single observation space.
        action_space: The env's single action space.
        policy_network: A ``keras.Model`` or a factory for one (see networks.py); None
            builds the factory ``config.policy_network`` names, or the default MLP.
        value_network: Same, for V(s); ignored without a baseline.
        strategy: ``tf.distribute.Strategy`` whose scope holds the variables; default: the
            current one. Its devices on this worker split each batch by environment.

    Raises:
        InputError: if ``num_envs`` is not a multiple of this worker's devices, or
            ``minibatches`` does not divide a device's rows.
    """
    strategy = strategy or tf.distribute.get_strategy()
    devices = distributed.local_replicas(strategy)
    if config.num_envs % devices:
        raise InputError(
            f"num_envs must be a multiple of the {devices} devices of the distribution "
            f"strategy, which split each batch by environment; received "
            f"num_envs={config.num_envs}")
    with strategy.scope():
        policy, return_stats = builder.build_policy(config, observation_space, action_space,
                                                    policy_network, value_network)
        policy_variables = list(policy.network.trainable_variables) + list(
            policy.head.trainable_variables)
        policy_optimizer = make_optimizer(config.optimizer, config.policy_learning_rate)
        policy_optimizer.build(policy_variables)
        value_optimizer = None
        if policy.value_network is not None:
            value_optimizer = make_optimizer(config.optimizer, config.value_learning_rate)
            value_optimizer.build(policy.value_network.trainable_variables)
    reuse = _sample_reuse(config, devices, policy.recurrent)
    return Learner(config, policy, policy_optimizer, value_optimizer, return_stats,
                   strategy, reuse)


def _sample_reuse(config: Config, devices: int, recurrent: bool) -> SampleReuse:
    """The passes and minibatches of ``config`` (used where ``config.reuses_samples``).

    Raises:
        InputError: for minibatches that do not split each device's rows evenly (a
            recurrent policy's rows are its environments, e.g. with a user's recurrent
            model: a minibatch is whole environments).
    """
    rows = (config.num_envs if recurrent else config.steps_per_iteration) // devices
    if rows % config.minibatches:
        what = "environments" if recurrent else "rows (num_envs * steps_per_update)"
        raise InputError(
            f"minibatches must divide the {rows} {what} of each of the {devices} devices"
            f"{' of a recurrent policy' if recurrent else ''}; received "
            f"minibatches={config.minibatches}")
    minibatch_rng = None
    if config.minibatches > 1:  # outside the scope: one stream, the chief's on every worker
        minibatch_rng = tf.random.Generator.from_seed(SeedStreams(config.seed).minibatches)
    return SampleReuse(config, rows, minibatch_rng)


def _as_tensors(batch: Batch, spec: Batch, recurrent: bool) -> Batch:
    """``batch`` as tensors of ``spec``'s dtypes (a nested field leaf by leaf), with the
    all-legal action masks and a feed-forward policy's empty state where it has none."""
    if batch.action_masks is None:
        batch = batch._replace(action_masks=np.ones(spec.action_masks.shape, bool))
    if batch.initial_state is None and not recurrent:
        batch = batch._replace(initial_state=np.zeros(spec.initial_state.shape, np.float32))
    return Batch(*map(_as_tensor, batch, spec))


def _as_tensor(x, spec):
    """A batch field as tensors of its spec's dtypes (a nested field leaf by leaf)."""
    if isinstance(spec, tf.TensorSpec):
        return tf.constant(x, spec.dtype)
    return tf.nest.map_structure(lambda leaf, s: tf.constant(leaf, s.dtype), x, spec)


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """The Keras optimizer ``config.optimizer`` names."""
    return {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
    }[name](learning_rate=learning_rate)
