"""``python -m experiments.export``: the installed `pg-keras-export` command, run from a checkout."""

from pg_keras.cli.export import launch

if __name__ == "__main__":
    launch()
