"""Run flagfiles over seeds, the way a user runs them, and publish what they reach.

    python -m experiments.suite --tasks=cartpole,acrobot --seeds=100,101,102,103,104 \\
        --root=results --parallel=2
    python -m experiments.suite --tasks=cartpole,acrobot --seeds=100,101,102,103,104 \\
        --root=results --report_only
    python -m experiments.suite --quick      # one short CartPole task, two seeds, a tmp root

A task is a flagfile: ``experiments/configs/<task>.cfg``, or a path. Every (task, seed) is
one run of ``python -m experiments.train --flagfile=... --seed=S
--root_dir=<root>/<task>/seed<S> --noexport``, in a subprocess (``--parallel`` at a time);
its output goes to ``<root>/logs/<task>-seed<S>.log``. A finished run is recorded in
``<root>/runs.jsonl`` (one line per task and seed, with its whole evaluation curve) and not
run again, unless the flagfile's flag lines changed since; an interrupted suite resumes
where it stopped (the train launcher resumes the run in progress from its checkpoint). A
failed run is recorded as failed, reported, and tried again on the next invocation.

Then the report: ``<root>/report.md`` (also printed), one learning-curve PNG per task
(``--plots_dir``), and the results table of docs/results.md, between its
``<!-- results-table`` markers (``--results_page``; not with ``--quick``). The flagfile's header comments give each
row its label and target (see ``experiments/flagfiles.py``).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Dict, List, Optional, Sequence

from absl import flags

from experiments import flagfiles, suite_report
from pg_keras.cli import common as cli, config_flags
from pg_keras import paths
from pg_keras.config import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_FLAGS = ("--total_steps=4000", "--eval_every=2000", "--eval_episodes=3")
INTERRUPTED = (130, 143, -2, -15)

# This tool's flags: its own, never absl's global registry.
FLAGS = flags.FlagValues()
flags.DEFINE_list("tasks", None, "Task names (experiments/configs/<task>.cfg) or flagfile "
                  "paths.", flag_values=FLAGS)
flags.DEFINE_list("seeds", None, "Seeds, one run each, for every task; default: each "
                  "flagfile's '# seeds:' header, or 100-104.", flag_values=FLAGS)
flags.DEFINE_string("root", "results", "Directory of the runs, runs.jsonl, logs and report.",
                    flag_values=FLAGS)
flags.DEFINE_integer("parallel", 1, "Runs at a time (processes).", flag_values=FLAGS)
flags.DEFINE_bool("quick", False, "A smoke test: CartPole, seeds 0,1, 4,000 steps, a tmp "
                  "root, 2 runs at a time, the results page left alone (explicit flags win).",
                  flag_values=FLAGS)
flags.DEFINE_bool("report_only", False, "Run nothing; report what runs.jsonl holds.",
                  flag_values=FLAGS)
flags.DEFINE_string("results_page", os.path.join(REPO, "docs", "results.md"), "Markdown page "
                    "whose results table is regenerated; '' for none.", flag_values=FLAGS)
flags.DEFINE_string("plots_dir", os.path.join(REPO, "docs", "results"), "Where the "
                    "learning-curve PNGs go (<task>.png).", flag_values=FLAGS)
flags.DEFINE_float("hold_fraction", 0.95, "A solved run stays solved if every later "
                   "evaluation is >= target - (1 - hold_fraction) * |target| (a flagfile's "
                   "'# hold_fraction:' header wins).", flag_values=FLAGS)
flags.DEFINE_bool("overwrite", False, "Start over in a run directory that holds a run of an "
                  "older version of the flagfile (passes --overwrite to the train launcher).",
                  flag_values=FLAGS)
flags.DEFINE_integer("bootstrap_reps", 10_000, "Bootstrap replicates of the IQM's interval.",
                     flag_values=FLAGS)


class BadInput(ValueError):
    """Input the suite refuses before running anything."""


def main(argv):
    plan = _plan()
    records = load_records(plan["root"])
    failures = []
    if not FLAGS.report_only:
        failures = run_all(plan, records)
    write_report(plan, records)
    if failures:
        print(f"{len(failures)} run(s) failed: {', '.join(failures)}; see {plan['root']}/logs",
              file=sys.stderr)
        return 1


def _plan() -> dict:
    """The tasks, seeds, paths and extra flags of this invocation, validated."""
    quick = FLAGS.quick
    tasks = FLAGS.tasks if FLAGS["tasks"].present or not quick else ["cartpole"]
    if not tasks:
        raise BadInput("tasks must name at least one flagfile (--tasks=cartpole,...); "
                       f"received --tasks={','.join(tasks or [])!r}")
    seeds = FLAGS.seeds if FLAGS["seeds"].present or not quick else ["0", "1"]
    if seeds is not None:
        try:
            seeds = [int(s) for s in seeds]
        except ValueError:
            raise BadInput(f"seeds must be comma-separated integers; received "
                           f"--seeds={','.join(seeds)}") from None
        if not seeds or len(set(seeds)) != len(seeds):
            raise BadInput(f"seeds must be distinct and at least one; received --seeds={seeds}")
    if FLAGS.parallel < 1:
        raise BadInput(f"parallel must be >= 1; received --parallel={FLAGS.parallel}")
    if FLAGS.bootstrap_reps < 1:
        raise BadInput(f"bootstrap_reps must be >= 1; received "
                       f"--bootstrap_reps={FLAGS.bootstrap_reps}")
    if not 0.0 <= FLAGS.hold_fraction <= 1.0:  # NaN fails too
        raise BadInput(f"hold_fraction must be in [0, 1]; received "
                       f"--hold_fraction={FLAGS.hold_fraction}")
    try:
        files = [flagfiles.read(t) for t in tasks]
        task_seeds = {ff.name: seeds or ff.seeds for ff in files}
    except flagfiles.FlagfileError as error:
        raise BadInput(str(error)) from None
    root = FLAGS.root if FLAGS["root"].present or not quick else tempfile.mkdtemp(
        prefix="pg_keras-suite-")
    root = os.path.abspath(root)
    page = FLAGS.results_page if FLAGS["results_page"].present or not quick else ""
    plots = FLAGS.plots_dir if FLAGS["plots_dir"].present or not quick else os.path.join(
        root, "plots")
    if page:
        _check_markers(page)
    _check_outputs(root, os.path.abspath(plots), page)
    return {"files": files, "seeds": task_seeds, "root": root, "page": page,
            "plots": os.path.abspath(plots), "extra": list(QUICK_FLAGS) if quick else [],
            "parallel": FLAGS.parallel if FLAGS["parallel"].present or not quick else 2,
            "command": _command(tasks, seeds, root, quick)}


def _check_outputs(root: str, plots: str, page: str) -> None:
    """Refuses output paths that cannot be written (the report too goes under root),
    before any run starts."""
    try:
        paths.check_writable(root, "root")
        paths.check_writable(plots, "plots_dir")
        if page:
            paths.check_writable_file(page, "results_page")
    except InputError as error:
        raise BadInput(str(error)) from None


def _check_markers(page: str) -> None:
    try:
        with open(page) as f:
            suite_report.replace_table(f.read(), "", "")
    except OSError as error:
        raise BadInput(f"results_page {page!r} cannot be read: {error.strerror}") from None
    except ValueError as error:
        raise BadInput(f"results_page {page!r} has {error}; add them where the table goes, "
                       "or pass --results_page=''") from None


def _command(tasks: Sequence[str], seeds: Optional[Sequence[int]], root: str,
             quick: bool) -> str:
    """The command that makes this report (the quick one names its budget flags)."""
    root = os.path.relpath(root, REPO) if root.startswith(REPO + os.sep) else root
    given = "" if seeds is None else f"--seeds={','.join(map(str, seeds))} "
    command = (f"python -m experiments.suite {'--quick ' if quick else ''}"
               f"--tasks={','.join(tasks)} {given}--root={root}")
    if FLAGS.hold_fraction != FLAGS["hold_fraction"].default:
        command += f" --hold_fraction={FLAGS.hold_fraction:g}"
    return command


def load_records(root: str) -> Dict[tuple, dict]:
    """(task, seed) -> the record runs.jsonl holds (the last line of each wins)."""
    records = {}
    path = os.path.join(root, "runs.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    records[(record["task"], record["seed"])] = record
    return records


def save_records(root: str, records: Dict[tuple, dict]) -> None:
    """Writes runs.jsonl atomically, one line per (task, seed), in order."""
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, "runs.jsonl")
    with open(path + ".tmp", "w") as f:
        for key in sorted(records):
            f.write(json.dumps(records[key]) + "\n")
    os.replace(path + ".tmp", path)


def run_all(plan: dict, records: Dict[tuple, dict]) -> List[str]:
    """Runs what is not finished; records each run as it ends. Returns the failed runs."""
    every = [(ff, seed) for ff in plan["files"] for seed in plan["seeds"][ff.name]]
    jobs = [(ff, seed) for ff, seed in every
            if not _is_done(records.get((ff.name, seed)), ff.digest(plan["extra"]))]
    if not FLAGS.overwrite:
        _refuse_other_configs(jobs, plan)
    skipped = len(every) - len(jobs)
    print(f"suite: {len(jobs)} run(s) to do, {skipped} already finished; root {plan['root']}",
          flush=True)
    failures = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _CHILDREN.stop)
    with concurrent.futures.ThreadPoolExecutor(max_workers=plan["parallel"]) as pool:
        futures = {pool.submit(run_one, ff, seed, plan): (ff, seed) for ff, seed in jobs}
        for future in concurrent.futures.as_completed(futures):
            record = future.result()
            if record is None:
                continue
            records[(record["task"], record["seed"])] = record
            save_records(plan["root"], records)
            print(describe(record), flush=True)
            if record["status"] == "failed":
                failures.append(f"{record['task']} seed {record['seed']}")
    return failures


def _refuse_other_configs(jobs, plan: dict) -> None:
    """Raises BadInput, before any run starts, if a run directory to be resumed holds a run
    of another config: the train launcher would refuse it only when its turn came."""
    stale = []
    for ff, seed in jobs:
        stored_path = os.path.join(_run_dir(plan, ff, seed), "config.json")
        try:
            with open(stored_path) as f:
                stored = json.load(f)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as error:
            raise BadInput(f"{stored_path} cannot be read: {error}") from None
        try:
            differing = _config_of(ff, seed, plan["extra"]).differences(stored, stored_path)
        except ValueError as error:  # another format version (InputError), or not a config
            differing = [str(error)]
        if differing:
            stale.append(f"{ff.name} seed {seed} ({', '.join(differing)})")
    if stale:
        one = len(stale) == 1
        raise BadInput(f"{len(stale)} run director{'y' if one else 'ies'} under {plan['root']} "
                       f"hold{'s' if one else ''} a run of another config: {'; '.join(stale)}; "
                       f"pass --overwrite to start {'it' if one else 'them'} over, or choose "
                       "another --root")


def _config_of(ff: flagfiles.Flagfile, seed: int, extra: Sequence[str]):
    """The Config the train launcher builds from ``ff`` with ``extra`` and ``seed``."""
    values = flags.FlagValues()
    config_flags.define_config_flags(values)
    # known_only: a flagfile may also set the launcher's own flags (--target_return).
    try:
        values(["train", f"--flagfile={ff.path}", *extra, f"--seed={seed}"], known_only=True)
        return config_flags.config_from_flags(values)
    except (flags.Error, ValueError) as error:
        raise BadInput(f"{ff.path}: {error}") from None


def _run_dir(plan: dict, ff: flagfiles.Flagfile, seed: int) -> str:
    return os.path.join(plan["root"], ff.name, f"seed{seed}")


def _is_done(record: Optional[dict], digest: str) -> bool:
    return bool(record and record["status"] == "finished" and record["flags_sha256"] == digest)


def run_one(ff: flagfiles.Flagfile, seed: int, plan: dict) -> Optional[dict]:
    """Trains one (task, seed) through the train launcher; its record (None if interrupted)."""
    if _CHILDREN.stopping:  # the pool still hands out queued runs after a signal
        return None
    run_dir = _run_dir(plan, ff, seed)
    log = os.path.join(plan["root"], "logs", f"{ff.name}-seed{seed}.log")
    os.makedirs(os.path.dirname(log), exist_ok=True)
    command = [sys.executable, "-m", "experiments.train", f"--flagfile={ff.path}",
               *plan["extra"], f"--seed={seed}", f"--root_dir={run_dir}", "--noexport",
               "--quiet", "--nouse_progress_bar"] + (["--overwrite"] if FLAGS.overwrite else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    with open(log, "w") as out:
        code = _CHILDREN.wait(subprocess.Popen(command, cwd=REPO, stdout=out,
                                               stderr=subprocess.STDOUT, env=env))
    base = {"task": ff.name, "seed": seed, "flagfile": ff.path,
            "flags_sha256": ff.digest(plan["extra"]), "log": log,
            "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}
    if code in INTERRUPTED:
        return None
    if code != 0:
        return {**base, "status": "failed", "exit_code": code, "error": _last_error(log)}
    try:
        return {**base, **read_run(run_dir, ff, FLAGS.hold_fraction)}
    except (OSError, ValueError, KeyError) as error:
        return {**base, "status": "failed", "exit_code": code,
                "error": f"the run directory {run_dir} could not be read: {error}"}


class _Children:
    """The train processes running now; a signal to the suite is passed on to them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running = set()
        self.stopping = False

    def wait(self, process: subprocess.Popen) -> int:
        with self._lock:
            self._running.add(process)
            if self.stopping:  # started as the signal came: it ends like the others
                process.send_signal(signal.SIGTERM)
        try:
            return process.wait()
        finally:
            with self._lock:
                self._running.discard(process)

    def stop(self, signum, frame) -> None:
        """Signal handler: each run checkpoints and ends (the next invocation resumes it)."""
        with self._lock:
            self.stopping = True
            for process in self._running:
                process.send_signal(signal.SIGTERM)
        print(f"suite: stopped by {signal.Signals(signum).name}; the runs in progress save a "
              "checkpoint; run the same command to resume", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)


