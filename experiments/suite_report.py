"""The suite's figures, report, results-page table and learning-curve plots, from its run records.

Everything here reads the records ``experiments.suite`` writes to ``<root>/runs.jsonl``
(one per task and seed, with the run's whole evaluation curve) and nothing else, so a
report can be regenerated at any time. Defines no flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from experiments import stats

START_MARKER = "<!-- results-table"
END_MARKER = "<!-- end results-table -->"


@dataclasses.dataclass
class TaskSummary:
    """The figures of one task (one flagfile) over the seeds that finished."""

    task: str
    env_id: str
    label: str
    flagfile: str
    seeds: List[int]
    finished: int
    failed: List[int]
    budget: int
    eval_episodes: int
    final_mean: float
    final_std: float
    iqm: float
    iqm_ci: tuple
    target: Optional[float]
    solved: int
    median_solved_at: Optional[float]
    hold_level: Optional[float]
    held: int


def solve_figures(evaluations: Sequence[Sequence[float]], target: Optional[float],
                  hold_level: Optional[float]) -> dict:
    """First solve and what follows it, from an evaluation curve [[steps, mean, std], ...].

    Returns:
        ``solved_at`` (env steps of the first evaluation whose mean reaches ``target``, or
        None), ``min_after_solve`` (lowest mean from that evaluation on) and ``held``
        (whether that lowest mean is at least ``hold_level``).
    """
    solved_at, after = None, []
    for steps, mean, *_ in evaluations:
        if solved_at is None and target is not None and mean >= target:
            solved_at = steps
        if solved_at is not None:
            after.append(mean)
    low = min(after) if after else None
    held = low is not None and hold_level is not None and low >= hold_level
    return {"solved_at": solved_at, "min_after_solve": low, "held": held}


def hold_level(target: Optional[float], fraction: float) -> Optional[float]:
    """The level a solved run should stay above: ``fraction`` of the target's size below it."""
    if target is None:
        return None
    return target - (1.0 - fraction) * abs(target)


def summarize(task: str, seeds: Sequence[int], records: Dict[tuple, dict],
              reps: int = 10_000) -> Optional[TaskSummary]:
    """The summary of ``task`` over ``seeds`` (None if no seed finished)."""
    mine = [records.get((task, s)) for s in seeds]
    done = [r for r in mine if r and r["status"] == "finished"]
    failed = [s for s, r in zip(seeds, mine) if r and r["status"] == "failed"]
    if not done:
        return None
    finals = np.array([r["final_mean"] for r in done])
    first = done[0]
    target, level = first["target"], first["hold_level"]
    figures = [solve_figures(r["evaluations"], target, level) for r in done]
    solved = [f["solved_at"] for f in figures]
    return TaskSummary(
        task=task, env_id=first["env_id"], label=first["label"], flagfile=first["flagfile"],
        seeds=list(seeds), finished=len(done), failed=failed, budget=first["total_steps"],
        eval_episodes=first["eval_episodes"], final_mean=float(finals.mean()),
        final_std=float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
        iqm=float(stats.iqm(finals)), iqm_ci=stats.stratified_bootstrap_ci([finals], reps=reps),
        target=target, solved=sum(s is not None for s in solved),
        median_solved_at=stats.median_steps(solved) if target is not None else None,
        hold_level=level, held=sum(f["held"] for f in figures))


def number(x: Optional[float]) -> str:
    """A return or step count for a table: 3 significant figures at least, no noise."""
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def steps(x: Optional[float]) -> str:
    """Env steps, short: 15k, 1.2M."""
    if x is None:
        return "-"
    if x >= 1_000_000:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if x >= 1000 else f"{x:g}"


