"""Peak memory (RSS) over a long run, to catch steady growth.

    python -m benchmarks.memory --total_steps=1000000 --checkpoints=250000,1000000

Trains CartPole-v1 (or --env_id) and prints the process's peak resident set size and
the train step's trace count at each checkpoint, one JSON line each. Steady growth
between 250k and 1M steps would show a leak (a retrace per update, a growing buffer, a
history kept in the graph); the trace count must stay at 1.
"""

from __future__ import annotations

import json
import os
import resource

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from pg_keras.cli import common as cli  # noqa: E402

cli.require_tensorflow_backend("memory")

import pg_keras  # noqa: E402

# This tool's flags: its own, never absl's global registry.
FLAGS = flags.FlagValues()
flags.DEFINE_string("env_id", "CartPole-v1", "Gymnasium env id.", flag_values=FLAGS)
flags.DEFINE_integer("total_steps", 1_000_000, "Env steps.", flag_values=FLAGS)
flags.DEFINE_list("checkpoints", ["250000", "1000000"], "Env steps at which to report.",
                  flag_values=FLAGS)
flags.DEFINE_string("backend", "gymnasium", "gymnasium or compiled.", flag_values=FLAGS)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main(argv):
    marks = sorted(int(c) for c in FLAGS.checkpoints)
    config = pg_keras.Config(env_id=FLAGS.env_id, total_steps=FLAGS.total_steps, eval_every=0,
                             eval_episodes=5, backend=FLAGS.backend)
    state = {"next": 0, "learner": None}

    def on_update(record):
        while state["next"] < len(marks) and record["env_steps"] >= marks[state["next"]]:
            print(json.dumps({"env_steps": int(record["env_steps"]),
                              "peak_rss_mib": round(peak_rss_mib(), 1),
                              "wall_seconds": round(record["wall_seconds"], 1)}), flush=True)
            state["next"] += 1

    result = pg_keras.train(config, callbacks=[pg_keras.LambdaCallback(on_update_end=on_update)])
    traces = result.learner.trace_count
    print(json.dumps({"update_traces": traces, "history_records": len(result.history),
                      "cpu_cores": os.cpu_count()}))


if __name__ == "__main__":
    cli.run("memory", FLAGS, main, usage=__doc__, bad_input=(pg_keras.InputError,))
