"""Throughput of a worker group on this host: 1 worker against N, all on 127.0.0.1.

    python -m benchmarks.scaling --workers=1,2 --num_envs=8
    python -m benchmarks.scaling --workers=2 --train_flags=--env_id=Acrobot-v1

Starts ``python -m experiments.train --strategy=multi_worker`` once per worker, with a
``TF_CONFIG`` naming free ports on 127.0.0.1 (the group of one runs the default strategy),
waits for the group, and prints one JSON line per group size: env steps per second from
the chief's ``summary.json`` (all workers' steps over the training wall time), updates,
and the effective batch. The runs go to a temporary directory and are deleted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import flags

from pg_keras.cli import common as cli

# This tool's flags: its own, never absl's global registry.
FLAGS = flags.FlagValues()
flags.DEFINE_list("workers", ["1", "2"], "Group sizes to measure.", flag_values=FLAGS)
flags.DEFINE_integer("num_envs", 8, "Environments per worker.", flag_values=FLAGS)
flags.DEFINE_integer("total_steps", 40_000, "Env steps of each run, summed over workers.",
                     flag_values=FLAGS)
flags.DEFINE_string("flagfile_for_train", "experiments/configs/cartpole.cfg",
                    "The flagfile every worker trains with.", flag_values=FLAGS)
flags.DEFINE_list("train_flags", [], "More flags for experiments.train (comma-separated).",
                  flag_values=FLAGS)


def run_group(workers: int, root: str, extra) -> dict:
    """Trains with ``workers`` processes on this host; returns the chief's summary."""
    flags_ = [f"--flagfile={FLAGS.flagfile_for_train}", f"--num_envs={FLAGS.num_envs}",
              f"--total_steps={FLAGS.total_steps}", "--eval_every=0", "--noexport", "--quiet",
              f"--root_dir={root}", *extra]
    if workers == 1:
        commands = [({}, flags_)]
    else:
        ports = cli.free_ports(workers)
        cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
        commands = [({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {
            "type": "worker", "index": i}})}, flags_ + ["--strategy=multi_worker"])
            for i in range(workers)]
    processes = [subprocess.Popen([sys.executable, "-m", "experiments.train", *args],
                                  env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
                 for env, args in commands]
    errors = [p.communicate()[1] for p in processes]
    for process, error in zip(processes, errors):
        if process.returncode:
            cli.fail("scaling", f"a worker of the group of {workers} failed: "
                                f"{error.strip().splitlines()[-1] if error.strip() else ''}", 1)
    with open(os.path.join(root, "summary.json")) as f:
        return json.load(f)


def main(argv):
    extra = FLAGS.train_flags
    try:
        sizes = [int(w) for w in FLAGS.workers]
    except ValueError:
        sizes = [0]
    if any(w < 1 for w in sizes):
        cli.fail("scaling", f"workers must be positive integers; received "
                            f"workers={','.join(FLAGS.workers)}")
    with tempfile.TemporaryDirectory(prefix="pg_keras-scaling-") as scratch:
        for workers in sizes:
            summary = run_group(workers, os.path.join(scratch, f"workers{workers}"), extra)
            print(json.dumps({
                "workers": workers, "num_envs_per_worker": FLAGS.num_envs,
                "env_steps": summary["env_steps"], "updates": summary["updates"],
                "steps_per_second": round(summary["steps_per_second"]),
                "cpu_cores": os.cpu_count(), "host": "one host, 127.0.0.1"}), flush=True)


if __name__ == "__main__":
    cli.run("scaling", FLAGS, main, usage=__doc__, tensorflow=False)
