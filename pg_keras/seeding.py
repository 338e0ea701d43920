"""Named random streams: the seed each user of randomness starts from, per worker.

One ``Config.seed`` fixes a whole run. :class:`SeedStreams` turns it into the seeds of
every consumer, by name, for one worker of a group:

    init         Python's and NumPy's global streams while the models are built, and
                 the default policy network's initializers (``value_init``: the value
                 network's); the same on every worker, which start from the same weights
    envs         the training environments' resets (env i of the vector env gets
                 ``envs + i``), the vector action space, and the graph rollout's key
    actor        the NumPy fast actor's sampling stream
    sampling     the TensorFlow sampling stream (a Philox state: see below)
    evaluation   the greedy evaluations' resets (evaluation k, env i gets
                 ``evaluation + k + i``)
    minibatches  the order in which a reused batch's rows form minibatches (the
                 same on every worker and replica, each ordering its own rows)

Worker 0, which is also every single-process run, gets the seeds a run of that seed has
always had, so its weights are unchanged bit for bit. Worker ``w`` gets worker 0's
streams of the seed ``seed + w * WORKER_STRIDE``: the integer seeds a worker uses lie in
``[base, base + ACTOR_OFFSET]``, shorter than the stride, so no two workers share one as
long as ``num_envs <= EVALUATION_OFFSET`` and the evaluations plus episodes per evaluation
stay below ``ACTOR_OFFSET - EVALUATION_OFFSET``.

The sampling stream is a ``tf.random.Generator`` state: its integer seed fills the Philox
counter's low word, so two small seeds give the same stream shifted by their difference.
A worker's sampling stream therefore differs in the Philox key (the seed's bits from 128
up), which worker 0 leaves at 0; a worker that resumes without the chief's saved state
moves to the counter's high word, past every draw it made before.
"""

from __future__ import annotations

import dataclasses

INIT_OFFSET = 0
VALUE_INIT_OFFSET = 7919
SAMPLING_OFFSET = 104729
EVALUATION_OFFSET = 1_000_003
MINIBATCH_OFFSET = 2_750_159
ACTOR_OFFSET = 15485863
WORKER_STRIDE = 1 << 24
_PHILOX_KEY_SHIFT = 128
_PHILOX_COUNTER_HIGH_SHIFT = 64


@dataclasses.dataclass(frozen=True)
class SeedStreams:
    """The seeds of one worker's random streams.

    Args:
        seed: The run's seed (``Config.seed``), a non-negative integer.
        worker: The worker's index in its group; 0 is the chief and a single process.
    """

    seed: int
    worker: int = 0

    @property
    def _base(self) -> int:
        return self.seed + self.worker * WORKER_STRIDE

    @property
    def init(self) -> int:
        """Global streams while the models are built; the default policy network."""
        return self.seed + INIT_OFFSET

    @property
    def value_init(self) -> int:
        """The default value network's initializers."""
        return self.seed + VALUE_INIT_OFFSET

    @property
    def envs(self) -> int:
        """The training environments (env i gets ``envs + i``)."""
        return self._base

    @property
    def actor(self) -> int:
        """The NumPy fast actor's sampling stream."""
        return self._base + ACTOR_OFFSET

    @property
    def evaluation(self) -> int:
        """The evaluations (evaluation k, env i gets ``evaluation + k + i``)."""
        return self._base + EVALUATION_OFFSET

    @property
    def minibatches(self) -> int:
        """The minibatch order's stream (a ``tf.random.Generator`` seed); every worker
        has the chief's, as the update is one computation over all of them."""
        return self.seed + MINIBATCH_OFFSET

    @property
    def sampling(self) -> int:
        """The seed of the TensorFlow sampling stream (``Generator.reset_from_seed``)."""
        return self.resumed_sampling(0)

    def resumed_sampling(self, env_steps: int) -> int:
        """The sampling stream of a worker that resumes at ``env_steps`` without its own
        saved stream (only the chief's is checkpointed): it never repeats a draw of the
        stream before the resumption."""
        return (self.seed + SAMPLING_OFFSET + (env_steps << _PHILOX_COUNTER_HIGH_SHIFT)
                + (self.worker << _PHILOX_KEY_SHIFT))

    def evaluation_seed(self, index: int) -> int:
        """The reset seed of evaluation number ``index`` (0 for the first)."""
        return self.evaluation + index
