"""Today's update, with the sample-reuse options at their defaults, reaches the weights the
REINFORCE update of the reference commit reached from the same seed.

The reference (fixtures/update_reference/weights.npz) was written by that directory's
make_reference.py from the code before the update gained epochs, minibatches and the clip;
the runs cover both collection paths, episodes mode, normalization with a schedule, and a
recurrent policy.
"""

import os
import sys

import numpy as np
import pytest

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "update_reference")
sys.path.insert(0, FIXTURE)

import make_reference  # noqa: E402


def _load(name: str) -> dict:
    with np.load(os.path.join(FIXTURE, name)) as arrays:
        return dict(arrays)


@pytest.fixture(scope="module")
def reference():
    return _load("weights.npz")


@pytest.fixture(scope="module")
def reference_returns():
    return _load("evaluations.npz")


@pytest.mark.filterwarnings("ignore:collect_mode='episodes'")
@pytest.mark.parametrize("name", sorted(make_reference.RUNS))
def test_the_default_update_reproduces_the_reference_weights_and_evaluations(
        reference, reference_returns, name):
    fields = make_reference.RUNS[name]
    learner = make_reference.trained(fields)
    weights = make_reference.weights(name, learner)
    assert sorted(weights) == sorted(k for k in reference if k.startswith(name + "/"))
    for key, value in weights.items():
        # Same arithmetic on the same kind of CPU is exact; another CPU's kernels may
        # round differently in the last bits, which a changed update would far exceed.
        np.testing.assert_allclose(value, reference[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # The policy acts as the reference's did: greedy and sampled episodes in gymnasium
    # (evaluations.npz was written from the code before the policy's graph functions
    # took an always-present mask and state).
    for key, returns in make_reference.evaluations(name, learner, fields["env_id"]).items():
        np.testing.assert_allclose(returns, reference_returns[key], rtol=1e-5, err_msg=key)
