"""Graph-native TensorFlow versions of gymnasium's classic-control tasks.

For the compiled collection path: a whole rollout (policy and env) runs as one
``tf.while_loop``, in a ``tf.function`` and under XLA, with no Python in the loop.
Each env reproduces gymnasium's dynamics, rewards, termination rules, time limit,
spaces and reset distribution, in float32, for a batch of num_envs envs at once.

Available: CartPole-v1, Acrobot-v1, Pendulum-v1, MountainCar-v0,
MountainCarContinuous-v0 (``ids()``; ``REGISTRY`` maps each id to its class).

The interface is functional: an env holds constants only, and its state is a value.

    import tensorflow as tf
    from pg_keras import envs

    env = envs.make("CartPole-v1")           # ValueError naming the available ids otherwise
    env.observation_space, env.action_space  # gymnasium spaces of ONE env
    env.max_episode_steps                    # 500

    seed = tf.constant([0, 42], tf.int32)    # stateless RNG: a [2] int32 seed
    state = env.reset(num_envs, seed)        # EnvState(physics [N, D], elapsed [N] int32)
    obs = env.observe(state)                 # [N, *obs_shape] float32

    # One step, no resets:
    state, reward, terminated, truncated = env.step(state, action)
    # action: [N] ints for Discrete, [N, d] floats for Box (clipped where gymnasium clips);
    # reward [N] float32; terminated, truncated [N] bool (truncated: time limit reached).

    # One step with same-step autoreset (gymnasium's AutoresetMode.SAME_STEP):
    state, obs, reward, terminated, truncated, final_obs = envs.autoreset_step(
        env, state, action, tf.random.experimental.stateless_fold_in(seed, t))
    # Where terminated | truncated: obs is the NEXT episode's first observation and
    # final_obs the observation the step reached (bootstrap a truncation from it);
    # elsewhere obs == final_obs. Pass a different seed each step.

``EnvState.physics`` holds the same variables, in the same order, as gymnasium's
``env.unwrapped.state``, and ``elapsed`` is the TimeLimit's step count; the parity tests
set a gymnasium env to each state and check that both step alike. The state is float32
where gymnasium keeps float64, so long rollouts drift apart as any two float
implementations of a chaotic system do; each single step agrees to float32 precision.
"""

from pg_keras.envs.acrobot import Acrobot
from pg_keras.envs.cartpole import CartPole
from pg_keras.envs.core import Env, EnvState, autoreset_step
from pg_keras.envs.mountain_car import MountainCar, MountainCarContinuous
from pg_keras.envs.pendulum import Pendulum
from pg_keras.envs.registry import REGISTRY, ids, make

__all__ = [
    "Acrobot", "CartPole", "Env", "EnvState", "MountainCar", "MountainCarContinuous",
    "Pendulum", "REGISTRY", "autoreset_step", "ids", "make",
]
