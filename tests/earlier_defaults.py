"""Config's earlier defaults of the fields whose default changed.

For tests whose thresholds or expectations were measured under them: such a test names
these values, so that its subject (not the defaults) is what it checks.
"""

EARLIER_DEFAULTS = {"policy_learning_rate": 3e-3, "value_learning_rate": 3e-3,
                    "normalize_returns": False, "advantage_std_floor": 0.0,
                    "lr_schedule": "constant"}


def with_earlier_defaults(**fields) -> dict:
    """``fields`` with the earlier defaults of the changed fields it does not set."""
    return {**EARLIER_DEFAULTS, **fields}


# The same values as the train launcher's flags.
EARLIER_DEFAULT_FLAGS = [f"--{name}={value}" for name, value in EARLIER_DEFAULTS.items()]
