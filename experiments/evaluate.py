"""``python -m experiments.evaluate``: the installed `pg-keras-evaluate` command, run from a checkout."""

from experiments import launch

if __name__ == "__main__":
    launch("evaluate")
