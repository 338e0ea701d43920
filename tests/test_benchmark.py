"""The benchmark's measurement protocol: alternation, warm-up, medians of paired ratios."""

import json

import pytest

from benchmarks import benchmark
from benchmarks.benchmark import (Timed, _keep_best, interleaved_rates, measure_launcher,
                                   summarize)


def test_subjects_are_timed_in_alternation_after_one_warm_up_each():
    now = [0.0]
    calls = []

    def subject(name, seconds):
        def run():
            calls.append(name)
            now[0] += seconds
        return run

    rates = interleaved_rates(
        {"reference": Timed(subject("reference", 0.5), 100),
         "training": Timed(subject("training", 2.0), 100)},
        repeats=3, clock=lambda: now[0])
    assert calls == ["reference", "training"] * 4  # the first pair is the warm-up
    assert rates == {"reference": [200.0] * 3, "training": [50.0] * 3}


def test_a_slowdown_that_hits_one_round_cancels_out_of_its_ratio():
    now = [0.0]
    slowdown = iter([1.0, 1.0, 1.0, 1.0, 4.0, 4.0, 1.0, 1.0])  # round 2 is 4x slower

    def subject(seconds):
        def run():
            now[0] += seconds * next(slowdown)
        return run

    rates = interleaved_rates({"reference": Timed(subject(1.0), 10),
                               "training": Timed(subject(2.0), 10)},
                              repeats=3, clock=lambda: now[0])
    assert rates["reference"] == [10.0, 2.5, 10.0]
    summary = summarize(rates["training"], rates["reference"])
    assert summary == {"steps_per_second": 5, "reference_steps_per_second": 10,
                       "fraction_of_reference": 0.5, "fraction_range": [0.5, 0.5]}


def test_summary_is_the_median_of_the_paired_ratios_not_the_ratio_of_medians():
    summary = summarize([30.0, 10.0, 60.0], [100.0, 10.0, 100.0])
    assert summary["fraction_of_reference"] == pytest.approx(0.6)  # ratios 0.3, 1.0, 0.6
    assert summary["steps_per_second"] == 30
    assert summary["reference_steps_per_second"] == 100
    assert summary["fraction_range"] == [0.3, 1.0]


def test_the_summary_keeps_each_paths_fastest_cartpole_configuration():
    best = {}
    for path, env_id, num_envs, rate in [("gymnasium", "CartPole-v1", 16, 90),
                                         ("gymnasium", "CartPole-v1", 64, 120),
                                         ("gymnasium", "LunarLander-v3", 8, 500),
                                         ("gymnasium", "CartPole-v1", 256, 110),
                                         ("compiled", "CartPole-v1", 8192, 1900)]:
        _keep_best(best, {"path": path, "env_id": env_id, "num_envs": num_envs,
                          "steps_per_second": rate})
    assert best == {"gymnasium": (120, 64), "compiled": (1900, 8192)}


def test_the_launcher_row_times_the_loop_with_and_without_a_run_directory(tmp_path):
    benchmark._import_heavy()
    row = measure_launcher("CartPole-v1", num_envs=4, steps=8, updates=2, repeats=1,
                           root_dir=str(tmp_path))
    assert row["steps_per_second"] > 0 and row["loop_steps_per_second"] > 0
    assert row["fraction_of_reference"] == row["fraction_range"][0]  # one pair
    assert row["launcher_over_loop"] == row["launcher_over_loop_range"][0]
    # The launcher's subject ran pg_keras.train with the run directory: a warm-up and one
    # timed run of 2 updates each, every record written.
    with open(tmp_path / "metrics.jsonl") as f:
        assert [json.loads(line)["env_steps"] for line in f] == [32, 64, 96, 128]
    assert (tmp_path / "config.json").exists() and (tmp_path / "tensorboard").is_dir()
