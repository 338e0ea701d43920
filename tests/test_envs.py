"""Tests of pg_keras.envs: step-by-step parity with gymnasium, spaces, resets, time limits,
same-step autoreset, determinism, and a compiled (XLA) rollout equal to the eager one.

Parity: the TF state is written into a gymnasium env (``unwrapped.state`` in float64, and
the TimeLimit's elapsed steps), both take the same action, and observation, reward,
terminated, truncated and the next state must agree to float32 precision. The TF side
runs the whole batch at once; gymnasium runs one env at a time.
"""

import math

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from pg_keras import envs
from pg_keras.envs import EnvState, autoreset_step

IDS = ["CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCar-v0", "MountainCarContinuous-v0"]
RTOL, ATOL = 1e-4, 1e-5

# gymnasium's reset distributions, one (low, high) per physics column.
RESET_BOUNDS = {
    "CartPole-v1": ([-0.05] * 4, [0.05] * 4),
    "Acrobot-v1": ([-0.1] * 4, [0.1] * 4),
    "Pendulum-v1": ([-math.pi, -1.0], [math.pi, 1.0]),
    "MountainCar-v0": ([-0.6, 0.0], [-0.4, 0.0]),
    "MountainCarContinuous-v0": ([-0.6, 0.0], [-0.4, 0.0]),
}

# Physics columns that are angles gymnasium wraps into [-pi, pi]: compared modulo 2*pi,
# since float32 and float64 may land on opposite sides of the seam.
WRAPPED_COLUMNS = {"Acrobot-v1": [0, 1]}


def _seed(a, b=0):
    return tf.constant([a, b], tf.int32)


def _gym_env(env_id):
    env = gym.make(env_id, disable_env_checker=True)
    env.reset(seed=0)
    return env


def _random_actions(env, rng, shape):
    """Random actions of ``shape`` (+ the action shape); Box actions overshoot the bounds
    by half their range on either side, so that clipping is exercised."""
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(0, space.n, size=shape).astype(np.int32)
    span = space.high - space.low
    return rng.uniform(space.low - span / 2, space.high + span / 2,
                       size=(*shape, *space.shape)).astype(np.float32)


