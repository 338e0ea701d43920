"""pg_keras: REINFORCE and REINFORCE with a value baseline, in Keras 3 and TensorFlow Probability.

    import pg_keras
    config = pg_keras.Config(env_id="CartPole-v1", total_steps=50_000)
    result = pg_keras.train(config, callbacks=[pg_keras.ProgressLogger()])
    actions, _ = result.policy.predict(observations)
"""

import importlib as _importlib
import os as _os

_backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        f"pg_keras needs the TensorFlow backend of Keras; received KERAS_BACKEND={_backend!r}. "
        "Unset it or set KERAS_BACKEND=tensorflow.")

from pg_keras.config import Config, InputError, TrainingError  # noqa: E402  (no TensorFlow)

__version__ = "0.1.0"

# Imported on first use: `import pg_keras` (and the launchers' flag checks) must not pay
# for importing TensorFlow.
_LAZY = {
    "export_policy": "pg_keras.export", "load_policy": "pg_keras.export",
    "Policy": "pg_keras.policy", "build_learner": "pg_keras.learner",
    "Collector": "pg_keras.collect", "evaluate": "pg_keras.collect",
    "make_vector_env": "pg_keras.collect", "make_strategy": "pg_keras.distributed",
    "Evaluation": "pg_keras.run_dir", "Run": "pg_keras.training",
    "TrainResult": "pg_keras.training", "train": "pg_keras.training",
    **{name: "pg_keras.callbacks" for name in (
        "Callback", "Checkpointing", "HandleSignals", "LambdaCallback", "ProgressLogger",
        "StopWhenSolved")},
}
# The modules stay reachable as attributes (``pg_keras.heads.make_head``), outside __all__.
_SUBMODULES = ("batch", "builder", "callbacks", "checkpoint", "collect", "convert",
               "distributed", "env_limits", "envs", "export", "faults", "heads", "layers",
               "learner", "losses", "networks", "normalization", "paths", "policy",
               "portable_random", "recurrent", "returns", "reuse", "run_dir", "schedules",
               "seeding", "space_json", "spaces", "training")

__all__ = [
    "Callback", "Checkpointing", "Collector", "Config", "Evaluation", "HandleSignals",
    "InputError", "LambdaCallback", "Policy", "ProgressLogger", "Run", "StopWhenSolved", "TrainResult",
    "TrainingError", "build_learner", "evaluate", "export_policy", "load_policy",
    "make_strategy", "make_vector_env", "train",
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = _importlib.import_module(f"pg_keras.{name}")
    else:
        raise AttributeError(f"module 'pg_keras' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
