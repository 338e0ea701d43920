"""The hyperparameter search end to end (a tiny study that resumes), and its pieces."""

import os
import subprocess
import sys

import pytest

import launchers
import pg_keras

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--flagfile=experiments/configs/cartpole.cfg", "--total_steps=800", "--eval_every=400",
        "--eval_episodes=2", "--num_envs=4",
        "--search=policy_learning_rate:1e-4:1e-2,hidden_sizes:16x16|32x32,normalize_returns"]


def _tune(*args):
    return launchers.run("experiments.tune", *args)


def _parse_flagfile(path):
    """The Config experiments.train builds from a flagfile (the same flags, the same parse)."""
    from absl import flags

    from pg_keras.cli.config_flags import config_from_flags, define_config_flags

    values = flags.FlagValues()
    define_config_flags(values)
    values(["train", f"--flagfile={path}"])
    return config_from_flags(values)


def test_a_study_resumes_and_writes_a_flagfile_train_accepts(tmp_path):
    import optuna

    db = tmp_path / "study.db"
    first = _tune(*TINY, "--trials=2", f"--study={db}")
    assert first.returncode == 0, first.stderr[-3000:]
    study = optuna.load_study(study_name="cartpole", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    leftover = study.ask()  # as if a process had been killed in the middle of a trial

    out = tmp_path / "best.cfg"
    second = _tune(*TINY, "--trials=3", f"--study={db}", f"--out={out}")
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"trial {leftover.number} was left running" in second.stdout
    study = optuna.load_study(study_name="cartpole", storage=f"sqlite:///{db}")
    states = [t.state.name for t in study.trials]
    assert states[:3] == ["COMPLETE", "COMPLETE", "FAIL"] and states[3] in ("COMPLETE", "PRUNED")
    assert len(states) == 4  # one more trial, not a new study of three

    best = study.best_trial
    config = _parse_flagfile(out)
    assert config.policy_learning_rate == pytest.approx(best.params["policy_learning_rate"],
                                                        rel=1e-3)
    assert config.hidden_sizes == tuple(int(v) for v in best.params["hidden_sizes"].split("x"))
    assert config.normalize_returns == best.params["normalize_returns"]
    # The flagfile's own budget, not the trials' (that one is in the header).
    assert (config.total_steps, config.eval_every, config.num_envs) == (50_000, 10_000, 8)
    text = out.read_text()
    assert text.startswith("# Found by experiments.tune: ")
    assert "800 env steps" in text and f"Best: trial {best.number}, {best.value:.2f}" in text
    assert text in second.stdout


def test_parallel_workers_share_one_study_up_to_its_trials(tmp_path):
    import optuna

    db = tmp_path / "study.db"
    out = tmp_path / "best.cfg"
    run = _tune(*TINY, "--trials=4", "--parallel=2", f"--study={db}", f"--out={out}")
    assert run.returncode == 0, run.stderr[-3000:]
    study = optuna.load_study(study_name="cartpole", storage=f"sqlite:///{db}")
    assert [t.state.name in ("COMPLETE", "PRUNED") for t in study.trials] == [True] * 4
    # Both processes ran trials, none marked another's running trial failed, and each
    # drew its own: no learning rate twice.
    assert {t.user_attrs["worker"] for t in study.trials} == {0, 1}
    rates = [t.params["policy_learning_rate"] for t in study.trials]
    assert len(set(rates)) == 4
    assert f"Best: trial {study.best_trial.number}" in out.read_text()


def test_a_study_of_another_setup_is_refused(tmp_path):
    db = tmp_path / "study.db"
    import optuna

    study = optuna.create_study(study_name="cartpole", storage=f"sqlite:///{db}")
    study.set_user_attr("setup", {"flagfile": "x", "overrides": [], "search": [], "seeds": [0],
                                  "objective": "final"})
    # A process of its own: the contract is the launcher's exit code and its one line.
    run = subprocess.run([sys.executable, "-m", "experiments.tune", *TINY, "--trials=1",
                          f"--study={db}"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    errors = [line for line in run.stderr.splitlines() if line.startswith("tune: ")]
    assert run.returncode == 2 and len(errors) == 1, run.stderr
    assert "was made with other flagfile, overrides, search" in errors[0]
    assert len(optuna.load_study(study_name="cartpole", storage=f"sqlite:///{db}").trials) == 0


def test_bad_search_entries_are_refused():
    from experiments import tune_space

    bad = [("no_such_field", "not a Config field"),
           ("policy_learning_rate:1e-2:1e-4", "low < high"),
           ("policy_learning_rate:0:1e-2:log", "low > 0"),
           ("env_id", "no default range"),
           ("normalize_returns:yes|no", "not a value of normalize_returns"),
           ("activation:1:2", "a number field")]
    for spec, message in bad:
        with pytest.raises(pg_keras.InputError, match=message):
            tune_space.parse_param(spec)


def test_on_evaluation_sees_every_evaluation_and_can_end_the_run():
    config = pg_keras.Config(total_steps=600, eval_every=200, eval_episodes=1, num_envs=2,
                             steps_per_update=50)
    seen = []
    result = pg_keras.train(config, callbacks=[pg_keras.LambdaCallback(on_evaluation=seen.append)])
    assert seen == result.evaluations and len(seen) == 3

    class Stop(Exception):
        pass

    def stop(evaluation):
        raise Stop(evaluation.env_steps)

    with pytest.raises(Stop, match="200"):
        pg_keras.train(config, callbacks=[pg_keras.LambdaCallback(on_evaluation=stop)])


def test_search_entries_and_their_default_ranges():
    from experiments.tune_space import Param, parse_param

    assert parse_param("policy_learning_rate") == Param("policy_learning_rate", 1e-4, 1e-2, True)
    assert parse_param("policy_learning_rate:1e-3:1e-1") == Param(
        "policy_learning_rate", 1e-3, 1e-1, True)  # the default's log scale
    assert parse_param("gamma:0.9:0.99") == Param("gamma", 0.9, 0.99, False)
    assert parse_param("gamma:0.9:0.99:log").log is True
    assert parse_param("hidden_sizes:64x64|256x256").choices == ("64x64", "256x256")
    assert parse_param("normalize_returns:true|false").choices == (True, False)
    assert parse_param("steps_per_update:8|16").choices == (8, 16)
