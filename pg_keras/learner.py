"""THE UPDATE: REINFORCE on a :class:`~pg_keras.batch.Batch` (and, with sample reuse, the
clipped surrogate of PPO over several passes), and its builder.

Reading order: :meth:`Learner._loss_and_gradients` is the algorithm (log-probabilities,
policy-gradient weights, surrogate, value loss, entropy, tape); :meth:`Learner._update`
sets the scheduled learning rates and bonus, takes the step (:meth:`Learner._step`: clip
each model's gradient to a global norm, apply it, or skip a step that is not finite) and
then moves the running statistics. With ``update_epochs``, ``minibatches`` or a clip
(``Config.reuses_samples``), :meth:`Learner._reuse` takes the steps instead: the
advantages and pi_old once (:meth:`Learner._prepare`), then ``update_epochs`` passes of
``minibatches`` steps (:meth:`Learner._minibatch_gradients`), the same loss with the
ratio to pi_old in place of log pi.

:func:`build_learner` makes the parts the learner holds: networks, normalizers,
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

from pg_keras import distributed, losses, networks, returns, schedules, spaces
from pg_keras.batch import Batch, batch_spec
from pg_keras.config import Config, InputError
from pg_keras.heads import make_head
from pg_keras.normalization import NestedNormalization, RunningNormalization
from pg_keras.policy import Policy
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


class Learner(tf.Module):
    """The REINFORCE update, and the state it changes. Made by :func:`build_learner`.

    Each worker feeds its own batch (its own environments) to :meth:`update`; the worker's
    devices split it between them by environment. The update is the one the default
    strategy makes on all workers' batches concatenated: every mean (the loss, the
    advantage normalization, the running statistics) is over the steps of all replicas.

    Args:
        config: Hyperparameters.
        policy: The policy whose weights the update changes.
        policy_optimizer: Its optimizer, built on ``policy_variables``.
        value_optimizer: The value network's optimizer, or None without a baseline.
        return_stats: Running statistics of the returns, or None.
        strategy: The ``tf.distribute.Strategy`` whose scope holds the variables.
        minibatch_rng: The stream the minibatches' order is drawn from (checkpointed
            here), or None with one minibatch.
    """

    def __init__(self, config: Config, policy: Policy,
                 policy_optimizer: keras.optimizers.Optimizer,
                 value_optimizer: Optional[keras.optimizers.Optimizer],
                 return_stats: Optional[RunningNormalization],
                 strategy: tf.distribute.Strategy,
                 minibatch_rng: Optional[tf.random.Generator] = None):
        super().__init__(name="learner")
        self.config = config
        self.strategy = strategy
        self.local_replicas = distributed.local_replicas(strategy)
        # The attribute names below are the checkpoint's object names.
        self.policy, self.head, self.normalizer = policy, policy.head, policy.normalizer
        self.return_stats = return_stats
        self.policy_variables = list(policy.network.trainable_variables) + list(
            policy.head.trainable_variables)
        self.value_variables = ([] if policy.value_network is None
                                else list(policy.value_network.trainable_variables))
        self.policy_optimizer, self.value_optimizer = policy_optimizer, value_optimizer
        with strategy.scope():
            self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
            self.skipped_updates = tf.Variable(0, dtype=tf.int64, trainable=False,
                                               name="skipped_updates")
            # Set at the start of each update that follows a schedule (_apply_schedules).
            self.entropy_coef = tf.Variable(config.entropy_coef, dtype=tf.float32,
                                            trainable=False, name="entropy_coef")
        if minibatch_rng is not None:  # absent from a checkpoint of a one-minibatch run
            self.minibatch_rng = minibatch_rng
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
        """One REINFORCE update on ``batch`` (see the module docstring); its metrics.

        Args:
            batch: Numpy arrays or tensors matching :attr:`batch_spec`.
            env_steps: Env steps of all workers taken before the batch: with
                ``lr_schedule`` or ``entropy_schedule``, the update's learning rates and
                bonus follow from it (pg_keras.schedules; 0, the default, is the
                schedules' start). The loop checkpoints it, so a resumed run applies the
                same values.

        Called eagerly, it runs the update's traced graph, each field converted once and
        the graph called directly (the loop's hot path skips the ``tf.function``'s
        argument binding). Called while another ``tf.function`` is traced (the compiled
        path fuses rollout and update), it adds the update to that graph.
        """
        if tf.inside_function():
            return self._update(batch, env_steps)
        if self._update_graph is None:
            self._update_graph = self._update_function.get_concrete_function()
        return self._update_graph(self.tensors(batch), tf.constant(env_steps, tf.int64))

    def tensors(self, batch: Batch) -> Batch:
        """``batch`` as tensors of :attr:`batch_spec`, with the all-legal action masks and
        the empty state where it has none."""
        if batch.action_masks is None:
            batch = batch._replace(action_masks=np.ones(self.batch_spec.action_masks.shape, bool))
        if batch.initial_state is None and not self.policy.recurrent:
            batch = batch._replace(initial_state=np.zeros(self.batch_spec.initial_state.shape,
                                                          np.float32))
        return Batch(*map(_as_tensor, batch, self.batch_spec))

    def fuse(self, collector) -> Callable[[int], Tuple[Dict[str, tf.Tensor], int]]:
        """A graph collector's rollout and the update on it as one ``tf.function`` (one
        XLA program with ``jit_compile``): ``(env steps before it) -> (metrics, env steps
        taken)``.

        Args:
            collector: A ``CompiledCollector`` of this learner's policy: its traceable
                ``rollout()`` returns the batch and where episodes ended, which its
                ``record`` logs after the call.
        """
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
        return self.policy.value_network is not None

    def _apply_schedules(self, env_steps) -> None:
        """Assigns the scheduled values (pg_keras.schedules) before the update reads them."""
        values = schedules.scheduled_values(self.config, env_steps)
        self.policy_optimizer.learning_rate.assign(values.policy_learning_rate)
        if self.value_optimizer is not None:
            self.value_optimizer.learning_rate.assign(values.value_learning_rate)
        self.entropy_coef.assign(values.entropy_coef)

    def _outputs(self, batch: Batch, observations):
        """pi(.|s_t) over the [T * B] rows, and V(s_t) [T, B] (None without a baseline).

        A recurrent policy replays each env's segment from ``batch.initial_state``, the
        state it collected the segment with (truncated backpropagation through time).
        """
        if self.policy.recurrent:
            params, values = self.policy.replay(batch.observations, batch.initial_state,
                                                batch.terminated | batch.truncated)
            pi = self.head.distribution(params, _action_masks(batch))
        else:
            pi = self.policy.distribution(observations, _action_masks(batch))
            values = (self.policy.normalized_value(observations) if self.has_baseline
                      else None)
        return pi, None if values is None else _unflatten(values, batch)

    def _loss_and_gradients(self, batch: Batch):
        """REINFORCE on this replica's rows: (gradients summed over replicas, metrics, rows).

        The loss is this replica's mean over its valid steps times its share of all valid
        steps, so the replicas' gradients sum to the gradient of the whole batch's mean.
        """
        cfg = self.config
        batch = distributed.local_block(batch, self.local_replicas)
        observations = tf.nest.map_structure(_flatten, batch.observations)
        actions = _flatten(batch.actions)
        with tf.GradientTape() as tape:
            pi, values = self._outputs(batch, observations)
            log_probs = _unflatten(pi.log_prob(actions), batch)
            entropy = _unflatten(pi.entropy(), batch)
            psi = policy_gradient_weights(cfg, batch, values, self.policy.return_scale())
            info = losses.reinforce_loss(
                log_probs, entropy, psi.weights, batch.mask,
                self.entropy_coef, values, psi.value_targets, psi.step_weights)
            loss = info.total * psi.moments.share
        gradients = self._gradients(tape, loss)
        shares = {"loss": info.total, "policy_loss": info.policy, "value_loss": info.value,
                  "entropy": info.entropy}
        gradients, metrics = distributed.sum_replicas(
            (gradients, {k: v * psi.moments.share for k, v in shares.items()}))
        metrics.update(psi.metrics)
        rows = _statistic_rows(self.policy, self.return_stats, observations, batch.mask,
                               psi.returns)
        return gradients, metrics, rows

    def _update(self, batch: Batch, env_steps) -> Dict[str, tf.Tensor]:
        """One update as one graph: schedules; REINFORCE's step (or the steps of
        :meth:`_reuse`); the counters; then the running statistics."""
        if self._scheduled:
            self._apply_schedules(env_steps)
        if self.config.reuses_samples:
            metrics, rows, applied = self._reuse(batch)
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
                self._update_statistics(rows)
        if self._scheduled:
            metrics.update(self._schedule_metrics())
        return metrics

    def _step(self, gradients, loss):
        """Clips each model's gradient to its global norm and applies it, unless the loss
        or a gradient is not finite: (1.0 if applied else 0.0, policy norm, value norm).
        Runs in cross-replica context: the clip sees the gradient of the whole batch."""
        cfg = self.config
        policy_grads = gradients[:len(self.policy_variables)]
        value_grads = gradients[len(self.policy_variables):]
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

    def _reuse(self, batch: Batch):
        """Sample reuse: ``update_epochs`` passes over the batch, each of ``minibatches``
        steps on the rows of a fresh order, until a step would start past ``target_kl``.

        Returns:
            (metrics: the losses, ratio statistics and gradient norms averaged over the
            steps taken, ``epochs`` taken, ``skipped_steps``; the rows for the running
            statistics; the number of steps applied).
        """
        cfg, minibatches = self.config, self.config.minibatches
        prepared, metrics, rows = self.strategy.run(self._prepare, args=(batch,))
        metrics, rows = distributed.first_replica(self.strategy, (metrics, rows))
        orders = self._orders()
        keys = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")

        def body(step, taken, applied, stop, sums):
            order = orders[step // minibatches, step % minibatches]
            gradients, values = distributed.first_replica(self.strategy, self.strategy.run(
                self._minibatch_gradients, args=(prepared, order)))
            # pi_old's own KL is 0: the first step is always taken.
            stop = (values["approx_kl"] > cfg.target_kl if cfg.target_kl > 0
                    else tf.constant(False))

            def take():
                ok, policy_norm, value_norm = self._step(gradients, values["loss"])
                return ok, tf.stack([values[k] for k in keys] + [policy_norm, value_norm])

            ok, row = tf.cond(stop, lambda: (tf.constant(0.0), tf.zeros([len(keys) + 2])),
                              take)
            return (step + 1, taken + 1.0 - tf.cast(stop, tf.float32), applied + ok, stop,
                    sums + row)

        _, taken, applied, _, sums = tf.while_loop(
            lambda step, taken, applied, stop, sums: (step < orders.shape[0] * minibatches)
            & tf.logical_not(stop), body,
            (tf.constant(0), tf.constant(0.0), tf.constant(0.0), tf.constant(False),
             tf.zeros([len(keys) + 2])))
        means = sums / taken
        metrics.update({k: means[i] for i, k in enumerate(keys + ("policy_grad_norm",
                                                                   "value_grad_norm"))})
        metrics.update(epochs=taken / minibatches, skipped_steps=taken - applied,
                       skipped=tf.cast(applied <= 0, tf.float32))
        return metrics, rows, applied

    def _orders(self) -> tf.Tensor:
        """[update_epochs, minibatches, n] int32: the columns of each step's minibatch
        (:meth:`_prepare`'s columns of one replica), a fresh permutation for each pass
        drawn from ``minibatch_rng``; in order with one minibatch."""
        cfg = self.config
        columns = cfg.num_envs if self.policy.recurrent else cfg.steps_per_iteration
        columns //= self.local_replicas
        shape = [cfg.update_epochs, cfg.minibatches, columns // cfg.minibatches]
        if cfg.minibatches == 1:
            return tf.reshape(tf.tile(tf.range(columns), [cfg.update_epochs]), shape)
        keys = self.minibatch_rng.uniform([cfg.update_epochs, columns])
        return tf.reshape(tf.argsort(keys, axis=1, stable=True), shape)

    def _prepare(self, batch: Batch):
        """This replica's rows readied for reuse (:class:`Reused`), the batch's weight
        metrics, and the statistics' rows: Psi_t, the value targets, V_old and log pi_old
        computed once, from the models as they collected the batch."""
        cfg = self.config
        batch = distributed.local_block(batch, self.local_replicas)
        observations = tf.nest.map_structure(_flatten, batch.observations)
        pi, values = self._outputs(batch, observations)
        old_log_probs = _unflatten(pi.log_prob(_flatten(batch.actions)), batch)
        psi = policy_gradient_weights(
            cfg, batch, values, self.policy.return_scale(),
            normalize=cfg.advantage_normalization == "batch")
        zeros = tf.zeros_like(batch.rewards)
        reused = Reused(
            batch, old_log_probs, psi.weights,
            zeros if values is None else tf.stop_gradient(values),
            zeros if psi.value_targets is None else psi.value_targets,
            tf.ones_like(zeros) if psi.step_weights is None else psi.step_weights)
        rows = _statistic_rows(self.policy, self.return_stats, observations, batch.mask,
                               psi.returns)
        return _as_columns(reused, self.policy.recurrent), psi.metrics, rows

    def _minibatch_gradients(self, reused: "Reused", columns: tf.Tensor):
        """The clipped surrogate's gradient on the minibatch ``columns`` of every
        replica's :meth:`_prepare` rows: (gradients summed over replicas, metrics)."""
        cfg = self.config
        part = tf.nest.map_structure(lambda x: tf.gather(x, columns, axis=1), reused)
        batch = part.batch
        moments = distributed.masked_moments(batch.mask, part.weights)
        weights = part.weights
        if cfg.normalize_advantages and cfg.advantage_normalization == "minibatch":
            weights = returns.standardize(weights, moments.means[0], moments.variances[0],
                                          std_floor=cfg.advantage_std_floor)
        observations = tf.nest.map_structure(_flatten, batch.observations)
        with tf.GradientTape() as tape:
            pi, values = self._outputs(batch, observations)
            log_probs = _unflatten(pi.log_prob(_flatten(batch.actions)), batch)
            info = losses.reinforce_loss(
                log_probs, _unflatten(pi.entropy(), batch), weights, batch.mask,
                self.entropy_coef, values, part.value_targets,
                part.step_weights if cfg.gamma_weighting else None,
                part.old_log_probs, cfg.clip_ratio, part.old_values, cfg.value_clip)
            loss = info.total * moments.share
        kl, clip_fraction = losses.ratio_statistics(log_probs, part.old_log_probs,
                                                    batch.mask, cfg.clip_ratio)
        shares = {"loss": info.total, "policy_loss": info.policy, "value_loss": info.value,
                  "entropy": info.entropy, "approx_kl": kl, "clip_fraction": clip_fraction}
        return distributed.sum_replicas((self._gradients(tape, loss), {
            k: v * moments.share for k, v in shares.items()}))

    def _gradients(self, tape: tf.GradientTape, loss: tf.Tensor):
        """d loss / d (policy variables + value variables), zeros where unconnected."""
        variables = self.policy_variables + self.value_variables
        return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                for g, v in zip(tape.gradient(loss, variables), variables)]

    def _update_statistics(self, rows: StatisticRows) -> None:
        if self.normalizer is not None:
            self.normalizer.update_rows(rows.features, rows.mask)
        if self.return_stats is not None:
            self.return_stats.update(rows.returns, rows.mask)

    def _schedule_metrics(self) -> Dict[str, tf.Tensor]:
        """The learning rates and entropy bonus this update used."""
        values = {"policy_learning_rate": tf.identity(self.policy_optimizer.learning_rate)}
        if self.value_optimizer is not None:
            values["value_learning_rate"] = tf.identity(self.value_optimizer.learning_rate)
        values["entropy_coef"] = tf.identity(self.entropy_coef)
        return values


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