_CHILDREN = _Children()


def _last_error(log: str) -> str:
    with open(log) as f:
        lines = [line.strip() for line in f if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no output)"])[-1]


def read_run(run_dir: str, ff: flagfiles.Flagfile, hold_fraction: float) -> dict:
    """The figures of a finished run directory (raises ValueError if it did not finish)."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(run_dir, "evaluations.jsonl")) as f:
        evaluations = [json.loads(line) for line in f if line.strip()]
    if summary.get("interrupted") or summary["env_steps"] < config["total_steps"]:
        raise ValueError(f"it stopped at {summary['env_steps']} of {config['total_steps']} "
                         "env steps")
    if not evaluations:
        raise ValueError("it holds no evaluation (eval_every=0?)")
    # null: an evaluation without a finite episode (pg_keras.strict_json)
    curve = [[e["env_steps"], _number(e["mean_return"]), _number(e["std_return"])]
             for e in evaluations]
    best = max(curve, key=lambda e: e[1] if math.isfinite(e[1]) else -math.inf)
    return {"status": "finished", "env_id": config["env_id"], "method": method(config),
            "total_steps": config["total_steps"], "eval_episodes": config["eval_episodes"],
            "env_steps": summary["env_steps"], "wall_seconds": summary["wall_seconds"],
            "final_mean": curve[-1][1], "final_std": curve[-1][2], "best_mean": best[1],
            "best_at": best[0], "evaluations": curve, "machine": machine(),
            **task_view(ff, config["env_id"], method(config), hold_fraction)}


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def task_view(ff: flagfiles.Flagfile, env_id: str, derived: str, hold_fraction: float) -> dict:
    """Label, target and hold level of a task, from its flagfile (or derived)."""
    target = ff.value("target_return") or ff.header.get("target")
    if target is None:
        # The id's module is imported only as the flagfile names it: a run directory's
        # record (env_id here) is data, and its module prefix is dropped.
        target = env_threshold(ff.value("env_id") or env_id.rpartition(":")[2])
    target = float(target) if target is not None else None
    fraction = float(ff.header.get("hold_fraction", hold_fraction))
    return {"label": ff.header.get("label") or derived, "target": target,
            "hold_level": suite_report.hold_level(target, fraction)}


def method(config: dict) -> str:
    """What a config is, in words, from the fields that decide it."""
    if not config.get("baseline", True):
        whole = config.get("collect_mode") == "episodes"
        return "REINFORCE (no baseline" + (", whole episodes)" if whole else ")")
    lam = config.get("gae_lambda", 1.0)
    if lam == 1.0:
        return "REINFORCE + value baseline (lambda=1)"
    return f"value baseline + GAE({lam:g}), A2C-style advantage"


def env_threshold(env_id: str) -> Optional[float]:
    """The env's registered reward_threshold (None if it has none or cannot be looked up)."""
    import importlib

    import gymnasium

    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        return gymnasium.spec(name).reward_threshold
    except Exception:  # noqa: BLE001 - an env we cannot look up just has no threshold here
        return None


