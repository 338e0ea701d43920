"""Damaged run directories: resume from the newest checkpoint that restores, lose nothing.

One finished run with three checkpoints (at 400, 800 and 1,200 env steps) is trained once;
each case damages a copy of it and resumes it. The resumed run must start from the newest
intact checkpoint and end with the weights of the undamaged run; no file of that
checkpoint or an older one may change; the damaged checkpoint is kept aside whole; and
every metrics record up to the resumed step is kept.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import pg_keras
from pg_keras.config import FORMAT_VERSION

CHECKPOINT_EVERY = 400
EVERY = [pg_keras.Checkpointing(every=CHECKPOINT_EVERY)]
CONFIG = pg_keras.Config(total_steps=1200, num_envs=4, steps_per_update=25, eval_every=0,
                         eval_episodes=2, hidden_sizes=(8,), value_hidden_sizes=(8,),
                         lr_schedule="constant")
# Checkpoint N is the one saved after N updates of 100 env steps.
STEPS = {4: 400, 8: 800, 12: 1200}
LONGER = 2000  # a finished run reads no environments: those cases train it further
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _weights(learner):
    variables = (learner.policy_variables + learner.value_variables
                 + list(learner.policy_optimizer.variables)
                 + list(learner.value_optimizer.variables))
    return [np.asarray(v.numpy()) for v in variables]


@pytest.fixture(scope="module")
def longer(tmp_path_factory):
    """The weights of CONFIG trained to LONGER env steps in one go."""
    root = tmp_path_factory.mktemp("longer") / "run"
    result = pg_keras.train(CONFIG.replace(total_steps=LONGER), root_dir=str(root),
                            callbacks=EVERY)
    return result


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(run directory, weights) of CONFIG trained to the end."""
    root = tmp_path_factory.mktemp("finished") / "run"
    result = pg_keras.train(CONFIG, root_dir=str(root), callbacks=EVERY)
    names = sorted(os.listdir(root / "checkpoints"))
    assert [n for n in names if n.endswith(".index")] == [
        "ckpt-12.index", "ckpt-4.index", "ckpt-8.index"], names
    return root, _weights(result.learner)


# What each case does to the copy of the run (its checkpoints directory is ``c``).

def _remove(path):
    os.remove(path)


