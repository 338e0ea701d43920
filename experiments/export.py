"""``python -m experiments.export``: the installed `pg-keras-export` command, run from a checkout."""

from experiments import launch

if __name__ == "__main__":
    launch("export")