class Reused(NamedTuple):
    """A batch readied for several steps: its fields and what the collecting policy gave
    each step, all [T', B'] (see :func:`_as_columns`)."""

    batch: Batch
    old_log_probs: tf.Tensor  # log pi_old(a_t|s_t)
    weights: tf.Tensor  # Psi_t
    old_values: tf.Tensor  # V_old(s_t), return-scale units (0 without a baseline)
    value_targets: tf.Tensor  # return-scale units (0 without a baseline)
    step_weights: tf.Tensor  # gamma^t (1 without gamma_weighting)


def _as_columns(reused: Reused, recurrent: bool) -> Reused:
    """The minibatches' view of the rows: a recurrent policy's stay [T, B] (a minibatch is
    whole environments, replayed from their initial state); a feed-forward policy's steps
    become the columns of [1, T * B] (a minibatch is any steps), with an empty state."""
    if recurrent:
        return reused

    def columns(x):
        return tf.reshape(x, [1, x.shape[0] * x.shape[1]] + x.shape[2:])

    batch = reused.batch
    steps = batch.rewards.shape[0] * batch.rewards.shape[1]
    fields = {name: tf.nest.map_structure(columns, value)
              for name, value in batch._asdict().items() if name != "initial_state"}
    batch = Batch(initial_state=tf.zeros([1, steps, 0]), **fields)
    return Reused(batch, *map(columns, reused[1:]))