def _write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    _write(path, data[:len(data) // 2])


def _flip_a_bit(path):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0x10
    _write(path, bytes(data))


def _damage_a_metrics_line(root, line):
    """Replaces line 6 of 12 (the update at 600 env steps) of metrics.jsonl with ``line``."""
    path = root / "metrics.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[5] = line
    path.write_bytes(b"".join(lines))


DATA = "ckpt-12.data-00000-of-00001"
CASES = {
    # name: (damage(root), checkpoint resumed from, ckpt-12 kept aside, total steps)
    "pointer missing": (lambda r: _remove(r / "checkpoints/checkpoint"), 12, False, 1200),
    "pointer garbage": (lambda r: _write(r / "checkpoints/checkpoint", b"\x00{garbage"),
                        12, False, 1200),
    "pointer names a missing checkpoint": (
        lambda r: _write(r / "checkpoints/checkpoint",
                         b'model_checkpoint_path: "ckpt-30"\n'
                         b'all_model_checkpoint_paths: "ckpt-30"\n'), 12, False, 1200),
    "pointer missing, trained further": (lambda r: _remove(r / "checkpoints/checkpoint"), 12,
                                         False, LONGER),
    "latest .data truncated": (lambda r: _truncate(r / "checkpoints" / DATA), 8, True, 1200),
    "latest .data bit-flipped": (lambda r: _flip_a_bit(r / "checkpoints" / DATA), 8, True,
                                 1200),
    "latest .index empty": (lambda r: _write(r / "checkpoints/ckpt-12.index", b""), 8, True,
                            1200),
    "latest loop state truncated": (lambda r: _truncate(r / "checkpoints/loop-12.json"), 8,
                                    True, 1200),
    "latest loop state holds a string": (
        lambda r: _write(r / "checkpoints/loop-12.json", b'"abc"'), 8, True, 1200),
    "latest environments truncated": (
        lambda r: _truncate(r / "checkpoints/environments-12.pkl"), 8, True, LONGER),
    "latest TF checkpoint never written (a save cut short)": (
        lambda r: [_remove(r / "checkpoints" / n) for n in (DATA, "ckpt-12.index")], 8, True,
        1200),
    "latest environments missing": (
        lambda r: _remove(r / "checkpoints/environments-12.pkl"), 8, True, LONGER),
    "a metrics line damaged in the middle": (
        lambda r: _damage_a_metrics_line(r, b'{"env_steps": 600, "lo\n'), 12, False, 1200),
    "a metrics record without env_steps": (
        lambda r: _damage_a_metrics_line(r, b'{"loss": 1.0}\n'), 12, False, 1200),
}


def _snapshot(directory):
    """{relative path: (bytes, mtime in ns)} of every file under ``directory``."""
    files = {}
    for parent, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(parent, name)
            files[os.path.relpath(path, directory)] = (open(path, "rb").read(),
                                                      os.stat(path).st_mtime_ns)
    return files


def _records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _number(name):
    match = re.match(r"(?:ckpt|loop|environments)-(\d+)\.", name)
    return int(match.group(1)) if match else None


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_run_resumes_from_the_newest_intact_checkpoint(finished, longer, tmp_path,
                                                                 capfd, case):
    source, weights = finished
    damage, resumed_from, set_aside, total = CASES[case]
    root = tmp_path / "run"
    shutil.copytree(source, root)
    intact_records = [r for r in _records(source / "metrics.jsonl")
                      if r["env_steps"] <= STEPS[resumed_from]]
    damage(root)
    before = _snapshot(root / "checkpoints")
    resumed = []  # the checkpoints as the resume left them, before the rotation goes on

    def on_update(record):
        if not resumed:
            resumed.append(_snapshot(root / "checkpoints"))

    result = pg_keras.train(CONFIG.replace(total_steps=total), root_dir=str(root),
                            callbacks=[pg_keras.Checkpointing(every=CHECKPOINT_EVERY),
                                       pg_keras.ProgressLogger(bar=False),
                                       pg_keras.LambdaCallback(on_update_end=on_update)])

    out, err = capfd.readouterr()
    lines = re.findall(r"resumed from (\S+) at (\d+) env steps", out)
    assert lines == [(str(root / "checkpoints" / f"ckpt-{resumed_from}"),
                      str(STEPS[resumed_from]))], out
    for a, b in zip(weights if total == 1200 else _weights(longer.learner),
                    _weights(result.learner)):
        np.testing.assert_array_equal(a, b)
    after = resumed[0] if resumed else _snapshot(root / "checkpoints")
    # The resumed checkpoint and the older ones are untouched.
    for name, content in before.items():
        number = _number(name)
        if number is not None and number <= resumed_from:
            assert after.get(name) == content, name
    damaged = {name: content for name, content in before.items()
               if _number(name) == 12 and os.path.dirname(name) == ""}
    if set_aside:
        assert {os.path.join("damaged", "ckpt-12", name): content
                for name, content in damaged.items()}.items() <= after.items()
        said = [line for line in err.splitlines() if "checkpoint 12" in line]
        assert len(said) == 1 and "damaged/ckpt-12" in said[0], err
    else:
        assert not os.path.exists(root / "checkpoints" / "damaged")
        assert {name: after[name] for name in damaged} == damaged  # not even rewritten
    _check_metrics(root, case, intact_records, total, err)


def _check_metrics(root, case, intact_records, total, err):
    """Every record up to the resumed step is kept (but a damaged one), each update once."""
    records = _records(root / "metrics.jsonl")
    damaged_line = case.startswith("a metrics")
    for record in intact_records:
        if record["env_steps"] != 600 or not damaged_line:
            assert record in records, record
    assert [r["env_steps"] for r in records] == [
        s for s in range(100, total + 1, 100) if s != 600 or not damaged_line]
    if damaged_line:
        assert re.search(r"skipped 1 damaged line\(s\) of \S+metrics.jsonl", err), err
        assert (root / "metrics.jsonl.damaged").exists()


def test_no_checkpoint_that_restores_is_one_line_and_changes_nothing(finished, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(finished[0], root)
    for number in (4, 8, 12):
        _truncate(root / "checkpoints" / f"loop-{number}.json")
    before = _snapshot(root)

    with pytest.raises(pg_keras.InputError) as error:
        pg_keras.train(CONFIG.replace(total_steps=2400), root_dir=str(root), callbacks=EVERY)

    message = str(error.value)
    assert "\n" not in message and message.startswith("no checkpoint in"), message
    for number in (12, 8, 4):
        assert f"checkpoint {number}: loop-{number}.json is not JSON" in message
    after = _snapshot(root)
    # No file changes (the lock names its process), no checkpoint file is even rewritten,
    # and the only new file is an empty TensorBoard event file.
    assert {k: v[0] for k, v in after.items() if k != ".lock" and k in before} == {
        k: v[0] for k, v in before.items() if k != ".lock"}
    assert {k: v for k, v in after.items() if k.startswith("checkpoints")} == {
        k: v for k, v in before.items() if k.startswith("checkpoints")}
    assert all(k.startswith("tensorboard") for k in set(after) - set(before))

    # Asked to overwrite, the run moves them all aside and starts over.
    again = pg_keras.train(CONFIG, root_dir=str(root), callbacks=[
        pg_keras.Checkpointing(every=CHECKPOINT_EVERY, overwrite=True)])
    for a, b in zip(finished[1], _weights(again.learner)):
        np.testing.assert_array_equal(a, b)
    kept = _snapshot(root / "checkpoints" / "damaged")
    for name, content in before.items():
        number = _number(os.path.basename(name))
        if os.path.dirname(name) == "checkpoints" and number is not None:
            moved = os.path.join(f"ckpt-{number}", os.path.basename(name))
            assert kept[moved][0] == content[0], name


def test_a_save_cut_short_before_any_checkpoint_starts_the_run(finished, tmp_path, capfd):
    root = tmp_path / "run"
    shutil.copytree(finished[0], root)
    checkpoints = root / "checkpoints"
    for name in os.listdir(checkpoints):  # all but the loop state and envs of the first
        if os.path.isfile(checkpoints / name) and name not in ("loop-4.json",
                                                               "environments-4.pkl"):
            os.remove(checkpoints / name)
    result = pg_keras.train(CONFIG, root_dir=str(root), callbacks=EVERY)
    for a, b in zip(finished[1], _weights(result.learner)):
        np.testing.assert_array_equal(a, b)
    assert sorted(os.listdir(checkpoints / "damaged" / "ckpt-4")) == [
        "environments-4.pkl", "loop-4.json"]
    assert "ckpt-4 was never written (a save cut short)" in capfd.readouterr().err


def test_checkpoints_without_a_config_are_not_overwritten(finished, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(finished[0], root)
    os.remove(root / "config.json")
    before = _snapshot(root / "checkpoints")
    with pytest.raises(pg_keras.InputError, match="holds checkpoints but no config.json"):
        pg_keras.train(CONFIG, root_dir=str(root), callbacks=EVERY)
    assert _snapshot(root / "checkpoints") == before


def test_a_checkpoint_of_another_format_is_refused_in_one_line(finished, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(finished[0], root)
    loop = json.loads((root / "checkpoints" / "loop-12.json").read_text())
    (root / "checkpoints" / "loop-12.json").write_text(json.dumps({**loop,
                                                                   "format_version": 1}))
    with pytest.raises(pg_keras.InputError) as error:
        pg_keras.train(CONFIG, root_dir=str(root), callbacks=EVERY)
    assert "loop-12.json holds a checkpoint of format 1; this version of pg_keras reads " \
           f"format {FORMAT_VERSION} only: train again" in str(error.value)


def test_the_launcher_refuses_a_run_with_no_intact_checkpoint_in_one_line(finished,
                                                                          tmp_path):
    root = tmp_path / "run"
    shutil.copytree(finished[0], root)
    for number in (4, 8, 12):
        os.remove(root / "checkpoints" / f"environments-{number}.pkl")
    before = _snapshot(root / "checkpoints")
    flags = ["--env_id=CartPole-v1", "--total_steps=2400", "--num_envs=4",
             "--steps_per_update=25", "--eval_every=0", "--eval_episodes=2",
             "--hidden_sizes=8", "--value_hidden_sizes=8", "--lr_schedule=constant",
             f"--checkpoint_every={CHECKPOINT_EVERY}", "--noexport", "--quiet",
             f"--root_dir={root}"]
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-m", "experiments.train", *flags], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 2, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("train: error:")]
    assert len(errors) == 1 and "no checkpoint in" in errors[0], run.stderr[-3000:]
    assert "environments-12.pkl is missing" in errors[0]
    assert "Traceback" not in run.stderr
    assert _snapshot(root / "checkpoints") == before


def test_a_finished_run_continued_to_a_larger_total_equals_one_run_of_that_total(
        finished, longer, tmp_path):
    root = tmp_path / "run"
    shutil.copytree(finished[0], root)
    continued = pg_keras.train(CONFIG.replace(total_steps=LONGER), root_dir=str(root),
                               callbacks=EVERY)

    assert continued.env_steps == longer.env_steps == LONGER
    for a, b in zip(_weights(continued.learner), _weights(longer.learner)):
        np.testing.assert_array_equal(a, b)

    def figures(history):
        return [{k: v for k, v in r.items() if k not in ("wall_seconds", "steps_per_second")}
                for r in history]

    assert len(continued.history) == LONGER // 100
    assert figures(continued.history) == figures(longer.history)
    assert figures(_records(root / "metrics.jsonl")) == figures(longer.history)
    with open(root / "config.json") as f:
        assert json.load(f)["total_steps"] == LONGER


def test_new_intervals_continue_a_run_and_a_smaller_total_is_another_config(finished,
                                                                            tmp_path):
    root = tmp_path / "run"
    shutil.copytree(finished[0], root)
    with pytest.raises(pg_keras.InputError, match=r"different config \(total_steps: 1200 -> "
                                                  r"800\); pass Checkpointing\(overwrite=True\)"):
        pg_keras.train(CONFIG.replace(total_steps=800), root_dir=str(root))

    result = pg_keras.train(CONFIG.replace(total_steps=1800, eval_every=400),
                            root_dir=str(root), callbacks=[pg_keras.Checkpointing(every=200)])

    # Evaluated and checkpointed from the resumed step on at multiples of the new intervals
    # (1,200: the first run's final evaluation; 1,800: the final one).
    assert [e.env_steps for e in result.evaluations] == [1200, 1600, 1800]
    names = os.listdir(root / "checkpoints")
    assert sorted(n for n in names if n.endswith(".index")) == [
        "ckpt-14.index", "ckpt-16.index", "ckpt-18.index"]
    with open(root / "config.json") as f:
        stored = json.load(f)
    assert (stored["total_steps"], stored["eval_every"]) == (1800, 400)


def test_restoring_weights_skips_a_damaged_checkpoint_and_changes_nothing(finished,
                                                                          tmp_path, capfd):
    root = tmp_path / "run"
    shutil.copytree(finished[0], root)
    _truncate(root / "checkpoints" / DATA)
    before = _snapshot(root)

    learner = pg_keras.run_dir.restore_learner(str(root))

    key = "learner/policy_variables/0/.ATTRIBUTES/VARIABLE_VALUE"
    np.testing.assert_array_equal(
        learner.policy_variables[0].numpy(),
        tf.train.load_checkpoint(str(root / "checkpoints" / "ckpt-8")).get_tensor(key))
    said = [line for line in capfd.readouterr().err.splitlines() if "checkpoint 12" in line]
    assert len(said) == 1 and "restoring checkpoint 8 instead" in said[0], said
    assert _snapshot(root) == before
