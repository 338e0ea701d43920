"""Search hyperparameters of a flagfile with Optuna; print the best as a flagfile.

    python -m experiments.tune --flagfile=experiments/configs/lunarlander.cfg \\
        --search=policy_learning_rate,value_learning_rate,entropy_coef,gae_lambda \\
        --trials=40 --seeds=0,1 --total_steps=300000 --study=studies/lunarlander.db \\
        --out=lunarlander-tuned.cfg

Each trial samples the ``--search`` flags (TPE, seeded), trains the flagfile's config with
them once per seed (in this process, with the flagfile's evaluations), and scores the mean
over seeds of the final greedy evaluation (``--objective=final``) or of every evaluation
(``--objective=auc``, the normalized area under the learning curve). Each evaluation is
reported to a median pruner, which stops a trial whose curve is below the median of the
earlier trials at the same evaluation. The study lives in a local SQLite file: run the
same command again and it goes on where it stopped, up to ``--trials`` finished (complete
or pruned) trials. ``--parallel=N`` runs N processes of the command on the study, each
one trial at a time; run one command per study at a time (a second one would take the
first one's running trials for trials a stopped process left behind).

A ``--search`` entry is a Config field with its default range (``DEFAULT_SPACE``), or
``name:low:high`` (the default scale: log for learning rates, entropy and clipping),
``name:low:high:log`` / ``name:low:high:linear``, or ``name:a|b|c`` (a choice; tuples as
``64x64``). Config flags given here (``--total_steps``, ...) set the trials' budget; the
flagfile written keeps the flagfile's own values for everything not searched.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from typing import List, Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from experiments import flagfiles  # noqa: E402
from pg_keras.cli import common as cli  # noqa: E402

cli.require_tensorflow_backend("tune")

import pg_keras  # noqa: E402
from pg_keras.paths import check_writable, check_writable_file  # noqa: E402
from pg_keras.cli.config_flags import config_from_flags, define_config_flags  # noqa: E402
from experiments.tune_space import field_types, from_choice, parse_param  # noqa: E402

# This tool's flags: its own, never absl's global registry.
FLAGS = flags.FlagValues()
define_config_flags(FLAGS)
flags.DEFINE_list("search", None, "Flags to search: name, name:low:high[:log|:linear], or "
                  "name:a|b|c.", flag_values=FLAGS)
flags.DEFINE_integer("trials", 20, "Finished (complete or pruned) trials the study should hold.",
                     flag_values=FLAGS)
flags.DEFINE_string("study", None, "SQLite file of the study (.db), or a directory for "
                    "<dir>/study.db.", flag_values=FLAGS)
flags.DEFINE_string("study_name", None, "Name of the study in the file; default: the "
                    "flagfile's name.", flag_values=FLAGS)
flags.DEFINE_list("seeds", ["0"], "Seeds each trial trains with (its score is their mean).",
                  flag_values=FLAGS)
flags.DEFINE_enum("objective", "final", ["final", "auc"], "final: the last evaluation's mean; "
                  "auc: the mean of every evaluation's mean.", flag_values=FLAGS)
flags.DEFINE_integer("sampler_seed", 0, "Seed of the TPE sampler.", lower_bound=0,
                     flag_values=FLAGS)
flags.DEFINE_integer("random_trials", 10, "Trials sampled at random before TPE models the "
                     "results.", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_bool("prune", True, "Stop trials whose evaluations fall below the median.",
                  flag_values=FLAGS)
flags.DEFINE_integer("prune_after_trials", 5, "Finished trials before any pruning.",
                     lower_bound=0, flag_values=FLAGS)
flags.DEFINE_integer("prune_warmup_evals", 2, "Evaluations of a trial's first seed before "
                     "it can be pruned.", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_string("out", None, "Also write the best flagfile here.", flag_values=FLAGS)
flags.DEFINE_integer("parallel", 1, "Processes that run trials of the study at once.",
                     flag_values=FLAGS)
flags.DEFINE_integer("worker", 0, "Set by --parallel: this process's index among them (0, "
                     "the one started by hand, also reports the best trial).",
                     flag_values=FLAGS)

def flagfile_argument(argv: Sequence[str]) -> str:
    """The one ``--flagfile`` of the command line (the flagfile the result rewrites)."""
    paths = [a.split("=", 1)[1] for a in argv if a.lstrip("-").startswith("flagfile=")]
    if len(paths) != 1:
        raise pg_keras.InputError(f"tune needs exactly one --flagfile (the config it tunes); "
                                  f"received {len(paths)}")
    return paths[0]


def check_outputs() -> None:
    """Refuses a --study or --out that cannot be written, before any trial runs."""
    if FLAGS.study:
        path = os.path.abspath(FLAGS.study)
        directory = os.path.dirname(path) if path.endswith((".db", ".sqlite", ".sqlite3")) \
            else path
        check_writable(directory, "study")
    if FLAGS.out:
        check_writable_file(FLAGS.out, "out")


def study_url(study: Optional[str]) -> str:
    """``sqlite:///...`` of --study (a .db/.sqlite file, or a directory for study.db)."""
    if not study:
        raise pg_keras.InputError("tune needs --study, the SQLite file (or directory) that "
                                  "keeps the trials; received none")
    path = os.path.abspath(study)
    if not path.endswith((".db", ".sqlite", ".sqlite3")):
        path = os.path.join(path, "study.db")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return f"sqlite:///{path}"


