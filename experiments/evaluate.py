"""``python -m experiments.evaluate``: the installed `pg-keras-evaluate` command, run from a checkout."""

from pg_keras.cli.evaluate import launch

if __name__ == "__main__":
    launch()
