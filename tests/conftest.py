import os
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def fixture_run_exported(tmp_path_factory):
    """``python -m experiments.export`` of the committed run (tests/fixtures/cartpole-run)
    in a fresh process, TensorFlow's own log level unset: (the completed process, the
    export directory). Read by the test of the launchers' quiet start and by the test that
    today's export of the fixture run equals the committed export."""
    export_dir = tmp_path_factory.mktemp("fixture_export") / "export"
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "PG_KERAS_TF_LOGS")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run(
        [sys.executable, "-m", "experiments.export",
         f"--root_dir={os.path.join(ROOT, 'tests', 'fixtures', 'cartpole-run')}",
         f"--export_dir={export_dir}"], capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=env)
    return run, export_dir
