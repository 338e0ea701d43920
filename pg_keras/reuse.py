"""Sample reuse: the steps an update takes instead of REINFORCE's one when
``Config.reuses_samples`` (``update_epochs``, ``minibatches``, a clip or ``target_kl``).

The algorithm of PPO's clipped surrogate (docs/reinforce.md, "Reusing a batch"): Psi_t,
the value targets, V_old and log pi_old once, from the models as they collected the batch
(:meth:`SampleReuse.prepare`); then ``update_epochs`` passes, each of ``minibatches`` steps
on the rows of a fresh order (:meth:`SampleReuse.orders`), of the learner's loss with the
ratio pi / pi_old in place of log pi (:meth:`SampleReuse.minibatch_gradients`), until a
step would start past ``target_kl``. Each step is the learner's own (clip, apply, or skip
what is not finite): this module only chooses the rows and the loss.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, NamedTuple, Optional

import tensorflow as tf

from pg_keras import distributed, losses, returns
from pg_keras.batch import Batch
from pg_keras.config import Config

if TYPE_CHECKING:
    from pg_keras.learner import Learner

# The metrics averaged over the steps an update takes, in the order the loop sums them.
_STEP_METRICS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
_NORMS = ("policy_grad_norm", "value_grad_norm")


class Reused(NamedTuple):
    """A batch readied for several steps: its fields and what the collecting policy gave
    each step, all [T', B'] (see :func:`_as_columns`)."""

    batch: Batch
    old_log_probs: tf.Tensor  # log pi_old(a_t|s_t)
    weights: tf.Tensor  # Psi_t
    old_values: tf.Tensor  # V_old(s_t), return-scale units (0 without a baseline)
    value_targets: tf.Tensor  # return-scale units (0 without a baseline)
    step_weights: tf.Tensor  # gamma^t (1 without gamma_weighting)


class SampleReuse(tf.Module):
    """The epochs and minibatches of one learner, and the stream their order is drawn from.

    Args:
        config: Hyperparameters.
        columns: The minibatches' columns of one replica: its environments for a
            recurrent policy (a minibatch is whole environments), else its steps.
        minibatch_rng: The stream the order is drawn from (checkpointed here), or None
            with one minibatch.
    """

    def __init__(self, config: Config, columns: int,
                 minibatch_rng: Optional[tf.random.Generator] = None):
        super().__init__(name="reuse")
        self.config, self.columns = config, columns
        if minibatch_rng is not None:  # absent from a checkpoint of a one-minibatch run
            self.minibatch_rng = minibatch_rng

    def update(self, learner: "Learner", batch: Batch):
        """``update_epochs`` passes over the batch, each of ``minibatches`` steps on the
        rows of a fresh order, until a step would start past ``target_kl``.

        Returns:
            (metrics: the losses, ratio statistics and gradient norms averaged over the
            steps taken, ``epochs`` taken, ``skipped_steps``; the rows for the running
            statistics; the number of steps applied).
        """
        strategy, minibatches = learner.strategy, self.config.minibatches
        prepared, metrics, rows = strategy.run(functools.partial(self.prepare, learner),
                                               args=(batch,))
        metrics, rows = distributed.first_replica(strategy, (metrics, rows))
        orders = self.orders()
        step_gradients = functools.partial(self.minibatch_gradients, learner)
        width = len(_STEP_METRICS) + len(_NORMS)

        def body(step, taken, applied, stop, sums):
            order = orders[step // minibatches, step % minibatches]
            gradients, values = distributed.first_replica(
                strategy, strategy.run(step_gradients, args=(prepared, order)))
            stop = self._past_target_kl(values["approx_kl"])

            def take():
                ok, policy_norm, value_norm = learner._step(gradients, values["loss"])
                return ok, tf.stack([values[k] for k in _STEP_METRICS] + [policy_norm,
                                                                          value_norm])

            ok, row = tf.cond(stop, lambda: (tf.constant(0.0), tf.zeros([width])), take)
            return (step + 1, taken + 1.0 - tf.cast(stop, tf.float32), applied + ok, stop,
                    sums + row)

        _, taken, applied, _, sums = tf.while_loop(
            lambda step, taken, applied, stop, sums: (step < orders.shape[0] * minibatches)
            & tf.logical_not(stop), body,
            (tf.constant(0), tf.constant(0.0), tf.constant(0.0), tf.constant(False),
             tf.zeros([width])))
        means = sums / taken
        metrics.update({k: means[i] for i, k in enumerate(_STEP_METRICS + _NORMS)})
        metrics.update(epochs=taken / minibatches, skipped_steps=taken - applied,
                       skipped=tf.cast(applied <= 0, tf.float32))
        return metrics, rows, applied

    def _past_target_kl(self, approx_kl: tf.Tensor) -> tf.Tensor:
        """Whether a step starts past ``target_kl`` (pi_old's own KL is 0: the first step
        is always taken)."""
        if self.config.target_kl > 0:
            return approx_kl > self.config.target_kl
        return tf.constant(False)

    def orders(self) -> tf.Tensor:
        """[update_epochs, minibatches, n] int32: the columns of each step's minibatch
        (:meth:`prepare`'s columns of one replica), a fresh permutation for each pass
        drawn from ``minibatch_rng``; in order with one minibatch."""
        cfg, columns = self.config, self.columns
        shape = [cfg.update_epochs, cfg.minibatches, columns // cfg.minibatches]
        if cfg.minibatches == 1:
            return tf.reshape(tf.tile(tf.range(columns), [cfg.update_epochs]), shape)
        keys = self.minibatch_rng.uniform([cfg.update_epochs, columns])
        return tf.reshape(tf.argsort(keys, axis=1, stable=True), shape)

    def prepare(self, learner: "Learner", batch: Batch):
        """This replica's rows readied for reuse (:class:`Reused`), the batch's weight
        metrics, and the statistics' rows: Psi_t, the value targets, V_old and log pi_old
        computed once, from the models as they collected the batch."""
        batch = distributed.local_block(batch, learner.local_replicas)
        outputs = learner._outputs(batch)
        psi = learner._weights(batch, outputs.values,
                               normalize=self.config.advantage_normalization == "batch")
        zeros = tf.zeros_like(batch.rewards)
        reused = Reused(
            batch, outputs.log_probs, psi.weights,
            zeros if outputs.values is None else tf.stop_gradient(outputs.values),
            zeros if psi.value_targets is None else psi.value_targets,
            tf.ones_like(zeros) if psi.step_weights is None else psi.step_weights)
        rows = learner.statistics.rows(outputs.observations, batch.mask, psi.returns)
        return _as_columns(reused, learner.policy.recurrent), psi.metrics, rows

    def minibatch_gradients(self, learner: "Learner", reused: Reused, columns: tf.Tensor):
        """The clipped surrogate's gradient on the minibatch ``columns`` of every
        replica's :meth:`prepare` rows: (gradients summed over replicas, metrics)."""
        cfg = self.config
        part = tf.nest.map_structure(lambda x: tf.gather(x, columns, axis=1), reused)
        batch = part.batch
        moments = distributed.masked_moments(batch.mask, part.weights)
        weights = part.weights
        if cfg.normalize_advantages and cfg.advantage_normalization == "minibatch":
            weights = returns.standardize(weights, moments.means[0], moments.variances[0],
                                          std_floor=cfg.advantage_std_floor)
        with tf.GradientTape() as tape:
            outputs = learner._outputs(batch)
            info = losses.reinforce_loss(
                outputs.log_probs, outputs.entropy, weights, batch.mask,
                learner.entropy_coef, outputs.values, part.value_targets,
                part.step_weights if cfg.gamma_weighting else None,
                part.old_log_probs, cfg.clip_ratio, part.old_values, cfg.value_clip)
            loss = info.total * moments.share
        kl, clip_fraction = losses.ratio_statistics(outputs.log_probs, part.old_log_probs,
                                                    batch.mask, cfg.clip_ratio)
        shares = {"loss": info.total, "policy_loss": info.policy, "value_loss": info.value,
                  "entropy": info.entropy, "approx_kl": kl, "clip_fraction": clip_fraction}
        return distributed.sum_replicas((learner._gradients(tape, loss), {
            k: v * moments.share for k, v in shares.items()}))


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