def seed_range(seeds: Sequence[int]) -> str:
    """``100-104`` for consecutive seeds, else a comma list."""
    seeds = sorted(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(str(s) for s in seeds)


def table(summaries: Sequence[TaskSummary], flagfile_base: str) -> str:
    """The results table (markdown), one row per task; flagfiles relative to the base."""
    rows = ["| task | what it is | flagfile | seeds | budget | final mean ± std | "
            "IQM [95% CI] | target | solved | median first solve | stays solved |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        inside = os.path.abspath(s.flagfile).startswith(os.path.abspath(flagfile_base) + os.sep)
        flagfile = os.path.relpath(s.flagfile, flagfile_base) if inside else s.flagfile
        seeds = seed_range(s.seeds) + ("" if s.finished == len(s.seeds)
                                       else f" ({s.finished} of {len(s.seeds)} finished)")
        solved = f"{s.solved}/{s.finished}" if s.target is not None else "-"
        held = (f"{s.held}/{s.solved} ≥ {number(s.hold_level)}"
                if s.target is not None and s.solved else "-")
        rows.append(
            f"| {s.env_id} | {s.label} | `{flagfile}` | {seeds} | {steps(s.budget)} | "
            f"{number(s.final_mean)} ± {number(s.final_std)} | {number(s.iqm)} "
            f"[{number(s.iqm_ci[0])}, {number(s.iqm_ci[1])}] | {number(s.target)} | {solved} | "
            f"{steps(s.median_solved_at)} | {held} |")
    return "\n".join(rows)


def machine_line(records: Sequence[dict], command: str) -> str:
    """Where, when and how the table's runs were made."""
    machines = sorted({json.dumps(r["machine"], sort_keys=True) for r in records})
    described = "; ".join(
        f"{m['cpu']}, {m['cores']} cores (nproc {m['nproc']}), {m['gpu']}"
        for m in map(json.loads, machines))
    dates = sorted(r["finished_at"][:10] for r in records)
    when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
    return f"Measured on {described}, runs finished {when}, with:\n\n    {command}"


def legend(summaries: Sequence[TaskSummary]) -> str:
    """What the columns mean (their numbers come from the records)."""
    episodes = sorted({s.eval_episodes for s in summaries})
    return (
        "Final: the greedy policy's mean return over "
        f"{'/'.join(str(e) for e in episodes)} evaluation episodes at the end of each run; "
        "mean ± sample std over seeds, and the interquartile mean over seeds with a 95% "
        "bootstrap confidence interval. Solved: seeds whose evaluation mean reached the "
        "target at least once; median first solve counts unsolved seeds as never (- when "
        "half or more never solve). Stays solved: of the solved seeds, those whose every "
        "evaluation from the first solve on is at or above the level shown.")


def _finished(summaries: Sequence[TaskSummary], records: Dict[tuple, dict]) -> List[dict]:
    return [records[(s.task, seed)] for s in summaries for seed in s.seeds
            if records.get((s.task, seed), {}).get("status") == "finished"]


def report(summaries: Sequence[TaskSummary], records: Dict[tuple, dict], command: str,
           base: str, plots: Dict[str, str], repo: str) -> str:
    """The whole report (markdown, in ``base``): the table, legend, per-task seeds, curves."""
    done = _finished(summaries, records)
    parts = ["# Results", "", table(summaries, repo), "", legend(summaries), ""]
    if done:
        parts += [machine_line(done, command), ""]
    for s in summaries:
        parts += [f"## {s.task}: {s.env_id}", "", per_seed_table(s, records), ""]
        if s.failed:
            parts += [f"Failed seeds: {', '.join(map(str, s.failed))} (see the logs).", ""]
        if s.task in plots:
            parts += [f"![{s.task}]({os.path.relpath(plots[s.task], base)})", ""]
    return "\n".join(parts)


def per_seed_table(s: TaskSummary, records: Dict[tuple, dict]) -> str:
    """One row per finished seed of a task."""
    rows = ["| seed | final | best (at) | first solve | lowest after solve | env steps | "
            "wall s |", "|---|---|---|---|---|---|---|"]
    for seed in s.seeds:
        r = records.get((s.task, seed))
        if not r or r["status"] != "finished":
            continue
        f = solve_figures(r["evaluations"], s.target, s.hold_level)
        rows.append(
            f"| {seed} | {number(r['final_mean'])} ± {number(r['final_std'])} | "
            f"{number(r['best_mean'])} ({steps(r['best_at'])}) | {steps(f['solved_at'])} | "
            f"{number(f['min_after_solve'])} | {r['env_steps']:,} | {r['wall_seconds']:.0f} |")
    return "\n".join(rows)


def replace_table(page: str, block: str, command: str) -> str:
    """``page`` with the text between the results-table markers replaced by ``block``.

    Raises:
        ValueError: if the markers are missing or out of order.
    """
    start = page.find(START_MARKER)
    end = page.find(END_MARKER)
    if start < 0 or end < start:
        raise ValueError(f"no '{START_MARKER} ...' ... '{END_MARKER}' markers")
    marker = (f"{START_MARKER}: generated by {command}; do not edit -->")
    return page[:start] + marker + "\n" + block.strip() + "\n" + page[end:]


def page_block(summaries: Sequence[TaskSummary], records: Dict[tuple, dict], command: str,
               page_dir: str, plots: Dict[str, str], repo: str) -> str:
    """The results page's generated section: table (flagfiles relative to ``repo``),
    legend, machine and command, curve links (relative to ``page_dir``)."""
    done = _finished(summaries, records)
    links = ", ".join(f"[{t}]({os.path.relpath(p, page_dir)})" for t, p in plots.items())
    parts = [table(summaries, repo), "", legend(summaries)]
    if done:
        parts += ["", machine_line(done, command)]
    if links:
        parts += ["", f"Learning curves (greedy evaluation, mean and min-max over seeds): "
                      f"{links}."]
    return "\n".join(parts)


def plot_task(s: TaskSummary, records: Dict[tuple, dict], out: str) -> None:
    """One PNG: the task's evaluation curve, mean and min-max band over seeds, and target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.curves import draw_band

    curves = []
    for seed in s.seeds:
        r = records.get((s.task, seed))
        if r and r["status"] == "finished":
            curves.append(([e[0] for e in r["evaluations"]], [e[1] for e in r["evaluations"]]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw_band(ax, curves, f"{s.label} ({len(curves)} seeds)")
    if s.target is not None:
        ax.axhline(s.target, color="gray", linestyle="--", linewidth=1, label="target")
    ax.set_xlim(left=0)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(f"greedy evaluation return ({s.eval_episodes} episodes)")
    ax.set_title(f"{s.env_id}: {s.task}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)

