"""Model factories the tests name as ``toy_models:NAME`` (tests/ is on the path)."""

import keras


def small(observation_shape, output_units):
    """A valid factory: one hidden layer of 16 units."""
    return keras.Sequential([keras.Input(observation_shape), keras.layers.Dense(16, "tanh"),
                             keras.layers.Dense(output_units)])


def wrong_output(observation_shape, output_units):
    """Breaks the contract: one output unit too many."""
    return keras.Sequential([keras.Input(observation_shape), keras.layers.Dense(output_units + 1)])


def takes_nothing():
    """Not a factory's signature."""
    return small((4,), 2)


NOT_A_FACTORY = 3