def _statistic_rows(policy: Policy, return_stats, flat_observations, mask,
                    target_returns) -> Optional[StatisticRows]:
    """All replicas' rows for the running normalizers, or None without any."""
    if policy.normalizer is None and return_stats is None:
        return None
    if policy.normalizer is None:
        features = tf.zeros([mask.shape[0] * mask.shape[1], 0])
    else:
        features = policy.normalizer.rows(spaces.encode(
            policy.observation_space, flat_observations))
    return distributed.all_gather(StatisticRows(
        features, tf.reshape(mask, [-1]), tf.reshape(target_returns, [-1])))


def _flatten(x: tf.Tensor) -> tf.Tensor:
    """[T, B, ...] -> [T * B, ...]."""
    return tf.reshape(x, [x.shape[0] * x.shape[1]] + x.shape[2:])


def _action_masks(batch: Batch) -> Optional[tf.Tensor]:
    """[T * B, W] the legal actions, or None for a head without masks; padding rows
    (mask 0) hold no mask and allow every action."""
    if not batch.action_masks.shape[-1]:
        return None
    padding = tf.reshape(batch.mask <= 0, [-1, 1])
    return _flatten(batch.action_masks) | padding


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
        InputError: if ``num_envs`` is not a multiple of this worker's devices.
    """
    strategy = strategy or tf.distribute.get_strategy()
    devices = distributed.local_replicas(strategy)
    if config.num_envs % devices:
        raise InputError(
            f"num_envs must be a multiple of the {devices} devices of the distribution "
            f"strategy, which split each batch by environment; received "
            f"num_envs={config.num_envs}")
    with strategy.scope():
        policy, return_stats = _build_policy(config, observation_space, action_space,
                                             policy_network, value_network)
        policy_variables = list(policy.network.trainable_variables) + list(
            policy.head.trainable_variables)
        policy_optimizer = make_optimizer(config.optimizer, config.policy_learning_rate)
        policy_optimizer.build(policy_variables)
        value_optimizer = None
        if policy.value_network is not None:
            value_optimizer = make_optimizer(config.optimizer, config.value_learning_rate)
            value_optimizer.build(policy.value_network.trainable_variables)
    _check_minibatches(config, devices, policy.recurrent)
    minibatch_rng = None
    if config.minibatches > 1:  # outside the scope: one stream, the chief's on every worker
        minibatch_rng = tf.random.Generator.from_seed(SeedStreams(config.seed).minibatches)
    return Learner(config, policy, policy_optimizer, value_optimizer, return_stats,
                   strategy, minibatch_rng)


def _check_minibatches(config: Config, devices: int, recurrent: bool) -> None:
    """Refuses minibatches that do not split each device's rows evenly (a recurrent
    policy's rows are its environments, e.g. with a recurrent model of the user's)."""
    rows = (config.num_envs if recurrent else config.steps_per_iteration) // devices
    if rows % config.minibatches:
        what = "environments" if recurrent else "rows (num_envs * steps_per_update)"
        raise InputError(
            f"minibatches must divide the {rows} {what} of each of the {devices} devices"
            f"{' of a recurrent policy' if recurrent else ''}; received "
            f"minibatches={config.minibatches}")


def observation_normalizer(space: gym.Space, config: Config):
    """The running normalization of observations, or None (``normalize_observations``
    off, a lone image, or a nested space none of whose leaves takes it).

    A leaf space's whole encoded observation is normalized; a Dict or Tuple space's
    vector leaves only (not images, not one-hots), each with its own statistics.
    """
    if not config.normalize_observations:
        return None
    shapes = spaces.encoded_shape(space)
    if not spaces.is_nested(space):
        if spaces.is_image(space):
            return None  # the CNN scales its input itself
        normalizer = RunningNormalization(clip=config.clip_observations,
                                          name="observation_normalizer")
        normalizer.build((None,) + shapes)
        return normalizer
    names = [name for name, applies in spaces.normalizes(space).items() if applies]
    if not names:
        return None
    normalizer = NestedNormalization(names, clip=config.clip_observations,
                                     name="observation_normalizer")
    normalizer.build({name: (None,) + shape for name, shape in shapes.items()})
    return normalizer


def _build_policy(config: Config, observation_space: gym.Space, action_space: gym.Space,
                  policy_network, value_network):
    """(the policy, the running return statistics or None), in the current scope."""
    # A Dict observation's "action_mask" key goes to the head, not to the networks.
    observation_space, _ = spaces.split_action_mask(observation_space)
    obs_shape = spaces.encoded_shape(observation_space)
    head = make_head(action_space, config.state_dependent_std, config.init_log_std,
                     config.action_bounds)
    normalizer = observation_normalizer(observation_space, config)
    policy_network = networks.chosen_model(policy_network, config.policy_network, "policy")
    if policy_network is None:
        policy_network = _default_network(config, observation_space, head.param_size,
                                          config.hidden_sizes, 0.01, SeedStreams(config.seed).init,
                                          "policy")
    policy_network = networks.resolve_model(policy_network, obs_shape, head.param_size,
                                            "policy")
    if config.baseline:
        value_network = networks.chosen_model(value_network, config.value_network, "value")
        if value_network is None:
            value_network = _default_network(config, observation_space, 1,
                                             config.value_hidden_sizes, 1.0,
                                             SeedStreams(config.seed).value_init, "value")
        value_network = networks.resolve_model(value_network, obs_shape, 1, "value")
    else:
        value_network = None
    return_stats = None
    if config.normalize_returns:
        return_stats = RunningNormalization(clip=0.0, name="return_stats")
        return_stats.build((None,))
    return_scale = None if return_stats is None else lambda: _std(return_stats)
    policy = Policy(observation_space, head, policy_network, normalizer, value_network,
                    return_scale)
    return policy, return_stats


def _default_network(config: Config, space: gym.Space, output_units: int, hidden_sizes,
                     output_gain: float, seed: int, role: str) -> keras.Model:
    """The default model of ``role``: the MLP, or with ``recurrent_cell`` the recurrent one."""
    if config.recurrent_cell == "none":
        return networks.default_network(space, output_units, hidden_sizes, config.activation,
                                        output_gain=output_gain, seed=seed, name=f"{role}_mlp")
    return networks.default_recurrent_network(
        space, output_units, hidden_sizes, config.activation, config.recurrent_cell,
        config.recurrent_units, output_gain, seed, name=f"{role}_{config.recurrent_cell}")


def _as_tensor(x, spec):
    """A batch field as tensors of its spec's dtypes (a nested field leaf by leaf)."""
    if isinstance(spec, tf.TensorSpec):
        return tf.constant(x, spec.dtype)
    return tf.nest.map_structure(lambda leaf, s: tf.constant(leaf, s.dtype), x, spec)


def _std(stats: RunningNormalization) -> tf.Tensor:
    return tf.sqrt(stats.variance + stats.epsilon)


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """The Keras optimizer ``config.optimizer`` names."""
    return {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
    }[name](learning_rate=learning_rate)