def objective_fn(base: pg_keras.Config, space: List[Param], seeds: List[int]):
    """The Optuna objective: the mean over seeds of the run's score (see --objective)."""
    import keras
    import optuna

    stride = base.total_steps // base.eval_every + 2  # evaluations per seed, at most

    def objective(trial) -> float:
        config = base.replace(**{p.name: p.suggest(trial) for p in space})
        trial.set_user_attr("worker", FLAGS.worker)
        scores = []
        for index, seed in enumerate(seeds):
            means = []

            def on_evaluation(evaluation, index=index, means=means):
                means.append(evaluation.mean_return)
                trial.report(evaluation.mean_return, index * stride + len(means) - 1)
                if FLAGS.prune and trial.should_prune():
                    raise optuna.TrialPruned(f"seed {seed}, evaluation {len(means)}")

            try:
                # The sweep's own Ctrl-C ends it all, not just this trial's run.
                pg_keras.train(config.replace(seed=seed), callbacks=[
                    pg_keras.LambdaCallback(on_evaluation=on_evaluation),
                    pg_keras.HandleSignals(enabled=False)])
            except pg_keras.TrainingError as error:
                trial.set_user_attr("error", str(error))
                raise optuna.TrialPruned(str(error)) from None
            finally:
                keras.backend.clear_session()
            scores.append(means[-1] if FLAGS.objective == "final" else sum(means) / len(means))
        trial.set_user_attr("scores", scores)
        return sum(scores) / len(scores)

    return objective


def setup_of(ff: flagfiles.Flagfile, space, seeds, overrides) -> dict:
    """What a study's trials depend on; a resumed study must match it."""
    return {"flagfile": ff.digest(), "overrides": list(overrides),
            "search": [p.describe() for p in space], "seeds": list(seeds),
            "objective": FLAGS.objective}


