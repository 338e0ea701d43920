"""Named seed streams: worker 0 keeps a run's seeds, no two streams of a group meet."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from pg_keras.seeding import ACTOR_OFFSET, EVALUATION_OFFSET, SeedStreams

WORKERS = 64
SEEDS = (0, 1, 100, 104, 7919, 104729, 1_000_003, 2**20)
# The largest run the footprints below cover.
NUM_ENVS, EVALUATIONS, EVAL_EPISODES, RESUMPTIONS, DRAWS = 4096, 100_000, 1000, 1000, 10**9


def test_worker_zero_has_the_seeds_of_a_single_process_run():
    for seed in SEEDS:
        streams = SeedStreams(seed)
        assert streams == SeedStreams(seed, 0)
        assert (streams.init, streams.value_init, streams.envs, streams.actor,
                streams.evaluation, streams.sampling) == (
            seed, seed + 7919, seed, seed + 15485863, seed + 1_000_003, seed + 104729)
        assert [streams.evaluation_seed(k) for k in range(3)] == [
            seed + 1_000_003 + k for k in range(3)]


def _integer_footprints(streams):
    """[low, high) ranges of the integer seeds each stream hands to NumPy's SeedSequence
    (gymnasium's resets and the fast actor both seed PCG64 through it)."""
    return {
        "envs": (streams.envs, streams.envs + NUM_ENVS),
        "evaluation": (streams.evaluation,
                       streams.evaluation_seed(EVALUATIONS - 1) + EVAL_EPISODES),
        "actor": (streams.actor, streams.actor + 1),
    }


def _philox_footprints(streams):
    """(key, counter high word) -> [low, high) counter range of each sampling stream."""
    spans = {}
    for resumed_at in [0] + list(range(1, 10**8, 10**8 // RESUMPTIONS)):
        value = streams.resumed_sampling(resumed_at)
        key, high, low = value >> 128, (value >> 64) & (2**64 - 1), value & (2**64 - 1)
        spans[(key, high)] = (low, low + DRAWS)
    return spans


@pytest.mark.parametrize("seed", SEEDS)
def test_no_two_streams_of_any_workers_share_a_seed(seed):
    ranges = []
    for worker in range(WORKERS):
        for name, span in _integer_footprints(SeedStreams(seed, worker)).items():
            ranges.append((span, (worker, name)))
    ranges.sort()
    for ((_, high), owner), ((low, _), other) in zip(ranges, ranges[1:]):
        assert high <= low, (owner, other)
    samplers = {}
    for worker in range(WORKERS):
        for place, span in _philox_footprints(SeedStreams(seed, worker)).items():
            assert place not in samplers, (worker, samplers[place])
            samplers[place] = worker
    # The network initializers are shared: the workers start from the same weights.
    assert len({SeedStreams(seed, w).init for w in range(WORKERS)}) == 1


def test_the_footprint_limits_are_those_documented():
    assert NUM_ENVS <= EVALUATION_OFFSET
    assert EVALUATIONS + EVAL_EPISODES < ACTOR_OFFSET - EVALUATION_OFFSET


def test_workers_sampling_streams_are_apart_and_worker_zero_is_unchanged():
    """Drawn through tf.random.Generator, as the learner draws: worker 0's first draws are
    those of the seed + 104729 stream; each other worker's differ from all of them."""
    generator = tf.random.Generator.from_seed(0)

    def draws(seed):
        generator.reset_from_seed(seed)
        return generator.uniform([64]).numpy()

    reference = tf.random.Generator.from_seed(3 + 104729).uniform([64]).numpy()
    np.testing.assert_array_equal(draws(SeedStreams(3).sampling), reference)
    firsts = [draws(SeedStreams(3, w).sampling) for w in range(8)]
    firsts.append(draws(SeedStreams(3, 1).resumed_sampling(512)))
    values = np.concatenate(firsts)
    assert len(np.unique(values)) == len(values)
    for a, b in itertools.combinations(range(len(firsts)), 2):
        assert not np.isin(firsts[a], firsts[b]).any(), (a, b)
