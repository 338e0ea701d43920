"""Measure how reliably and how fast a config solves its env, over several seeds.

    python -m experiments.solve_rate --flagfile=experiments/configs/cartpole.cfg --seeds=0,1,2,3,4
    python -m experiments.solve_rate --env_id=Pendulum-v1 --total_steps=1000000 --target=-400

The protocol: for each seed, train for the full ``total_steps`` (never stopped early),
evaluating the greedy policy every ``eval_every`` env steps over ``eval_episodes`` episodes.
A seed is solved at the env steps of its first evaluation whose mean return is at least
``--target`` (default: the env's registered ``reward_threshold``).

Prints one JSON line per seed, then one summary JSON line:

    {"seed": 0, "solved_at": 20000, "best_eval": 500.0, "final_eval": 500.0, "env_steps": 50176,
     "wall_seconds": 61.2, "steps_per_second": 820.0, "evaluations": [[10240, 187.3], ...]}
    {"summary": true, "solved": 5, "seeds": 5, "solved_fraction": "5/5",
     "median_solved_at": 20000, "median_steps_per_second": 815.0, "target": 475.0, ...}

``median_solved_at`` counts unsolved seeds as infinitely late, so it is null when half or
more of the seeds are unsolved (the median is then infinite). Every pg_keras.Config field
is a flag (``--helpfull`` lists them); ``--seed`` is ignored in favour of ``--seeds``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from pg_keras.cli import common as cli  # noqa: E402

cli.require_tensorflow_backend("solve_rate")

import pg_keras  # noqa: E402  (TensorFlow is imported once the flags are checked)
from pg_keras.cli.config_flags import config_from_flags, define_config_flags  # noqa: E402

# This tool's flags: its own, never absl's global registry.
FLAGS = flags.FlagValues()
define_config_flags(FLAGS)
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds to train with, one run each.",
                  flag_values=FLAGS)
flags.DEFINE_float("target", None, "Mean evaluation return that counts as solved; default: "
                   "the env's registered reward_threshold (required where it has none).",
                   flag_values=FLAGS)
flags.DEFINE_bool("verbose", False, "Print a line at each evaluation while training.",
                  flag_values=FLAGS)
flags.DEFINE_string("output", None, "Also append the JSON lines to this file.",
                    flag_values=FLAGS)


def summarize(rows, target: float) -> dict:
    """The summary line of per-seed rows (as printed)."""
    solve_steps = [math.inf if r["solved_at"] is None else r["solved_at"] for r in rows]
    median_solve = statistics.median(solve_steps)
    solved = sum(r["solved_at"] is not None for r in rows)
    return {
        "summary": True,
        "solved": solved,
        "seeds": len(rows),
        "solved_fraction": f"{solved}/{len(rows)}",
        "median_solved_at": None if math.isinf(median_solve) else median_solve,
        "median_steps_per_second": round(statistics.median(r["steps_per_second"] for r in rows), 1),
        "median_best_eval": statistics.median(r["best_eval"] for r in rows),
        "median_final_eval": statistics.median(r["final_eval"] for r in rows),
        "total_wall_seconds": round(sum(r["wall_seconds"] for r in rows), 1),
        "target": target,
    }


def checked_flags():
    """The seeds and the config of the flags (raises InputError); no TensorFlow needed."""
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise pg_keras.InputError(f"seeds must be comma-separated non-negative integers; "
                                  f"received --seeds={','.join(FLAGS.seeds)}") from None
    if not seeds:
        raise pg_keras.InputError("seeds must name at least one seed; received --seeds=''")
    if FLAGS.target is not None and not math.isfinite(FLAGS.target):
        raise pg_keras.InputError(f"target must be a finite number (or left out for the env's "
                                  f"reward_threshold); received --target={FLAGS.target}")
    config = config_from_flags(FLAGS)
    configs = [config.replace(seed=seed) for seed in seeds]
    if config.eval_every == 0:
        raise pg_keras.InputError("the protocol evaluates during training; received "
                                  "--eval_every=0")
    return config, configs


def main(argv):
    from pg_keras.training import reward_threshold

    config, configs = checked_flags()
    target = FLAGS.target
    if target is None:
        target = reward_threshold(config.env_id)
        if target is None:
            raise pg_keras.InputError(f"{config.env_id} has no registered reward_threshold; "
                                      "pass --target")

    def emit(row):
        line = json.dumps(row)
        print(line, flush=True)
        if FLAGS.output:
            with open(FLAGS.output, "a") as f:
                f.write(line + "\n")

    rows = []
    for seed_config in configs:
        start = time.perf_counter()
        result = pg_keras.train(seed_config, callbacks=[pg_keras.ProgressLogger(bar=False)]
                                if FLAGS.verbose else [])
        wall = time.perf_counter() - start
        if result.interrupted:
            # A stopped run's last evaluation is not its final one: record nothing for it,
            # and stop the sweep as the signal asked.
            print(f"seed {seed_config.seed} stopped by {result.interrupted} at "
                  f"{result.env_steps} env steps; not recorded", flush=True)
            return 130 if result.interrupted == "SIGINT" else 143
        means = [e.mean_return for e in result.evaluations]
        row = {
            "seed": seed_config.seed,
            "solved_at": next((e.env_steps for e in result.evaluations
                               if e.mean_return >= target), None),
            "best_eval": round(max(means), 2),
            "final_eval": round(means[-1], 2),
            "env_steps": result.env_steps,
            "wall_seconds": round(wall, 1),
            "steps_per_second": round(result.env_steps / wall, 1),
            "evaluations": [[e.env_steps, round(e.mean_return, 1)] for e in result.evaluations],
        }
        rows.append(row)
        emit(row)
    emit(summarize(rows, target))


if __name__ == "__main__":
    cli.run("solve_rate", FLAGS, main, usage=__doc__, bad_input=(pg_keras.InputError,),
            check=checked_flags)