def machine() -> dict:
    """The CPU model, its cores, the cores this process may use, and any NVIDIA GPU."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = "no GPU" if not os.path.exists("/proc/driver/nvidia/gpus") else "NVIDIA GPU"
    return {"cpu": cpu, "cores": os.cpu_count(), "nproc": nproc, "gpu": gpu}


def describe(record: dict) -> str:
    """One line about a finished or failed run."""
    head = f"{record['task']} seed {record['seed']}"
    if record["status"] == "failed":
        return f"{head}: FAILED (exit {record['exit_code']}): {record['error']}"
    return (f"{head}: final {record['final_mean']:.1f} +- {record['final_std']:.1f}, best "
            f"{record['best_mean']:.1f} at {record['best_at']}, {record['env_steps']} env "
            f"steps, {record['wall_seconds']:.0f} s")


def write_report(plan: dict, records: Dict[tuple, dict]) -> None:
    """report.md, the plots, the results page's table, and the report on stdout."""
    current = _current_view(plan, records)
    summaries = [s for s in (suite_report.summarize(ff.name, plan["seeds"][ff.name], current,
                                                    FLAGS.bootstrap_reps)
                             for ff in plan["files"]) if s is not None]
    plots = {}
    for s in summaries:
        plots[s.task] = os.path.join(plan["plots"], f"{s.task}.png")
        suite_report.plot_task(s, current, plots[s.task])
    text = suite_report.report(summaries, current, plan["command"], plan["root"], plots,
                                REPO)
    with open(os.path.join(plan["root"], "report.md"), "w") as f:
        f.write(text + "\n")
    print(text, flush=True)
    if plan["page"] and summaries:
        _update_page(plan, summaries, current, plots)


def _current_view(plan: dict, records: Dict[tuple, dict]) -> Dict[tuple, dict]:
    """The records with label, target and hold level as the flagfiles say them today."""
    current = dict(records)
    for ff in plan["files"]:
        for seed in plan["seeds"][ff.name]:
            record = records.get((ff.name, seed))
            if record and record["status"] == "finished":
                current[(ff.name, seed)] = {**record, **task_view(
                    ff, record["env_id"], record["method"], FLAGS.hold_fraction)}
    return current


def _update_page(plan, summaries, records, plots) -> None:
    page_dir = os.path.dirname(os.path.abspath(plan["page"]))
    block = suite_report.page_block(summaries, records, plan["command"], page_dir, plots, REPO)
    with open(plan["page"]) as f:
        text = suite_report.replace_table(f.read(), block, plan["command"])
    with open(plan["page"] + ".tmp", "w") as f:
        f.write(text)
    os.replace(plan["page"] + ".tmp", plan["page"])
    print(f"suite: regenerated the results table of {plan['page']}", flush=True)


if __name__ == "__main__":
    cli.run("suite", FLAGS, main, usage=__doc__, bad_input=(BadInput,), tensorflow=False)
