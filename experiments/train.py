"""``python -m experiments.train``: the installed `pg-keras-train` command, run from a checkout."""

from experiments import launch

if __name__ == "__main__":
    launch("train")
