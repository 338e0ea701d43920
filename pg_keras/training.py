"""The training loop: collect -> learn -> log -> evaluate."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, List, Optional

import gymnasium as gym
import keras
import numpy as np
import tensorflow as tf

from pg_keras.config import Config
from pg_keras.learner import Learner, Policy
from pg_keras.networks import ModelOrFactory
from pg_keras.rollout import Collector, evaluate, make_vector_env, split_env_id


@dataclasses.dataclass
class Evaluation:
    """Greedy evaluation at one point of training."""

    env_steps: int
    mean_return: float
    std_return: float


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        policy: The trained policy (``policy.act(observations)``).
        learner: Models, optimizers and the update, for further training or inspection.
        history: One record per update: env steps, episode returns, losses, gradient norms.
        evaluations: Every evaluation, the final one last.
        solved_at: Env steps at the first evaluation whose mean reached the env's
            ``reward_threshold``, or None.
        env_steps: Environment steps taken.
        wall_seconds: Duration of the loop.
    """

    policy: Policy
    learner: Learner
    history: List[Dict[str, float]]
    evaluations: List[Evaluation]
    solved_at: Optional[int]
    env_steps: int
    wall_seconds: float

    @property
    def final_return(self) -> float:
        """Mean return of the last evaluation."""
        return self.evaluations[-1].mean_return


def reward_threshold(env_id: str) -> Optional[float]:
    """The registered ``reward_threshold`` of an env id, or None."""
    return gym.spec(split_env_id(env_id)).reward_threshold


def train(config: Config, policy_network: Optional[ModelOrFactory] = None,
          value_network: Optional[ModelOrFactory] = None,
          on_update: Optional[Callable[[Dict[str, float]], None]] = None,
          verbose: bool = False) -> TrainResult:
    """Trains a policy with REINFORCE (with a value baseline unless ``config.baseline`` is off).

    Args:
        config: Hyperparameters.
        policy_network: Your own policy ``keras.Model`` or a factory for one (see
            ``pg_keras.networks`` for the contract); default: an MLP.
        value_network: Same for the value model.
        on_update: Called with each update's record.
        verbose: Print a line at each evaluation.

    Returns:
        TrainResult.
    """
    keras.utils.set_random_seed(config.seed)
    threshold = reward_threshold(config.env_id)
    envs = make_vector_env(config.env_id, config.num_envs)
    try:
        learner = Learner(config, envs.single_observation_space, envs.single_action_space,
                          policy_network, value_network)
        collector = Collector(envs, learner, config)
        history: List[Dict[str, float]] = []
        evaluations: List[Evaluation] = []
        solved_at = None
        next_eval = config.eval_every
        start = time.perf_counter()

        def run_evaluation():
            nonlocal solved_at
            returns = evaluate(learner.policy, config.env_id, config.eval_episodes,
                               seed=config.seed + 1_000_003 + len(evaluations))
            evaluation = Evaluation(collector.total_steps, float(np.mean(returns)),
                                    float(np.std(returns)))
            evaluations.append(evaluation)
            if solved_at is None and threshold is not None and evaluation.mean_return >= threshold:
                solved_at = evaluation.env_steps
            if verbose:
                print(f"env steps {evaluation.env_steps:>9d}  eval return "
                      f"{evaluation.mean_return:9.2f} +- {evaluation.std_return:.2f}", flush=True)

        while collector.total_steps < config.total_steps:
            batch, env_steps = collector.collect()
            metrics = learner.train_step(batch)
            episode_returns, episode_lengths = collector.pop_episodes()
            record = {k: float(v) for k, v in metrics.items()}
            record.update(env_steps=collector.total_steps,
                          wall_seconds=time.perf_counter() - start,
                          episodes=len(episode_returns))
            if episode_returns:
                record.update(return_mean=float(np.mean(episode_returns)),
                              return_min=float(np.min(episode_returns)),
                              return_max=float(np.max(episode_returns)),
                              length_mean=float(np.mean(episode_lengths)))
            history.append(record)
            if on_update is not None:
                on_update(record)
            if config.eval_every and collector.total_steps >= next_eval:
                run_evaluation()
                next_eval = (collector.total_steps // config.eval_every + 1) * config.eval_every
        if not evaluations or evaluations[-1].env_steps != collector.total_steps:
            run_evaluation()
        return TrainResult(policy=learner.policy, learner=learner, history=history,
                           evaluations=evaluations, solved_at=solved_at,
                           env_steps=collector.total_steps,
                           wall_seconds=time.perf_counter() - start)
    finally:
        envs.close()
