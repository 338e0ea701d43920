"""Train a REINFORCE policy from the command line.

    python -m experiments.train --env_id=CartPole-v1 --total_steps=50000
    python -m experiments.train --flagfile=experiments/configs/cartpole.cfg

Every pg_keras.Config field is a flag (``--helpfull`` lists them).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from experiments.config_flags import config_from_flags, define_config_flags  # noqa: E402

define_config_flags()
flags.DEFINE_bool("quiet", False, "Print only the final result.")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = config_from_flags()
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    import pg_keras  # Imported late: TensorFlow's start-up is slow; bad flags fail fast.

    result = pg_keras.train(config, verbose=not FLAGS.quiet)
    final = result.evaluations[-1]
    solved = f"solved at {result.solved_at} env steps" if result.solved_at else "not solved"
    print(f"final evaluation return over {config.eval_episodes} episodes: "
          f"{final.mean_return:.2f} +- {final.std_return:.2f} ({config.env_id}, "
          f"{result.env_steps} env steps, {result.wall_seconds:.1f} s, {solved})")


if __name__ == "__main__":
    app.run(main)