def open_study(ff, setup):
    """Creates or loads the study; fails trials a killed process left running (in worker
    0, before the other workers of ``--parallel`` start)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = study_url(FLAGS.study)
    name = FLAGS.study_name or ff.name
    # Workers write to the one file: wait for its lock rather than fail at once.
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                load_if_exists=True)
    saved = study.user_attrs.get("setup")
    if saved is None:
        study.set_user_attr("setup", setup)
    elif saved != setup:
        differs = sorted(k for k in setup if saved.get(k) != setup[k])
        raise pg_keras.InputError(
            f"study {name!r} in {url} was made with other {', '.join(differs)} (the flagfile's "
            "flag lines, the Config flags given here, --search, --seeds, --objective); use "
            "another --study or --study_name")
    if FLAGS.worker == 0:
        _fail_left_running(study, storage, name)
    study.sampler = optuna.samplers.TPESampler(
        seed=sampler_seed(FLAGS.sampler_seed, len(study.trials), FLAGS.worker),
        n_startup_trials=FLAGS.random_trials)
    study.pruner = (optuna.pruners.MedianPruner(
        n_startup_trials=FLAGS.prune_after_trials, n_warmup_steps=FLAGS.prune_warmup_evals)
        if FLAGS.prune else optuna.pruners.NopPruner())
    return study


def _fail_left_running(study, storage, name: str) -> None:
    import optuna

    study_id = storage.get_study_id_from_name(name)
    for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
        storage.set_trial_state_values(
            storage.get_trial_id_from_study_id_trial_number(study_id, trial.number),
            optuna.trial.TrialState.FAIL)
        print(f"tune: trial {trial.number} was left running by a stopped process; "
              "marked failed", flush=True)


def sampler_seed(seed: int, trials: int, worker: int) -> int:
    """The TPE sampler's seed in a process: a resumed study, or another worker of
    ``--parallel``, draws new trials rather than the ones drawn before or beside it."""
    return int(np.random.SeedSequence([seed, trials, worker]).generate_state(1)[0])


def finished(study) -> int:
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def print_trial(study, trial) -> None:
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in trial.params.items())
    if trial.value is not None:
        scores = ", ".join(f"{s:.1f}" for s in trial.user_attrs.get("scores", []))
        outcome = f"{trial.value:.2f} (seeds: {scores})"
    else:
        outcome = trial.state.name.lower()
    print(f"trial {trial.number}: {outcome}; {params}", flush=True)


def best_flagfile(study, ff: flagfiles.Flagfile, space, base, seeds, command: str) -> str:
    """The flagfile's flags with the best trial's values, and a header on how they were found."""
    best = study.best_trial
    values = {p.name: from_choice(field_types()[p.name], best.params[p.name]) for p in space}
    counts = {s: sum(t.state.name == s for t in study.trials)
              for s in ("COMPLETE", "PRUNED", "FAIL")}
    objective = ("the final greedy evaluation" if FLAGS.objective == "final"
                 else "the mean of all greedy evaluations (area under the curve)")
    pruning = "median pruning" if FLAGS.prune else "no pruning"
    header = [
        f"# Found by experiments.tune: {counts['COMPLETE']} complete, {counts['PRUNED']} "
        f"pruned, {counts['FAIL']} failed trials (TPE, seed {FLAGS.sampler_seed}; {pruning})",
        f"# Each trial: seeds {','.join(map(str, seeds))}, {base.total_steps:,} env steps, "
        f"evaluations every {base.eval_every:,} over {base.eval_episodes} episodes;",
        f"# objective: the mean over seeds of {objective}.",
        f"# Best: trial {best.number}, {best.value:.2f} (seeds: "
        f"{', '.join(f'{s:.1f}' for s in best.user_attrs.get('scores', []))}).",
        f"#   {command}",
    ]
    header += [f"# {key}: {ff.header[key]}" for key in flagfiles.HEADER_KEYS if key in ff.header]
    return "\n".join(header + flagfiles.set_flags(ff.lines, values)) + "\n"


def main(argv):
    ff = flagfiles.read(flagfile_argument(sys.argv[1:]))
    if not FLAGS.search:
        raise pg_keras.InputError("tune needs --search, the flags to search; received none")
    space = [parse_param(spec) for spec in FLAGS.search]
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise pg_keras.InputError(f"seeds must be comma-separated integers; received "
                                  f"--seeds={','.join(FLAGS.seeds)}") from None
    if not seeds:
        raise pg_keras.InputError("seeds must name at least one seed; received --seeds=''")
    base = config_from_flags(FLAGS)
    if not base.eval_every:
        raise pg_keras.InputError("tune scores trials by their evaluations; received "
                                  "--eval_every=0")
    if FLAGS.trials < 1:
        raise pg_keras.InputError(f"trials must be >= 1; received --trials={FLAGS.trials}")
    if FLAGS.parallel < 1:
        raise pg_keras.InputError(f"parallel must be >= 1; received --parallel={FLAGS.parallel}")
    check_outputs()
    overrides = _config_overrides(sys.argv[1:])
    study = open_study(ff, setup_of(ff, space, seeds, overrides))
    if FLAGS.worker:
        _run(study, base, space, seeds)  # one of --parallel's; worker 0 reports
        return
    workers = start_workers(min(FLAGS.parallel, FLAGS.trials - finished(study)) - 1)
    try:
        _run(study, base, space, seeds)
    except BaseException:
        for process in workers:  # stopped (Ctrl-C) or failed: so are they
            process.terminate()
            process.wait()
        raise
    failed = [i for i, process in enumerate(workers, 1) if process.wait()]
    if not any(t.state.name == "COMPLETE" for t in study.trials):
        raise pg_keras.TrainingError("no trial completed (all pruned or failed)")
    text = best_flagfile(study, ff, space, base, seeds, "python -m experiments.tune " +
                         " ".join(shlex.quote(a) for a in sys.argv[1:]))
    print(text, end="", flush=True)
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            f.write(text)
        print(f"tune: wrote {FLAGS.out}", flush=True)
    if failed:
        raise pg_keras.TrainingError(
            f"--parallel's worker(s) {', '.join(map(str, failed))} stopped with an error "
            "(above); the study keeps their finished trials")


def start_workers(count: int) -> List[subprocess.Popen]:
    """Workers 1..count of --parallel: this command again, in processes of their own."""
    return [subprocess.Popen([sys.executable, "-m", "experiments.tune", *sys.argv[1:],
                              "--parallel=1", f"--worker={i}"]) for i in range(1, count + 1)]


def _run(study, base, space, seeds) -> None:
    import optuna

    remaining = FLAGS.trials - finished(study)
    if FLAGS.worker == 0:
        print(f"tune: study {study.study_name}: {finished(study)} finished trial(s), "
              f"{max(remaining, 0)} to run", flush=True)
    if remaining > 0:
        # A trial whose sampled config is refused fails and the study goes on; it does not
        # count as finished, so the next invocation tops the study up. The trials other
        # workers are running count toward --trials already.
        full = optuna.study.MaxTrialsCallback(FLAGS.trials, states=(
            optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
            optuna.trial.TrialState.RUNNING))
        study.optimize(objective_fn(base, space, seeds), n_trials=remaining,
                       catch=(pg_keras.InputError,), callbacks=[print_trial, full])


def _config_overrides(argv: Sequence[str]) -> List[str]:
    """The Config flags given on the command line (the trials' budget and the like)."""
    fields = {f.name for f in dataclasses.fields(pg_keras.Config)}
    out = []
    for arg in argv:
        name = arg.lstrip("-").split("=", 1)[0]
        if name in fields or (name.startswith("no") and name[2:] in fields):
            out.append(arg)
    return out


if __name__ == "__main__":
    cli.run("tune", FLAGS, main, usage=__doc__,
            bad_input=(pg_keras.InputError, flagfiles.FlagfileError),
            failures=(pg_keras.TrainingError,))