def _broad_physics(env_id, rng, n):
    """States spread over the whole region an episode can visit, and beyond the
    termination thresholds, so that every branch of the dynamics is reached."""
    u = rng.uniform
    if env_id == "CartPole-v1":
        cols = [u(-2.6, 2.6, n), u(-3, 3, n), u(-0.25, 0.25, n), u(-3, 3, n)]
    elif env_id == "Acrobot-v1":
        cols = [u(-np.pi, np.pi, n), u(-np.pi, np.pi, n),
                u(-4 * np.pi, 4 * np.pi, n), u(-9 * np.pi, 9 * np.pi, n)]
    elif env_id == "Pendulum-v1":
        cols = [u(-20, 20, n), u(-8, 8, n)]
    else:
        position, velocity = u(-1.2, 0.6, n), u(-0.07, 0.07, n)
        # Some cars pressed against the left wall, moving left: the stop-dead rule.
        position[: n // 8], velocity[: n // 8] = -1.2, -u(0, 0.07, n // 8)
        cols = [position, velocity]
    return np.stack(cols, axis=1).astype(np.float32)


def _angle_gap(a, b):
    return np.abs((a - b + np.pi) % (2 * np.pi) - np.pi)


def _gym_reference(gym_env, physics, elapsed, actions):
    """gymnasium's step from each row of physics [B, D] with elapsed [B] and actions [B, ...],
    one env at a time; returns a dict of [B, ...] arrays."""
    raw = gym_env.unwrapped
    ref = {"obs": [], "reward": [], "terminated": [], "truncated": [], "physics": []}
    for b in range(len(physics)):
        raw.state = physics[b].astype(np.float64)
        if hasattr(raw, "steps_beyond_terminated"):  # CartPole's after-the-end bookkeeping
            raw.steps_beyond_terminated = None
        gym_env._elapsed_steps = int(elapsed[b])  # the outermost wrapper is the TimeLimit
        action = int(actions[b]) if actions.ndim == 1 else actions[b]
        obs, reward, terminated, truncated, _ = gym_env.step(action)
        for key, value in zip(ref, (obs, reward, terminated, truncated,
                                    np.asarray(raw.state, np.float64))):
            ref[key].append(value)
    return {key: np.array(value) for key, value in ref.items()}


def _physics_gap(env_id, a, b):
    gap = np.abs(a - b)
    wrapped = WRAPPED_COLUMNS.get(env_id, [])
    gap[:, wrapped] = _angle_gap(a[:, wrapped], b[:, wrapped])
    return gap


def _check_one_step(env, gym_env, physics, elapsed, actions, slack=None):
    """Steps the TF batch and gymnasium env by env from the same states with the same
    actions, asserts agreement, and returns the largest absolute errors.

    slack: optional dict of extra absolute tolerance, "obs" [B, obs_dim] and "physics"
    [B, D], for states where the step itself amplifies rounding (see the Acrobot test).
    """
    state = EnvState(tf.constant(physics), tf.constant(elapsed, tf.int32))
    next_state, reward, terminated, truncated = env.step(state, tf.constant(actions))
    obs, got_physics = env.observe(next_state).numpy(), next_state.physics.numpy()
    ref = _gym_reference(gym_env, physics, elapsed, actions)
    slack = slack or {"obs": 0.0, "physics": 0.0}

    obs_error = np.abs(obs - ref["obs"])
    physics_error = _physics_gap(env.id, got_physics, ref["physics"])
    assert np.all(obs_error <= ATOL + RTOL * np.abs(ref["obs"]) + slack["obs"]), obs_error.max(axis=0)
    assert np.all(physics_error <= ATOL + RTOL * np.abs(ref["physics"]) + slack["physics"]), \
        physics_error.max(axis=0)
    np.testing.assert_allclose(reward.numpy(), ref["reward"], rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(terminated.numpy(), ref["terminated"])
    np.testing.assert_array_equal(truncated.numpy(), ref["truncated"])
    np.testing.assert_array_equal(next_state.elapsed.numpy(), elapsed + 1)
    return {
        "obs": obs_error.max(),
        "reward": np.abs(reward.numpy() - ref["reward"]).max(),
        "physics": physics_error.max(),
        "terminated": int(terminated.numpy().sum()),
        "truncated": int(truncated.numpy().sum()),
    }


# Interface.

def test_registry_lists_the_ported_envs_and_rejects_unknown_ids():
    assert set(envs.ids()) == set(IDS) == set(envs.REGISTRY)
    for env_id in IDS:
        assert envs.make(env_id).id == env_id
    with pytest.raises(ValueError, match=r"Nope-v0.*CartPole-v1"):
        envs.make("Nope-v0")
    with pytest.raises(ValueError, match="max_episode_steps"):
        envs.make("CartPole-v1", max_episode_steps=0)
    assert envs.make("CartPole-v1", max_episode_steps=7).max_episode_steps == 7


@pytest.mark.parametrize("env_id", IDS)
def test_spaces_and_time_limit_equal_gymnasium(env_id):
    env, reference = envs.make(env_id), gym.make(env_id, disable_env_checker=True)
    assert env.observation_space == reference.observation_space
    assert env.action_space == reference.action_space
    assert env.observation_space.dtype == np.float32
    assert env.max_episode_steps == gym.spec(env_id).max_episode_steps


def test_seed_must_be_a_pair_of_integers():
    env = envs.make("CartPole-v1")
    with pytest.raises(ValueError, match="shape"):
        env.reset(4, tf.constant([1, 2, 3]))
    with pytest.raises(ValueError, match="dtype"):
        env.reset(4, tf.constant([1.0, 2.0]))


# Resets.

@pytest.mark.parametrize("env_id", IDS)
def test_reset_draws_from_gymnasiums_distribution(env_id):
    env = envs.make(env_id)
    state = env.reset(4096, _seed(3))
    physics, obs = state.physics.numpy(), env.observe(state).numpy()
    low, high = (np.array(bound, np.float32) for bound in RESET_BOUNDS[env_id])
    assert physics.dtype == obs.dtype == np.float32
    assert physics.shape == (4096, len(low)) and obs.shape == (4096, *env.observation_space.shape)
    np.testing.assert_array_equal(state.elapsed.numpy(), np.zeros(4096, np.int32))
    assert np.all(physics >= low) and np.all(physics <= high)
    # Uniform over the whole interval: the extremes come near both ends, the mean to the
    # middle (4096 draws: the standard error of the mean is under 1% of the range).
    span = high - low
    assert np.all(physics.min(axis=0) <= low + 0.01 * span)
    assert np.all(physics.max(axis=0) >= high - 0.01 * span)
    np.testing.assert_allclose(physics.mean(axis=0), (low + high) / 2, atol=0.03 * span.max())
    space = env.observation_space
    assert np.all(obs >= space.low) and np.all(obs <= space.high)
    # The table above is gymnasium's: its own resets fall inside it.
    reference = gym.make(env_id, disable_env_checker=True)
    for seed in range(50):
        reference.reset(seed=seed)
        assert np.all(low <= reference.unwrapped.state) and np.all(reference.unwrapped.state <= high)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_reset_is_a_function_of_the_seed(env_id):
    env = envs.make(env_id)
    first, again = env.reset(64, _seed(5, 6)), env.reset(64, _seed(5, 6))
    other = env.reset(64, _seed(5, 7))
    np.testing.assert_array_equal(first.physics, again.physics)
    assert not np.any(first.physics.numpy() == other.physics.numpy())
    # Under XLA the same random draws, up to the rounding of a fused multiply-add.
    compiled = tf.function(env.reset, jit_compile=True)(64, _seed(5, 6))
    np.testing.assert_allclose(first.physics, compiled.physics, rtol=1e-6, atol=1e-8)


# Parity with gymnasium.

@pytest.mark.parametrize("env_id", IDS)
def test_random_trajectories_match_gymnasium_step_by_step(env_id):
    """256 envs x 60 steps of random actions, autoreset between steps; elapsed counts
    start anywhere in the episode so that time limits fall inside the window."""
    num_envs, num_steps = 256, 60
    env, gym_env = envs.make(env_id), _gym_env(env_id)
    rng = np.random.default_rng(0)
    state = env.reset(num_envs, _seed(1))
    state = state._replace(elapsed=tf.constant(
        rng.integers(0, env.max_episode_steps, num_envs), tf.int32))
    counts = {"terminated": 0, "truncated": 0}
    for t in range(num_steps):
        actions = _random_actions(env, rng, (num_envs,))
        errors = _check_one_step(env, gym_env, state.physics.numpy(), state.elapsed.numpy(), actions)
        for key in counts:
            counts[key] += errors[key]
        state, _, _, _, _, _ = autoreset_step(
            env, state, actions, tf.random.experimental.stateless_fold_in(_seed(2), t))
    assert counts["truncated"] > 0
    if env_id == "CartPole-v1":  # random pushes topple the pole within ~20 steps
        assert counts["terminated"] > 100


@pytest.mark.parametrize("env_id", IDS)
def test_one_step_from_states_all_over_the_state_space_matches_gymnasium(env_id):
    env, gym_env = envs.make(env_id), _gym_env(env_id)
    rng = np.random.default_rng(1)
    physics = _broad_physics(env_id, rng, 2048)
    elapsed = rng.integers(0, env.max_episode_steps, len(physics)).astype(np.int32)
    actions = _random_actions(env, rng, (2048,))
    slack = None
    if env_id == "Acrobot-v1":
        # At high speeds one RK4 step of 0.2 s is badly conditioned: in float64, moving
        # the start by one part in 1e7 moves the end by up to one part in 1e3 (the
        # unclipped speeds blow up to 100+ rad/s). No float32 integrator can do better
        # there, so the tolerance grows by what a 1e-6 relative nudge of the start does
        # to gymnasium's own result; the well-conditioned majority keeps the plain one.
        nudged = _gym_reference(gym_env, physics * np.float32(1 + 1e-6), elapsed, actions)
        plain = _gym_reference(gym_env, physics, elapsed, actions)
        slack = {"obs": np.abs(nudged["obs"] - plain["obs"]),
                 "physics": _physics_gap(env_id, nudged["physics"], plain["physics"])}
        ill_conditioned = np.any(slack["obs"] > ATOL + RTOL * np.abs(plain["obs"]), axis=1)
        assert ill_conditioned.mean() < 0.05  # a few states, not most
    errors = _check_one_step(env, gym_env, physics, elapsed, actions, slack)
    if env_id != "Pendulum-v1":  # Pendulum never terminates; the others must, here
        assert 0 < errors["terminated"] < 2048


def test_acrobot_wraps_angles_by_whole_turns_like_gymnasium():
    from pg_keras.envs.core import wrap_angle
    x = np.array([-7.0, -np.pi - 1e-3, -np.pi, 0.5, np.pi, np.pi + 1e-3, 7.0, 20.0], np.float32)
    expected = []
    for value in x.astype(np.float64):  # gymnasium's rule: shift by 2*pi until inside
        while value > np.pi:
            value -= 2 * np.pi
        while value < -np.pi:
            value += 2 * np.pi
        expected.append(value)
    wrapped = wrap_angle(tf.constant(x)).numpy()
    assert np.all(np.abs(wrapped) <= np.float32(np.pi))
    # float32(pi) lies above the float64 pi, so at the seam the two may pick opposite
    # ends (the same angle); elsewhere they agree as numbers.
    assert np.all(_angle_gap(wrapped, np.array(expected)) < 2e-6)
    off_seam = np.abs(np.abs(x) - np.pi) > 1e-4
    np.testing.assert_allclose(wrapped[off_seam], np.array(expected)[off_seam], atol=2e-6)
    assert wrapped[3] == x[3]  # inside the interval: untouched


# Time limit and autoreset.

@pytest.mark.parametrize("env_id", IDS)
def test_truncated_exactly_when_the_time_limit_is_reached(env_id):
    env = envs.make(env_id)
    num_envs, limit = 8, env.max_episode_steps
    actions = tf.constant(_random_actions(env, np.random.default_rng(2), (limit + 1, num_envs)))

    @tf.function
    def flags():
        def body(state, action):
            state, _, _, truncated = env.step(state, action)
            return state, truncated
        _, truncated = tf.scan(lambda carry, a: body(carry[0], a), actions,
                               initializer=(env.reset(num_envs, _seed(4)), tf.zeros([num_envs], tf.bool)))
        return truncated

    truncated = flags().numpy()  # [limit + 1, num_envs]; row t is step t + 1
    np.testing.assert_array_equal(truncated[: limit - 1], False)
    np.testing.assert_array_equal(truncated[limit - 1:], True)


@pytest.mark.parametrize("env_id", IDS)
def test_autoreset_restarts_ended_episodes_in_the_same_step(env_id):
    env = envs.make(env_id)
    rng = np.random.default_rng(3)
    num_envs = 512
    elapsed = rng.integers(0, env.max_episode_steps, num_envs).astype(np.int32)
    elapsed[::4] = env.max_episode_steps - 1  # a quarter reach the time limit now
    state = EnvState(tf.constant(_broad_physics(env_id, rng, num_envs)), tf.constant(elapsed))
    actions = tf.constant(_random_actions(env, rng, (num_envs,)))
    seed = _seed(8, 9)

    new_state, obs, reward, terminated, truncated, final_obs = autoreset_step(env, state, actions, seed)
    stepped, step_reward, step_terminated, step_truncated = env.step(state, actions)
    fresh = env.reset(num_envs, seed)
    done = (step_terminated | step_truncated).numpy()
    assert 0 < done.sum() < num_envs
    if env_id != "Pendulum-v1":
        assert np.any(step_terminated.numpy() & ~step_truncated.numpy())

    np.testing.assert_array_equal(reward, step_reward)
    np.testing.assert_array_equal(terminated, step_terminated)
    np.testing.assert_array_equal(truncated, step_truncated)
    np.testing.assert_array_equal(final_obs, env.observe(stepped))
    # Ended envs: the new episode's first state and observation, counter back to 0.
    np.testing.assert_array_equal(new_state.physics.numpy()[done], fresh.physics.numpy()[done])
    np.testing.assert_array_equal(obs.numpy()[done], env.observe(fresh).numpy()[done])
    np.testing.assert_array_equal(new_state.elapsed.numpy()[done], 0)
    assert not np.any(np.all(obs.numpy()[done] == final_obs.numpy()[done], axis=1))
    # The others go on: the stepped state, one more step counted, obs == final_obs.
    np.testing.assert_array_equal(new_state.physics.numpy()[~done], stepped.physics.numpy()[~done])
    np.testing.assert_array_equal(new_state.elapsed.numpy()[~done], elapsed[~done] + 1)
    np.testing.assert_array_equal(obs.numpy()[~done], final_obs.numpy()[~done])


# Compiled rollouts.

def _rollout(env, state, actions, seed):
    """A tf.while_loop of autoreset steps over actions [T, N, ...]; returns [T, N, ...]
    stacks of the state after each step (physics and elapsed), observations, rewards and
    done flags."""
    num_steps = actions.shape[0]

    def body(t, state, arrays):
        state, obs, reward, terminated, truncated, _ = autoreset_step(
            env, state, actions[t], tf.random.experimental.stateless_fold_in(seed, t))
        values = (state.physics, state.elapsed, obs, reward, terminated | truncated)
        return t + 1, state, tuple(ta.write(t, v) for ta, v in zip(arrays, values))

    arrays = tuple(tf.TensorArray(dtype, num_steps)
                   for dtype in (tf.float32, tf.int32, tf.float32, tf.float32, tf.bool))
    _, _, arrays = tf.while_loop(lambda t, *_: t < num_steps, body,
                                 (tf.constant(0), state, arrays))
    return tuple(ta.stack() for ta in arrays)


@pytest.mark.parametrize("env_id", IDS)
def test_xla_while_loop_rollout_matches_the_eager_rollout(env_id):
    env = envs.make(env_id)
    num_envs, num_steps = 64, 100
    actions = _random_actions(env, np.random.default_rng(4), (num_steps, num_envs))
    if actions.dtype == np.int32:
        actions = actions.astype(np.int64)  # what a tfp Categorical samples
    actions, seed = tf.constant(actions), _seed(10, 11)
    start = env.reset(num_envs, _seed(12))
    compiled = tf.function(lambda state: _rollout(env, state, actions, seed), jit_compile=True)
    physics, elapsed, obs, reward, done = (x.numpy() for x in compiled(start))

    # Step by step: from each state the compiled loop reached, the eager step reaches
    # the compiled loop's next state. XLA may fuse arithmetic differently (e.g. into
    # FMAs), so values agree to float32 precision and episode boundaries exactly.
    before, free = start, start
    free_obs, free_done = [], []
    for t in range(num_steps):
        t_seed = tf.random.experimental.stateless_fold_in(seed, t)
        after, o, r, term, trunc, _ = autoreset_step(env, before, actions[t], t_seed)
        np.testing.assert_allclose(after.physics, physics[t], rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(after.elapsed, elapsed[t])
        np.testing.assert_allclose(o, obs[t], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(r, reward[t], rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(term | trunc, done[t])
        before = EnvState(tf.constant(physics[t]), tf.constant(elapsed[t]))
        free, o, _, term, trunc, _ = autoreset_step(env, free, actions[t], t_seed)
        free_obs.append(o), free_done.append(term | trunc)
    # Left to run on its own, the eager rollout stays with the compiled one: same episode
    # boundaries, and values apart only by rounding differences that the unstable
    # equilibria (the pole, the inverted pendulum) amplify over 100 steps.
    np.testing.assert_array_equal(np.stack(free_done), done)
    np.testing.assert_allclose(np.stack(free_obs), obs, rtol=1e-3, atol=1e-3)
    if env_id == "CartPole-v1":
        assert done.sum() > 0  # resets happened inside the compiled loop
    np.testing.assert_array_equal(compiled(start)[2], obs)  # same seed, same rollout


def test_the_envs_package_imports_nothing_of_the_package_above_it():
    import ast
    import pathlib

    outside = []
    for path in pathlib.Path(envs.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            outside += [f"{path.name}: {name}" for name in names if name.split(".")[0]
                        == "pg_keras" and not name.startswith("pg_keras.envs")]
    assert not outside
