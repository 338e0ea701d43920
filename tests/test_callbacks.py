"""train(config, callbacks=[...]): what a callback sees, how it stops a run, the built-ins,
and the library's export."""

import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

import pg_keras

# 128 env steps per update, an evaluation every 512: 16 updates, 4 evaluations.
CONFIG = pg_keras.Config(total_steps=2048, num_envs=4, steps_per_update=32, eval_every=512,
                         eval_episodes=2, hidden_sizes=(8,), value_hidden_sizes=(8,))


class Recorder(pg_keras.Callback):
    """Logs every hook it gets; stops the run once ``stop_at`` env steps are reached."""

    def __init__(self, stop_at=None):
        super().__init__()
        self.stop_at, self.calls = stop_at, []

    def on_train_begin(self, run):
        self.calls.append(("begin", run.env_steps, run is self.run))

    def on_update_end(self, record):
        self.calls.append(("update", record["env_steps"]))
        if self.stop_at is not None and record["env_steps"] >= self.stop_at:
            self.run.stop_training = True

    def on_evaluation(self, evaluation):
        self.calls.append(("evaluation", evaluation.env_steps))

    def on_train_end(self, result):
        self.calls.append(("end", result.env_steps))


def test_a_callback_sees_every_update_and_evaluation_in_order():
    recorder = Recorder()
    result = pg_keras.train(CONFIG, callbacks=[recorder])
    updates = [("update", 128 * (i + 1)) for i in range(16)]
    for steps in (512, 1024, 1536, 2048):  # each evaluation follows its update
        updates.insert(updates.index(("update", steps)) + 1, ("evaluation", steps))
    assert recorder.calls == [("begin", 0, True), *updates, ("end", 2048)]
    assert recorder.run.policy is result.policy and recorder.run.config.seed == CONFIG.seed


def test_stop_training_ends_the_run_after_that_update_and_a_resume_goes_on(tmp_path):
    root = str(tmp_path / "run")
    first = Recorder(stop_at=640)  # between two evaluations
    stopped = pg_keras.train(CONFIG, root_dir=root, callbacks=[first])
    assert stopped.env_steps == 640 and stopped.interrupted is None
    assert [e.env_steps for e in stopped.evaluations] == [512, 640]  # the final one
    assert first.calls[-2:] == [("evaluation", 640), ("end", 640)]
    with open(os.path.join(root, "summary.json")) as f:
        assert json.load(f)["env_steps"] == 640
    second = Recorder()
    resumed = pg_keras.train(CONFIG, root_dir=root, callbacks=[second])
    assert second.calls[0] == ("begin", 640, True) and resumed.env_steps == 2048
    assert [r["env_steps"] for r in resumed.history] == [128 * (i + 1) for i in range(16)]


def test_a_lambda_callback_can_stop_the_run_from_an_evaluation():
    def stop(evaluation):
        stopping.run.stop_training = True

    stopping = pg_keras.LambdaCallback(on_evaluation=stop)
    result = pg_keras.train(CONFIG, callbacks=[stopping])
    assert result.env_steps == 512 and [e.env_steps for e in result.evaluations] == [512]


def test_stop_when_solved_sets_the_target_of_solved_at():
    # Every episode of CartPole lasts at least 8 steps: the first evaluation reaches 8.
    result = pg_keras.train(CONFIG, callbacks=[pg_keras.StopWhenSolved(target_return=8.0)])
    assert result.solved_at == 512 == result.env_steps
    unsolved = pg_keras.train(CONFIG.replace(total_steps=512))
    assert unsolved.solved_at is None  # CartPole's own threshold, 475, is far


def test_checkpointing_sets_the_interval(tmp_path):
    root = tmp_path / "run"
    pg_keras.train(CONFIG, root_dir=str(root), callbacks=[pg_keras.Checkpointing(every=256)])
    loops = sorted((root / "checkpoints").glob("loop-*.json"))
    steps = sorted(json.loads(p.read_text())["env_steps"] for p in loops)
    assert steps[-1] == 2048 and all(s % 256 == 0 for s in steps)
    assert len(steps) >= 2 and steps[-2] == 1792  # kept: the newest few, 256 apart


