"""The SavedModel of a recurrent policy: functions that take and return its state.

A policy whose network declares ``state_sizes`` (pg_keras.recurrent) is exported with these
signatures (``saved_model_cli show --all`` lists them), the state tensors named
``state_0``, ``state_1``, ... in the order of ``state_sizes`` (an LSTM's h then c):

    serving_default  observations, state_0.. -> {"actions", "state_0"..}  greedy action
    sample           observations, seed [2], state_0..
                                            -> {"actions", "log_probs", "state_0"..}
    initial_state    batch_size (int32 scalar) -> {"state_0"..}: zeros, an episode's start

Carry the returned state into the next call, and set an env's rows back to
``initial_state`` (zeros) when its episode ends. The Python callables on the loaded
object are ``greedy(observations, state)``, ``sample(observations, seed, state)`` (``state``
a dict by name) and ``initial_state(batch_size)``. Observations are checked as in
pg_keras.export (shape, finiteness); the masked, distribution and value signatures of a
feed-forward export are not offered for a recurrent one.
"""

from __future__ import annotations

from typing import Dict, List

import tensorflow as tf

from pg_keras.policy import Policy


def is_recurrent(policy: Policy) -> bool:
    """Whether ``policy`` acts with a state (its policy network is recurrent)."""
    return bool(policy.state_sizes["policy"])


def state_names(policy: Policy) -> List[str]:
    """``state_0``, ``state_1``, ...: the exported names of the policy's state tensors."""
    return [f"state_{i}" for i in range(len(policy.state_sizes["policy"]))]


def build_module(policy: Policy, inputs, check, cast, specs):
    """The tf.Module to save, its signatures and its traced callables (see the module
    docstring); pg_keras.export makes the module track the variables they read.

    Args:
        policy: A recurrent policy.
        inputs: pg_keras.export's description of the observation inputs.
        check: Its observation check (shape and finiteness).
        cast: Its cast of observations to the policy's dtype.
        specs: Its TensorSpec builder, ``specs(inputs, shape_fn, dtype_fn)``.
    """
    head, names = policy.head, state_names(policy)
    state_specs = {name: tf.TensorSpec([None, n], tf.float32, name=name)
                   for name, n in zip(names, policy.state_sizes["policy"])}

    def step(observations, state, seed=None):
        observations = check(cast(observations, inputs))
        carried = tuple(tf.convert_to_tensor(state[name], tf.float32) for name in names)
        full = {"policy": carried, "value": (), "reset": tf.zeros(tf.shape(carried[0])[:1])}
        params, _, following = policy.step(observations, full, value=False)
        outputs = dict(zip(names, following["policy"]))
        if seed is None:
            outputs["actions"] = head.to_env(head.greedy(params))
        else:
            raw = head.portable_sample(params, tf.cast(seed, tf.int32))
            outputs.update(actions=head.to_env(raw), log_probs=head.portable_log_prob(params, raw))
        return outputs

    def initial_state(batch_size):
        return {name: tf.zeros([batch_size, n]) for name, n in
                zip(names, policy.state_sizes["policy"])}

    batch = specs(inputs, lambda i: (None,) + i.shape, lambda i: i.signature_dtype)
    seed = tf.TensorSpec([2], tf.int32, name="seed")
    size = tf.TensorSpec([], tf.int32, name="batch_size")
    module = tf.Module(name="exported_recurrent_policy")
    module.greedy = tf.function(lambda observations, state: step(observations, state),
                                input_signature=[batch, state_specs])
    module.sample = tf.function(lambda observations, seed, state: step(observations, state, seed),
                                input_signature=[batch, seed, state_specs])
    module.initial_state = tf.function(initial_state, input_signature=[size])
    signatures: Dict[str, object] = {
        "serving_default": _flat_signature(step, batch, state_specs, None),
        "sample": _flat_signature(step, batch, state_specs, seed),
        "initial_state": module.initial_state.get_concrete_function(),
    }
    concrete = [module.greedy.get_concrete_function(), module.sample.get_concrete_function()]
    return module, signatures, concrete


def _flat_signature(step, batch, state_specs, seed):
    """A concrete function whose inputs are flat and named: observations, (seed), state_i."""
    names = list(state_specs)
    extra = [] if seed is None else [seed]

    def call(observations, *rest):
        state = dict(zip(names, rest[len(extra):]))
        return step(observations, state, *rest[:len(extra)])

    specs = [batch] + extra + [state_specs[name] for name in names]
    return tf.function(call, input_signature=specs).get_concrete_function()
