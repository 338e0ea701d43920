"""The gymnasium collection names under their former module; they live in pg_keras.collect."""

from pg_keras.collect.evaluation import evaluate
from pg_keras.collect.gym_envs import make_vector_env, split_env_id
from pg_keras.collect.gymnasium import Collector
from pg_keras.collect.nonfinite import NonFiniteError
from pg_keras.collect.numpy_policy import NumpyPolicy

__all__ = ["Collector", "NonFiniteError", "NumpyPolicy", "evaluate", "make_vector_env",
           "split_env_id"]
