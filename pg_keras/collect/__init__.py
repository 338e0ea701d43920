"""Collection: experience in, time-major batches out, behind one protocol.

    collector = Collector(envs, policy, config)     collector.collect() -> (Batch, env steps)

Collectors know a policy, never the learner: the training loop passes each batch to
``Learner.update``.

Modules:
    protocol       :class:`CollectorProtocol`, what the training loop calls
    gymnasium      the gymnasium collectors, :class:`StepsCollector` and
                   :class:`EpisodesCollector` (``Collector(envs, policy, config)`` picks)
    compiled       :class:`CompiledCollector`, a graph-native env in a ``tf.while_loop``
    actor          :class:`~.actor.Actor`, the gymnasium collectors' policy side: the NumPy
                   twin or TensorFlow acts, a recurrent policy's carried state
    masks          :class:`~.masks.ActionMasks`, an env's action masks between steps
    numpy_policy   :class:`NumpyPolicy`, the optional fast actor of the gymnasium path
    episode_stats  running and finished episodes' returns and lengths
    nonfinite      the per-step check for NaN and inf (stop or drop)
    gym_envs       every gymnasium env a run makes: env ids, wrappers, env kwargs,
                   same-step autoreset vector envs
    evaluation     :func:`evaluate`, whole episodes of a policy
"""

from pg_keras.collect.compiled import CompiledCollector, make_compiled_env
from pg_keras.collect.episode_stats import EpisodeStats
from pg_keras.collect.evaluation import evaluate
from pg_keras.collect.gym_envs import (EnvOptions, check_env, make_env, make_vector_env,
                                       split_env_id)
from pg_keras.collect.gymnasium import Collector, EpisodesCollector, StepsCollector
from pg_keras.collect.nonfinite import NonFiniteError, NonFiniteGuard
from pg_keras.collect.numpy_policy import NumpyPolicy
from pg_keras.collect.protocol import CollectorProtocol

__all__ = [
    "Collector", "CollectorProtocol", "CompiledCollector", "EnvOptions", "EpisodeStats",
    "EpisodesCollector", "check_env", "make_env",
    "NonFiniteError", "NonFiniteGuard", "NumpyPolicy", "StepsCollector", "evaluate",
    "make_compiled_env", "make_vector_env", "split_env_id",
]
