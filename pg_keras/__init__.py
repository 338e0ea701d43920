"""pg_keras: REINFORCE and REINFORCE with a value baseline, in Keras 3 and TensorFlow Probability.

    import pg_keras
    config = pg_keras.Config(env_id="CartPole-v1", total_steps=50_000)
    result = pg_keras.train(config)
    actions = result.policy.act(observations)
"""

import os as _os

_backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        f"pg_keras needs the TensorFlow backend of Keras; received KERAS_BACKEND={_backend!r}. "
        "Unset it or set KERAS_BACKEND=tensorflow.")

from pg_keras.config import Config, InputError
from pg_keras.heads import ActionHead, make_head
from pg_keras.export import export_policy, load_policy
from pg_keras.learner import Batch, Learner, Policy
from pg_keras.losses import LossInfo
from pg_keras.networks import mlp
from pg_keras.normalization import RunningNormalization
from pg_keras.rollout import Collector, evaluate, make_vector_env
from pg_keras.training import Evaluation, TrainingError, TrainResult, train
from pg_keras import distributed
from pg_keras.distributed import make_strategy

__version__ = "0.1.0"

__all__ = [
    "ActionHead", "Batch", "Collector", "Config", "Evaluation", "InputError", "Learner",
    "LossInfo", "Policy", "TrainingError",
    "RunningNormalization", "TrainResult", "evaluate", "export_policy", "load_policy",
    "distributed", "make_head", "make_strategy", "make_vector_env", "mlp", "train",
]
