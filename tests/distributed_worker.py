"""One worker of a test group: ``experiments.train`` as it runs, plus a record of weights.

    python tests/distributed_worker.py RECORD_JSON [experiments.train flags...]

Runs the launcher unchanged, with a ``Learner`` that notes after every update a digest of
every variable the update changes and a digest of the batch it was given; the record goes
to RECORD_JSON when the launcher returns. ``TF_CONFIG`` names the worker.
"""

import hashlib
import json
import os
import runpy
import sys

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # experiments

import pg_keras.training  # noqa: E402

RECORD = sys.argv.pop(1)
records = []


def _digest(arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


_build_learner = pg_keras.training.build_learner


def recording_build_learner(*args, **kwargs):
    learner = _build_learner(*args, **kwargs)
    update = learner.update

    def recorded_update(batch, env_steps=0):
        metrics = update(batch, env_steps)
        variables = (learner.policy_variables + learner.value_variables
                     + learner.policy_optimizer.variables + learner.value_optimizer.variables)
        records.append({"weights": _digest(v.numpy() for v in variables),
                        "batch": _digest(np.asarray(x) for x in tf.nest.flatten(batch)),
                        "updates": int(learner.updates.numpy())})
        return metrics
    learner.update = recorded_update
    return learner


pg_keras.training.build_learner = recording_build_learner
try:
    runpy.run_module("experiments.train", run_name="__main__")
finally:
    with open(RECORD, "w") as f:
        json.dump(records, f)
