"""The train launcher end to end, as a subprocess: kill it, run it again, same weights."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

FLAGS = ["--total_steps=12288", "--num_envs=4", "--steps_per_update=32", "--eval_every=2048",
         "--eval_episodes=2", "--nouse_progress_bar", "--quiet"]


def _train(root_dir):
    return subprocess.Popen([sys.executable, "-m", "experiments.train", f"--root_dir={root_dir}"]
                            + FLAGS, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _final_variables(root_dir):
    reader = tf.train.load_checkpoint(os.path.join(root_dir, "checkpoints"))
    names = sorted(n for n in reader.get_variable_to_shape_map() if "OPTIMIZER_SLOT" not in n
                   and not n.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter")))
    return {n: reader.get_tensor(n) for n in names}


def test_killed_run_resumes_to_the_same_final_weights(tmp_path):
    reference = _train(tmp_path / "reference")
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-2000:]

    killed_dir = tmp_path / "killed"
    run = _train(killed_dir)
    marker = killed_dir / "checkpoints" / "checkpoint"
    deadline = time.time() + 240
    while not marker.exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert run.poll() is None, "the run finished before it could be killed"
    time.sleep(0.3)
    run.send_signal(signal.SIGKILL)
    run.wait()

    resumed = _train(killed_dir)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert "final evaluation return" in out

    expected, actual = _final_variables(tmp_path / "reference"), _final_variables(killed_dir)
    assert expected.keys() == actual.keys() and len(expected) > 10
    for name in expected:
        np.testing.assert_array_equal(expected[name], actual[name], err_msg=name)
