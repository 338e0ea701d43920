"""Learning curves from run directories.

    python -m experiments.plot --root_dirs=runs/a,runs/b,runs/c --out=curves.png

Runs whose configs differ only in the seed are drawn as one curve: the mean over seeds
with a band from the lowest to the highest seed. The y axis is the greedy evaluation
return (``--source=eval``, from evaluations.jsonl) or the training episodes' mean return
(``--source=train``, from metrics.jsonl).
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

from absl import flags

from pg_keras.cli import common as cli
from experiments.curves import draw_band
from pg_keras.config import InputError
from pg_keras.paths import check_writable_file

# This tool's flags: its own, never absl's global registry.
FLAGS = flags.FlagValues()
flags.DEFINE_list("root_dirs", None, "Run directories to plot.", required=True,
                  flag_values=FLAGS)
flags.DEFINE_string("out", "curves.png", "Output image (PNG, SVG or PDF).", flag_values=FLAGS)
flags.DEFINE_enum("source", "eval", ["eval", "train"], "Which return to plot.",
                  flag_values=FLAGS)
flags.DEFINE_string("title", None, "Figure title; default: the env id(s).", flag_values=FLAGS)


def read_curve(root_dir: str, source: str) -> Tuple[List[float], List[float]]:
    """(env steps, returns) of one run."""
    name, key = (("evaluations.jsonl", "mean_return") if source == "eval"
                 else ("metrics.jsonl", "return_mean"))
    path = os.path.join(root_dir, name)
    if not os.path.exists(path):
        raise InputError(f"{root_dir!r} has no {name}; is it a run directory?")
    steps, values = [], []
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if key in record:
                steps.append(record["env_steps"])
                value = record[key]  # null: no finite episode (pg_keras.strict_json)
                values.append(float("nan") if value is None else value)
    return steps, values


def group_by_config(root_dirs: List[str]) -> Dict[str, List[str]]:
    """Label -> run directories whose configs are equal except for the seed.

    A group's label lists the config fields on which the groups differ (or the run
    directory's name when there is a single group).
    """
    groups: Dict[str, List[str]] = {}
    configs: Dict[str, dict] = {}
    for root_dir in root_dirs:
        with open(os.path.join(root_dir, "config.json")) as f:
            config = json.load(f)
        config.pop("seed", None)
        key = json.dumps(config, sort_keys=True)
        configs.setdefault(key, config)
        groups.setdefault(key, []).append(root_dir)
    differing = sorted({k for c in configs.values() for k in c
                        if any(c.get(k) != o.get(k) for o in configs.values())})
    labels = {}
    for key, dirs in groups.items():
        label = ", ".join(f"{k}={configs[key].get(k)}" for k in differing) or \
            os.path.basename(os.path.normpath(dirs[0]))
        labels[label + (f" ({len(dirs)} seeds)" if len(dirs) > 1 else "")] = dirs
    return labels


def plot(root_dirs: List[str], out: str, source: str = "eval", title: str = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    env_ids = set()
    for label, dirs in group_by_config(root_dirs).items():
        curves = [c for c in (read_curve(d, source) for d in dirs) if c[0]]
        if not curves:
            continue
        for d in dirs:
            with open(os.path.join(d, "config.json")) as f:
                env_ids.add(json.load(f)["env_id"])
        draw_band(ax, curves, label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("greedy evaluation return" if source == "eval" else "training episode return")
    ax.set_title(title or ", ".join(sorted(env_ids)))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="x-small")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def check() -> None:
    """Refuses an unwritable --out and run directories without a config, before drawing."""
    check_writable_file(FLAGS.out, "--out")
    if not FLAGS.root_dirs:
        raise InputError("--root_dirs must name at least one run directory; received none")
    for root_dir in FLAGS.root_dirs:
        if not os.path.isfile(os.path.join(root_dir, "config.json")):
            raise InputError(f"--root_dirs entry {root_dir!r} is not a run directory (it has "
                             "no config.json)")


def main(argv):
    try:
        plot(FLAGS.root_dirs, FLAGS.out, FLAGS.source, FLAGS.title)
    except (ValueError, OSError) as error:  # a damaged file of a run directory
        raise InputError(str(error)) from None
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    cli.run("plot", FLAGS, main, usage=__doc__, bad_input=(InputError,), check=check,
            tensorflow=False)
