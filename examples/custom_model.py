"""Bring your own Keras model: a runnable example, and factories for the launchers.

    python -m examples.custom_model --total_steps=50000 --export_dir=/tmp/custom_policy
    python -m experiments.train --flagfile=experiments/configs/cartpole.cfg \
        --policy_network=examples.custom_model:policy \
        --value_network=examples.custom_model:value

Any ``keras.Model`` can be the policy or the value network: it takes a float32 batch of
observations ``[B, *obs_shape]`` and returns ``[B, output_units]`` (policy) or ``[B]`` /
``[B, 1]`` (value). Passing a factory ``(observation_shape, output_units) -> keras.Model``
spares you the sizes. Here both networks are a small residual MLP with layer norm,
written as a subclassed model; the trained policy is exported like any other. The
factories :func:`policy` and :func:`value` are importable by name, so the launchers take
them (``--policy_network=examples.custom_model:policy``) and the run directory records
them: resuming, exporting and evaluating the run need nothing more. Importing this module
defines no flags.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags, logging  # noqa: E402

from pg_keras.cli import common as cli  # noqa: E402

if __name__ == "__main__":  # a program: TensorFlow starts quietly, before keras needs it
    cli.start_tensorflow(show_logs=os.environ.get(cli.TF_LOGS_ENV, "") not in ("", "0"))

import keras  # noqa: E402

import pg_keras  # noqa: E402

# The example's flags: its own, never absl's global registry.
FLAGS = flags.FlagValues()


def _define_flags() -> None:
    flags.DEFINE_string("env_id", "CartPole-v1", "Gymnasium env id.", flag_values=FLAGS)
    flags.DEFINE_integer("total_steps", 50_000, "Env steps to train for.", flag_values=FLAGS)
    flags.DEFINE_integer("seed", 0, "Seed.", flag_values=FLAGS)
    flags.DEFINE_string("export_dir", None, "Export the policy here (optional).",
                        flag_values=FLAGS)


@keras.saving.register_keras_serializable(package="examples")
class ResidualMLP(keras.Model):
    """x -> Dense -> [LayerNorm -> Dense(relu) -> Dense, added back] -> Dense(output_units)."""

    def __init__(self, output_units: int, width: int = 64, output_gain: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.output_units, self.width, self.output_gain = output_units, width, output_gain
        self.embed = keras.layers.Dense(width)
        self.norm = keras.layers.LayerNormalization()
        self.hidden = keras.layers.Dense(width, activation="relu")
        self.back = keras.layers.Dense(width, kernel_initializer="zeros")
        self.out = keras.layers.Dense(
            output_units, kernel_initializer=keras.initializers.Orthogonal(output_gain))

    def call(self, x):
        h = self.embed(x)
        h = h + self.back(self.hidden(self.norm(h)))
        return self.out(keras.activations.tanh(h))

    def get_config(self):
        return {**super().get_config(), "output_units": self.output_units, "width": self.width,
                "output_gain": self.output_gain}


def policy(observation_shape, output_units: int) -> keras.Model:
    """The policy network: a small output gain starts the policy near uniform."""
    return ResidualMLP(output_units, output_gain=0.01)


def value(observation_shape, output_units: int) -> keras.Model:
    """The value network."""
    return ResidualMLP(output_units)


def main(argv):
    logging.set_verbosity(logging.WARNING)
    # Config's defaults for everything else: the residual model is the only change.
    config = pg_keras.Config(env_id=FLAGS.env_id, total_steps=FLAGS.total_steps, seed=FLAGS.seed)
    result = pg_keras.train(config, policy_network=policy, value_network=value,
                            callbacks=[pg_keras.ProgressLogger(bar=False)])
    print(f"final evaluation return: {result.final_return:.2f}")
    if FLAGS.export_dir:
        pg_keras.export_policy(result.policy, FLAGS.export_dir, config=result.learner.config,
                               overwrite=True)
        print(f"SavedModel: {FLAGS.export_dir}")


if __name__ == "__main__":
    _define_flags()
    cli.run("custom_model", FLAGS, main, usage=__doc__, bad_input=(pg_keras.InputError,),
            tensorflow=False)