def test_signals_are_handled_unless_asked_not_to():
    seen = []

    def handler(run):
        seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    short = CONFIG.replace(total_steps=128, eval_every=0)
    pg_keras.train(short, callbacks=[pg_keras.LambdaCallback(on_train_begin=handler)])
    pg_keras.train(short, callbacks=[pg_keras.LambdaCallback(on_train_begin=handler),
                                     pg_keras.HandleSignals(enabled=False)])
    assert seen[0] != before and seen[1] == before
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.parametrize("callbacks, root_dir, message", [
    ([print], None, r"^callbacks must be pg_keras.Callback instances; received "),
    ([pg_keras.Checkpointing()], None, r"^Checkpointing needs a root_dir; received "
                                       r"root_dir=None$"),
    ([pg_keras.HandleSignals(), pg_keras.HandleSignals(False)], None,
     r"^callbacks holds more than one HandleSignals"),
], ids=["not a callback", "no root_dir", "twice"])
def test_bad_callbacks_are_refused_before_anything_is_written(callbacks, root_dir, message):
    with pytest.raises(pg_keras.InputError, match=message):
        pg_keras.train(CONFIG, callbacks=callbacks, root_dir=root_dir)


def test_a_lambda_callback_refuses_what_it_cannot_call():
    with pytest.raises(pg_keras.InputError, match=r"^LambdaCallback's on_update_end must be "
                                                  r"callable; received on_update_end=3$"):
        pg_keras.LambdaCallback(on_update_end=3)


def test_train_exports_the_final_policy_and_refuses_another_configs_export(tmp_path):
    short = CONFIG.replace(total_steps=256, eval_every=0)
    export = tmp_path / "export"
    result = pg_keras.train(short, export_dir=str(export))
    observations = np.random.default_rng(0).uniform(-1, 1, (8, 4)).astype(np.float32)
    loaded = tf.saved_model.load(str(export))
    np.testing.assert_array_equal(loaded(observations).numpy(),
                                  result.policy.predict(observations)[0])
    again = pg_keras.train(short, export_dir=str(export))  # the same config: replaced
    np.testing.assert_array_equal(tf.saved_model.load(str(export))(observations).numpy(),
                                  again.policy.predict(observations)[0])
    other, root = short.replace(gamma=0.5), tmp_path / "run"
    with pytest.raises(pg_keras.InputError, match=r"holds the policy of another config "
                                                  r"\(gamma: 0.99 -> 0.5\)"):
        pg_keras.train(other, root_dir=str(root), export_dir=str(export))
    assert not root.exists()
    pg_keras.train(other, root_dir=str(root), export_dir=str(export),
                   callbacks=[pg_keras.Checkpointing(overwrite=True)])
    with open(export / "config.json") as f:
        assert json.load(f)["gamma"] == 0.5


def test_the_public_names_are_the_users_and_internals_stay_in_their_modules():
    assert {"Callback", "Checkpointing", "Config", "HandleSignals", "LambdaCallback",
            "Policy", "ProgressLogger", "StopWhenSolved", "TrainResult", "build_learner",
            "export_policy", "load_policy", "train"} <= set(pg_keras.__all__)
    for internal in ("LossInfo", "RunningNormalization", "make_head", "mlp", "distributed",
                     "Batch", "Learner", "ActionHead"):
        assert internal not in pg_keras.__all__
    assert pg_keras.heads.make_head and pg_keras.batch.Batch and pg_keras.learner.Learner


def test_the_fault_hook_is_inert_unless_set_and_refuses_a_bad_value():
    from pg_keras import faults

    faults.point("update")  # unset: nothing happens
    assert faults._parse("") == (None, 0)
    assert faults._parse("checkpoint_save:3") == ("checkpoint_save", 3)
    for bad in ("update", "update:0", "nowhere:1", "update:x"):
        with pytest.raises(pg_keras.InputError, match=r"^PG_KERAS_FAULT must be <point>:<n>"):
            faults._parse(bad)
