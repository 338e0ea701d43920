"""experiments.solve_rate records finished runs only."""

from __future__ import annotations

import types

import pg_keras
from tests import launchers


def test_a_signal_stops_the_sweep_and_records_no_row(tmp_path, monkeypatch):
    calls = []

    def stopped_train(config, **kwargs):
        calls.append(config.seed)
        return types.SimpleNamespace(interrupted="SIGTERM", env_steps=1024, evaluations=[],
                                     solved_at=None)

    monkeypatch.setattr(pg_keras, "train", stopped_train)
    out = tmp_path / "rows.jsonl"
    run = launchers.run("experiments.solve_rate", "--seeds=0,1,2", "--target=5",
                        f"--output={out}")
    assert run.returncode == 143, run.stderr[-2000:]
    assert calls == [0]
    assert "seed 0 stopped by SIGTERM at 1024 env steps; not recorded" in run.stdout
    assert not out.exists()
