"""Train a REINFORCE policy from the command line.

    pg-keras-train --flagfile=experiments/configs/cartpole.cfg
    pg-keras-train --env_id=Acrobot-v1 --total_steps=500000 --root_dir=runs/acrobot

Every pg_keras.Config field is a flag (``--helpfull`` lists them). The run directory
(``--root_dir``) holds the config, metrics, TensorBoard events, checkpoints and a summary;
running the same command again resumes from its newest intact checkpoint (a finished run
only reports its result), and with a larger ``--total_steps`` (or another ``--eval_every``
or ``--checkpoint_every``) continues the run; any other change needs ``--overwrite``.

Several workers train one policy together (synchronous data parallelism on tf.distribute):
start the same command on each, with ``--strategy=multi_worker`` and a ``TF_CONFIG`` that
describes the group and names the worker (see the README).
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from pg_keras.cli import common as cli  # noqa: E402

cli.require_tensorflow_backend("train")

import pg_keras  # noqa: E402  (TensorFlow is imported once the flags are checked)
from pg_keras.cli.config_flags import config_from_flags, define_config_flags  # noqa: E402
from pg_keras.config import STRATEGIES, check_run_options  # noqa: E402
from pg_keras.env_limits import check_num_envs, check_render_mode  # noqa: E402
from pg_keras import run_dir  # noqa: E402  (no TensorFlow at import)
from pg_keras.paths import check_writable  # noqa: E402


class _ExportParser(flags.ArgumentParser):
    """``--export=final|best|none``, and ``--export`` (final) / ``--noexport`` (none).

    The flag is boolean to absl, which hands those two spellings in as true and false.
    """

    VALUES = {"final": "final", "true": "final", "best": "best", "none": "none",
              "false": "none"}

    def parse(self, argument):
        text = str(argument).lower()
        if text not in self.VALUES:
            raise ValueError(f"export must be final, best or none; received {argument!r}")
        return self.VALUES[text]

    def flag_type(self):
        return "final|best|none"


def define_flags(flag_values: flags.FlagValues) -> None:
    """Defines the command's flags on ``flag_values``: Config's fields and the run's."""
    define_config_flags(flag_values)
    define = {"flag_values": flag_values}
    flags.DEFINE_string("root_dir", None, "Run directory; default: runs/<env_id>-seed<seed>.",
                        **define)
    flags.DEFINE_integer("checkpoint_every", 0, "Env steps between checkpoints; 0: at every "
                         "evaluation.", **define)
    flags.DEFINE_string("export_dir", None, "Where the trained policy's SavedModel goes; default: "
                        "saved_models/<run name>. Replaced atomically when it holds an export of "
                        "the same config.", **define)
    flags.DEFINE_flag(flags.Flag(
        _ExportParser(), flags.ArgumentSerializer(), "export", "final",
        "Which policy is exported as a SavedModel at the end: final (the last; --export), "
        "best (the evaluation with the highest mean, kept in <root_dir>/checkpoints/best/) "
        "or none (--noexport).", boolean=True), **define)
    flags.DEFINE_float("target_return", None, "Mean evaluation return that counts as solved; "
                       "default: the env's registered reward threshold.", **define)
    flags.DEFINE_bool("stop_when_solved", False, "End the run at the first evaluation that reaches "
                      "--target_return (the policy exported is the one evaluated; a group of "
                      "workers takes one more update).", **define)
    flags.DEFINE_bool("overwrite", False, "Start over in a root_dir that holds a run of another "
                      "config (its files are deleted), and replace an export_dir that holds "
                      "another config's policy.", **define)
    flags.DEFINE_bool("use_progress_bar", True, "Show a progress line while training.",
                      **define)
    flags.DEFINE_bool("quiet", False, "Print only the final result.", **define)
    flags.DEFINE_enum("strategy", "default", list(STRATEGIES),
                      "tf.distribute strategy: default (one device), mirrored (every GPU of this "
                      "host), multi_worker (the processes TF_CONFIG describes; num_envs is per "
                      "worker, total_steps counts all workers' steps).", **define)
    flags.DEFINE_float("group_start_timeout", 600.0, "With --strategy=multi_worker: seconds "
                       "to wait for every worker TF_CONFIG names to join the group before "
                       "stopping with an error.", **define)
    flags.DEFINE_float("collective_timeout", 600.0, "With --strategy=multi_worker: seconds a "
                       "worker waits for the others in an all-reduce before the group stops "
                       "with an error (a dead worker is detected within seconds anyway).",
                       **define)


def default_root_dir(env_id: str, seed: int) -> str:
    name = env_id.split(":")[-1].replace("/", "_")
    return os.path.join("runs", f"{name}-seed{seed}")


def _dirs(flag_values: flags.FlagValues, config) -> tuple:
    root_dir = flag_values.root_dir or default_root_dir(config.env_id, config.seed)
    export_dir = flag_values.export_dir or os.path.join(
        "saved_models", os.path.basename(os.path.normpath(root_dir)))
    return root_dir, export_dir


def _check_dirs(flag_values: flags.FlagValues, config) -> bool:
    """Refuses a root_dir or export_dir that cannot be written, and an export_dir that
    holds another config's policy (hours of compute must not end in a refused export).

    Returns:
        Whether the export may replace what ``export_dir`` holds.
    """
    root_dir, export_dir = _dirs(flag_values, config)
    check_writable(root_dir, "root_dir")
    if flag_values.export == "none":
        return False
    return run_dir.check_export(export_dir, config, flag_values.overwrite)


