"""The policy, its models and optimizers, and the one ``tf.function`` REINFORCE update.

Reading order for the update: :meth:`Learner._gradients` computes the returns or
advantages (returns.py) and the surrogate, entropy and value losses (losses.py) under one
``tf.GradientTape``; :meth:`Learner._update` sums the gradients over replicas, clips
each model's gradient to a global norm, skips the update if anything is non-finite, and
applies the policy and value optimizers.
"""

from __future__ import annotations

from typing import Dict, Optional

import gymnasium as gym
import keras
import tensorflow as tf

from pg_keras import losses, networks, returns
from pg_keras.batch import Batch, batch_spec, observation_dtype
from pg_keras.config import Config, InputError
from pg_keras.distributed import local_replicas
from pg_keras.heads import make_head
from pg_keras.normalization import RunningNormalization
from pg_keras.policy import Policy


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    return {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
    }[name](learning_rate=learning_rate)


class Learner(tf.Module):
    """Models, optimizers, counters and the compiled REINFORCE update.

    Args:
        config: Hyperparameters.
        observation_space: The env's single observation space.
        action_space: The env's single action space.
        policy_network: A ``keras.Model`` or a factory for one (see networks.py); None
            builds the factory ``config.policy_network`` names, or the default MLP.
        value_network: Same, for V(s); ignored without a baseline.
        strategy: ``tf.distribute.Strategy`` whose scope holds the variables; default: the
            current one. Each worker feeds its own batch (its own environments) to
            :meth:`update`; the worker's devices split it between them by environment
            (``num_envs`` must be a multiple of their number). The update is the one the
            default strategy makes on all workers' batches concatenated: every mean (the
            loss, the advantage normalization, the running statistics) is taken over the
            steps of all replicas together.
    """

    def __init__(self, config: Config, observation_space: gym.Space, action_space: gym.Space,
                 policy_network: Optional[networks.ModelOrFactory] = None,
                 value_network: Optional[networks.ModelOrFactory] = None,
                 strategy: Optional[tf.distribute.Strategy] = None):
        super().__init__(name="learner")
        self.config = config
        self.strategy = strategy or tf.distribute.get_strategy()
        # This worker's devices that hold replicas: its batch is split between them.
        self.local_replicas = local_replicas(self.strategy)
        if config.num_envs % self.local_replicas:
            raise InputError(
                f"num_envs must be a multiple of the {self.local_replicas} devices of the "
                f"distribution strategy, which split each batch by environment; received "
                f"num_envs={config.num_envs}")
        obs_shape = networks.observation_shape(observation_space)
        with self.strategy.scope():
            self.head = make_head(action_space, config.state_dependent_std, config.init_log_std,
                                  config.action_bounds)
            self.normalizer = None
            if config.normalize_observations:
                self.normalizer = RunningNormalization(clip=config.clip_observations,
                                                       name="observation_normalizer")
                self.normalizer.build((None,) + obs_shape)
            policy_network = networks.chosen_model(policy_network, config.policy_network,
                                                   "policy")
            if policy_network is None:
                policy_network = networks.mlp(obs_shape, self.head.param_size, config.hidden_sizes,
                                              config.activation, output_gain=0.01,
                                              seed=config.seed, name="policy_mlp")
            policy_network = networks.resolve_model(policy_network, obs_shape,
                                                    self.head.param_size, "policy")
            self.return_stats = None
            if config.baseline:
                value_network = networks.chosen_model(value_network, config.value_network,
                                                      "value")
                if value_network is None:
                    value_network = networks.mlp(obs_shape, 1, config.value_hidden_sizes,
                                                 config.activation, output_gain=1.0,
                                                 seed=config.seed + 7919, name="value_mlp")
                value_network = networks.resolve_model(value_network, obs_shape, 1, "value")
            else:
                value_network = None
            if config.normalize_returns:
                self.return_stats = RunningNormalization(clip=0.0, name="return_stats")
                self.return_stats.build((None,))
            self.policy = Policy(observation_space, self.head, policy_network, self.normalizer,
                                 value_network, self._return_scale)
            self.policy_variables = list(policy_network.trainable_variables) + list(
                self.head.trainable_variables)
            self.policy_optimizer = make_optimizer(config.optimizer, config.policy_learning_rate)
            self.policy_optimizer.build(self.policy_variables)
            self.value_variables = []
            self.value_optimizer = None
            if value_network is not None:
                self.value_variables = list(value_network.trainable_variables)
                self.value_optimizer = make_optimizer(config.optimizer, config.value_learning_rate)
                self.value_optimizer.build(self.value_variables)
            self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="updates")
            self.skipped_updates = tf.Variable(0, dtype=tf.int64, trainable=False,
                                               name="skipped_updates")
            # Set before each update by apply_schedules; a constant bonus stays a Python
            # float in the graph.
            self.entropy_coef = None
            if config.entropy_schedule != "constant":
                self.entropy_coef = tf.Variable(config.entropy_coef, dtype=tf.float32,
                                                trainable=False, name="entropy_coef")
        # Sampling stream for collection; its state is checkpointed with the rest.
        self.rng = tf.random.Generator.from_seed(0)
        self.seed_sampling(config.seed)
        self.batch_spec = batch_spec(config, observation_space, self.head)
        # autograph=False throughout: the graph code here is written with tf.cond and
        # tf.while_loop (Python control flow only branches on Python values), and
        # converting it cost 1.7 of the 2.3 s the compiled path took to trace (Keras
        # never converts a model's call either way).
        self._update_function = tf.function(self._update, input_signature=[self.batch_spec],
                                            jit_compile=config.jit_compile, autograph=False)
        self._update_graph = None
        obs_spec = tf.TensorSpec((None,) + tuple(observation_space.shape),
                                 observation_dtype(observation_space))
        self.collect_step = tf.function(self._collect_step, input_signature=[obs_spec],
                                        autograph=False)

    def update(self, batch: Batch) -> Dict[str, tf.Tensor]:
        """One REINFORCE update on ``batch`` (see the module docstring); its metrics.

        Called eagerly, it runs the update's traced graph on a batch of numpy arrays or
        tensors (each field converted once, the graph called directly: matching a call
        against a ``tf.function``'s signature costs about a quarter of a small update).
        Called while another ``tf.function`` is being traced (the compiled path fuses
        rollout and update), it adds the update to that graph.
        """
        if tf.inside_function():
            return self._update(batch)
        if self._update_graph is None:
            self._update_graph = self._update_function.get_concrete_function()
        return self._update_graph(Batch(*(
            tf.constant(x, spec.dtype) for x, spec in zip(batch, self.batch_spec))))

    @property
    def trace_count(self) -> int:
        """How many times the eager :meth:`update` has been traced (once, normally)."""
        return self._update_function.experimental_get_tracing_count()

    @property
    def scheduled(self) -> bool:
        """Whether a learning rate or the entropy bonus follows a schedule."""
        return "linear" in (self.config.lr_schedule, self.config.entropy_schedule)

    def apply_schedules(self, env_steps: int) -> None:
        """Sets the scheduled learning rates and entropy bonus for the next update.

        A pure function of ``env_steps`` (the env steps of all workers taken before the
        update's batch), which the loop checkpoints: a resumed run applies the same values.

        Args:
            env_steps: Env steps taken so far.
        """
        cfg = self.config
        if cfg.lr_schedule != "constant":
            factor = cfg.schedule_factor(cfg.lr_schedule, env_steps)
            self.policy_optimizer.learning_rate = cfg.policy_learning_rate * factor
            if self.value_optimizer is not None:
                self.value_optimizer.learning_rate = cfg.value_learning_rate * factor
        if self.entropy_coef is not None:
            self.entropy_coef.assign(
                cfg.entropy_coef * cfg.schedule_factor(cfg.entropy_schedule, env_steps))

    def seed_sampling(self, seed: int) -> None:
        """Restarts the stream :attr:`collect_step` samples actions from."""
        self.rng.reset_from_seed(seed + 104729)

    def _return_scale(self) -> tf.Tensor:
        if self.return_stats is None:
            return tf.ones([])
        return tf.sqrt(self.return_stats.variance + self.return_stats.epsilon)

    @property
    def has_baseline(self) -> bool:
        return self.policy.value_network is not None

    def _collect_step(self, observations):
        """(raw action, env action) sampled from the policy with the learner's stream."""
        seed = tf.cast(self.rng.make_seeds(1)[:, 0], tf.int32)
        return self.policy.sample(observations, seed)

    def _update(self, batch: Batch) -> Dict[str, tf.Tensor]:
        """One REINFORCE update. Runs as one graph; see the module docstring."""
        strategy = self.strategy
        gradients, metrics, rows = strategy.run(self._gradients, args=(batch,))
        # Every replica holds the same sums over the replicas now (see _gradients): the
        # update is applied once, in cross-replica context, so the clip sees the gradient
        # of the whole batch and every replica applies the same update.
        gradients, metrics = tf.nest.map_structure(
            lambda x: strategy.experimental_local_results(x)[0], (gradients, metrics))
        policy_grads = gradients[:len(self.policy_variables)]
        value_grads = gradients[len(self.policy_variables):]
        policy_norm = tf.linalg.global_norm(policy_grads)
        value_norm = tf.linalg.global_norm(value_grads) if value_grads else tf.zeros([])
        finite = (tf.math.is_finite(metrics["loss"]) & tf.math.is_finite(policy_norm)
                  & tf.math.is_finite(value_norm))
        if self.config.max_grad_norm > 0:
            policy_grads, _ = tf.clip_by_global_norm(
                policy_grads, self.config.max_grad_norm, policy_norm)
        value_max_norm = self.config.resolved_value_max_grad_norm
        if value_grads and value_max_norm > 0:
            value_grads, _ = tf.clip_by_global_norm(value_grads, value_max_norm, value_norm)

        def apply():
            self.policy_optimizer.apply(policy_grads, self.policy_variables)
            if value_grads:
                self.value_optimizer.apply(value_grads, self.value_variables)
            self.updates.assign_add(1)
            return tf.constant(0.0)

        def skip():
            self.skipped_updates.assign_add(1)
            return tf.constant(1.0)

        skipped = tf.cond(finite, apply, skip)

        # Statistics move after the gradient, which is thus taken for exactly the policy
        # that collected the batch; they see every replica's rows (one all-gather).
        if self.normalizer is not None or self.return_stats is not None:
            with tf.control_dependencies([skipped]):
                rows = strategy.gather(rows, axis=0)
                mask, target_returns = rows[:, -2], rows[:, -1]
                if self.normalizer is not None:
                    features = tf.reshape(rows[:, :-2], [-1, *self.normalizer.mean.shape])
                    self.normalizer.update(features, mask)
                if self.return_stats is not None:
                    self.return_stats.update(target_returns, mask)

        metrics.update(policy_grad_norm=policy_norm, value_grad_norm=value_norm, skipped=skipped)
        if self.scheduled:
            metrics.update(self._scheduled_values())
        return metrics

    def _scheduled_values(self) -> Dict[str, tf.Tensor]:
        """The learning rates and entropy bonus this update used."""
        values = {"policy_learning_rate": tf.identity(self.policy_optimizer.learning_rate)}
        if self.value_optimizer is not None:
            values["value_learning_rate"] = tf.identity(self.value_optimizer.learning_rate)
        values["entropy_coef"] = (tf.identity(self.entropy_coef) if self.entropy_coef is not None
                                  else tf.constant(self.config.entropy_coef, tf.float32))
        return values

    @staticmethod
    def _sum_replicas(x):
        """``x`` (a nest of tensors) summed over every replica, in one all-reduce."""
        return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, x)

    def _across_replicas(self, mask, weights, targets, predictions):
        """The statistics of all replicas' valid steps, from one all-reduce of sums.

        Args:
            mask, weights, targets: [T, B] this replica's valid steps, policy-gradient
                weights and return targets.
            predictions: [T, B] V(s_t), or None without a baseline.

        Returns:
            (this replica's share of the valid steps, the weights standardized over all
            replicas if ``normalize_advantages``, their standard deviation before, the
            explained variance or None).
        """
        valid = mask > 0
        m = tf.cast(mask, tf.float64)

        def moments(x):
            # float64 sums: the variance comes from E[x^2] - E[x]^2 in a single pass.
            x = tf.where(valid, tf.cast(x, tf.float64), tf.zeros_like(m))
            return [tf.reduce_sum(x * m), tf.reduce_sum(x * x * m)]

        local = [tf.reduce_sum(m)] + moments(weights)
        if predictions is not None:
            local += moments(targets) + moments(targets - predictions)
        total = self._sum_replicas(tf.stack(local))

        def variance(first, second):
            mean = tf.math.divide_no_nan(first, total[0])
            return mean, tf.maximum(tf.math.divide_no_nan(second, total[0]) - mean * mean, 0.0)

        share = tf.cast(tf.math.divide_no_nan(local[0], total[0]), tf.float32)
        mean, var = variance(total[1], total[2])
        var = tf.cast(var, tf.float32)
        if self.config.normalize_advantages:
            weights = (weights - tf.cast(mean, tf.float32)) * returns.inverse_std(
                var, std_floor=self.config.advantage_std_floor)
        explained = None
        if predictions is not None:
            explained = 1.0 - tf.cast(tf.math.divide_no_nan(
                variance(total[5], total[6])[1], variance(total[3], total[4])[1]), tf.float32)
        return share, weights, tf.sqrt(var), explained

    def _replica_rows(self, batch: Batch) -> Batch:
        """This replica's block of the worker's environments: [T, B / local replicas]."""
        index = (tf.distribute.get_replica_context().replica_id_in_sync_group
                 % self.local_replicas)
        per_replica = self.config.num_envs // self.local_replicas

        def rows(x):
            x = tf.reshape(x, [x.shape[0], self.local_replicas, per_replica] + x.shape[2:])
            return tf.gather(x, index, axis=1)
        return Batch(*(rows(x) for x in batch))

    def _gradients(self, batch: Batch):
        """Per-replica part of the update: returns, losses and their gradients.

        Returns:
            (gradients of the policy then the value variables, metrics, and the rows
            [N, features + 2] the running statistics are updated with: encoded
            observations, mask, return; empty without running statistics). With several
            replicas the gradients and metrics are already summed over them.
        """
        cfg = self.config
        if self.local_replicas > 1:
            batch = self._replica_rows(batch)
        steps, envs = batch.rewards.shape
        flat_obs = tf.reshape(batch.observations, [steps * envs] + batch.observations.shape[2:])
        flat_actions = tf.reshape(batch.actions, [steps * envs] + batch.actions.shape[2:])
        continues = 1.0 - tf.cast(batch.terminated | batch.truncated, tf.float32)
        mask = batch.mask
        scale = self._return_scale()
        replicated = self.strategy.num_replicas_in_sync > 1

        with tf.GradientTape() as tape:
            distribution = self.policy.distribution(flat_obs)
            log_probs = tf.reshape(distribution.log_prob(flat_actions), [steps, envs])
            entropy = tf.reshape(distribution.entropy(), [steps, envs])
            values = value_targets = None
            if self.has_baseline:
                values = tf.reshape(self.policy.normalized_value(flat_obs), [steps, envs])
                advantages, target_returns = returns.generalized_advantages(
                    batch.rewards, tf.stop_gradient(values) * scale, continues, batch.bootstrap,
                    cfg.gamma, cfg.gae_lambda)
                weights, value_targets = advantages / scale, target_returns / scale
            else:
                target_returns = returns.discounted_returns(
                    batch.rewards, continues, batch.bootstrap, cfg.gamma)
                weights = target_returns / scale
            if replicated:
                # Every loss term is a mean over this replica's valid steps; weighted by
                # the replica's share of all valid steps, the replicas' terms sum to the
                # mean over the whole batch (equal weights would not: episodes mode pads
                # unevenly). Normalization and metrics also see the whole batch.
                share, weights, weight_std, explained = self._across_replicas(
                    mask, weights, target_returns,
                    None if values is None else tf.stop_gradient(values) * scale)
            else:
                weight_std = tf.sqrt(_masked_variance(weights, mask))
                if cfg.normalize_advantages:
                    weights = returns.normalize(weights, mask,
                                                std_floor=cfg.advantage_std_floor)
            step_weights = (returns.step_discounts(batch.episode_steps, cfg.gamma)
                            if cfg.gamma_weighting else None)
            entropy_coef = cfg.entropy_coef if self.entropy_coef is None else self.entropy_coef
            info = losses.reinforce_loss(log_probs, entropy, weights, mask, entropy_coef,
                                         values, value_targets, step_weights)
            scaled_total = info.total * share if replicated else info.total

        variables = self.policy_variables + self.value_variables
        gradients = tape.gradient(scaled_total, variables)
        gradients = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                     for g, v in zip(gradients, variables)]
        metrics = {
            "loss": info.total,
            "policy_loss": info.policy,
            "value_loss": info.value,
            "entropy": info.entropy,
            # Before normalization, in return-scale units: what the floor compares with.
            "advantage_std": weight_std,
        }
        if self.has_baseline:
            metrics["explained_variance"] = explained if replicated else _explained_variance(
                tf.stop_gradient(values) * scale, target_returns, mask)
        metrics["valid_steps"] = tf.reduce_sum(mask)
        if replicated:
            # The whole batch's: losses are weighted means, the explained variance is
            # already the batch's (shares sum to 1), valid steps add up.
            metrics = {k: v if k == "valid_steps" else v * share for k, v in metrics.items()}
            gradients, metrics = self._sum_replicas((gradients, metrics))
        rows = tf.zeros([0])
        if self.normalizer is not None or self.return_stats is not None:
            features = networks.encode_observations(self.policy.observation_space, flat_obs)
            rows = tf.concat([tf.reshape(features, [steps * envs, -1]),
                              tf.reshape(mask, [-1, 1]), tf.reshape(target_returns, [-1, 1])],
                             axis=1)
        return gradients, metrics, rows


def _masked_variance(x, mask) -> tf.Tensor:
    mean = returns.masked_mean(x, mask)
    return returns.masked_mean(tf.square(x - mean), mask)


def _explained_variance(predictions, targets, mask) -> tf.Tensor:
    """1 - Var[target - prediction] / Var[target] over valid steps."""
    return 1.0 - tf.math.divide_no_nan(_masked_variance(targets - predictions, mask),
                                       _masked_variance(targets, mask))