def check(flag_values: flags.FlagValues) -> None:
    """Everything about the flags that can be refused before TensorFlow is imported."""
    config = config_from_flags(flag_values)
    check_run_options(flag_values.checkpoint_every, flag_values.target_return)
    for name in ("group_start_timeout", "collective_timeout"):
        if not 0 < flag_values[name].value < float("inf"):  # NaN fails too
            raise pg_keras.InputError(f"{name} must be a positive number of seconds; "
                                      f"received --{name}={flag_values[name].value}")
    check_render_mode(config.env_kwargs)
    if config.backend == "gymnasium":
        check_num_envs(config.num_envs)
    if flag_values.strategy != "multi_worker":  # else only the chief writes; it checks in main
        _check_dirs(flag_values, config)


def main(flag_values: flags.FlagValues) -> int:
    config = config_from_flags(flag_values)
    # First: a multi-worker strategy must exist before any other TensorFlow work.
    strategy = _make_strategy(flag_values)
    chief = pg_keras.distributed.worker_of(strategy).is_chief
    root_dir, export_dir = _dirs(flag_values, config)
    replace_export = _check_dirs(flag_values, config) if chief else False
    # The final policy is the library's export; the best one is restored here first.
    export_final = flag_values.export == "final"
    result = pg_keras.train(config, callbacks=_callbacks(flag_values), root_dir=root_dir,
                            export_dir=export_dir if export_final else None, strategy=strategy)
    if result.interrupted:
        saved_by = "" if chief else "the chief, "
        print(f"interrupted by {result.interrupted} at {result.env_steps} env steps; checkpoint "
              f"and summary saved in {saved_by}{root_dir}; run the same command to resume",
              flush=True)
        return 130 if result.interrupted == "SIGINT" else 143
    if not chief:
        # Leaves when the chief has exported: a worker that left earlier would look to
        # the chief like one that died.
        _leave_together(strategy)
        print(f"worker {result.worker.index} of {result.worker.count}: done at "
              f"{result.env_steps} env steps (the chief evaluates and exports)")
        return 0
    exported = None
    if flag_values.export != "none":
        exported = _exported_evaluation(flag_values, result, root_dir)
    if flag_values.export == "best":
        run_dir.export(result.policy, config, export_dir, replace_export, root_dir)
    if result.worker.count > 1:
        _leave_together(strategy)
    final = result.evaluations[-1]
    solved = f"solved at {result.solved_at} env steps" if result.solved_at else "not solved"
    left_out = (f", {final.nonfinite_episodes} non-finite episodes left out"
                if final.nonfinite_episodes else "")
    print(f"final evaluation return over {config.eval_episodes} episodes: "
          f"{final.mean_return:.2f} +- {final.std_return:.2f}{left_out} ({config.eval_mode}, "
          f"{config.env_id}, "
          f"{result.env_steps} env steps, {result.wall_seconds:.1f} s, {solved}; "
          f"run directory {root_dir})")
    if exported is not None:
        print(f"SavedModel: {export_dir} (the policy evaluated at {exported.env_steps} env "
              f"steps: {exported.mean_return:.2f} +- {exported.std_return:.2f})")


def _exported_evaluation(flag_values: flags.FlagValues, result, root_dir: str):
    """The evaluation whose policy is exported; with --export=best, that policy restored."""
    if flag_values.export == "final":
        return result.evaluations[-1]
    best = run_dir.restore_best(os.path.join(root_dir, run_dir.CHECKPOINTS), result.learner)
    return pg_keras.Evaluation(**best)


def _callbacks(flag_values: flags.FlagValues) -> list:
    """The callbacks the flags ask for."""
    callbacks = [pg_keras.Checkpointing(every=flag_values.checkpoint_every,
                                        overwrite=flag_values.overwrite)]
    if not flag_values.quiet:
        callbacks.append(pg_keras.ProgressLogger(bar=flag_values.use_progress_bar))
    target = flag_values.target_return
    if flag_values.stop_when_solved:
        callbacks.append(pg_keras.StopWhenSolved(target_return=target))
    elif target is not None:  # the target of summary.json's solved_at alone
        callbacks.append(pg_keras.LambdaCallback(
            on_train_begin=lambda run: setattr(run, "target_return", target)))
    return callbacks


def _leave_together(strategy) -> None:
    try:
        pg_keras.distributed.GroupSync(strategy).barrier()
    except pg_keras.distributed.GROUP_ERRORS as error:
        raise pg_keras.TrainingError(
            "the group broke after training, before every worker was done "
            f"({pg_keras.distributed.describe_group_error(error)}); the chief's run "
            "directory holds the final checkpoint") from None


def _make_strategy(flag_values: flags.FlagValues):
    if flag_values.strategy != "multi_worker":
        return pg_keras.distributed.make_strategy(flag_values.strategy)
    # TensorFlow waits for the workers TF_CONFIG names without limit: one that never
    # comes (not started, or killed before the group formed) would hold the others forever.
    with cli.deadline("train", flag_values.group_start_timeout,
                      f"the worker group did not form within --group_start_timeout="
                      f"{flag_values.group_start_timeout:g} s: start every worker TF_CONFIG "
                      "names, with the same cluster"):
        return pg_keras.distributed.make_strategy(flag_values.strategy,
                                                  flag_values.collective_timeout)


def run(argv: Sequence[str]) -> int:
    """Runs the command on ``argv`` (program name first); returns its exit code."""
    return cli.execute("train", argv, define_flags, main, usage=__doc__,
                       bad_input=(pg_keras.InputError,), failures=(pg_keras.TrainingError,),
                       check=check)


def launch() -> None:
    """The `pg-keras-train` command: runs on sys.argv and exits with its status."""
    sys.exit(run(sys.argv))


if __name__ == "__main__":
    launch()
