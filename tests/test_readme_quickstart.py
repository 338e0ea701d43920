"""The README's and the docs' commands, links and claims, checked against the checkout.

The quickstart's commands are read from README.md itself (train, resume, export,
evaluate), so the README cannot drift from what works. The fast test appends flags that
shorten the run, and runs the first command as a process of the copy, the others in this
process from the copy's directory (tests/launchers.py); the slow one runs them all
verbatim as processes, with the committed model in place as on a fresh clone.

The other tests are cheap reads of README.md and docs/*.md: every relative link resolves
(anchors included), every page is linked from the README, every ``python -m
experiments.X`` command names a module that exists and flags it defines, every flagfile
named exists, the README stays a front page (at most 200 lines, its results rows copied
from the generated table, its Layout naming every module of pg_keras), no page narrates
history, and the flagfiles' headers stay short.
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

import launchers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--total_steps=2000", "--eval_every=1000", "--eval_episodes=2"]


def quickstart_commands() -> list:
    """The ``.venv/bin/python -m experiments.*`` commands of the README's quickstart."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    section = section.replace("\\\n", " ")  # continued lines
    commands = []
    for line in section.splitlines():
        if line.strip().startswith(".venv/bin/python -m experiments."):
            commands.append([sys.executable] + shlex.split(line, comments=True)[1:])
    return commands


def _the_four(commands) -> list:
    """Train, resume (the same command), export, evaluate: the quickstart's story."""
    wanted = [c for c in commands if c[2] in ("experiments.train", "experiments.export",
                                              "experiments.evaluate")]
    assert [c[2] for c in wanted] == ["experiments.train", "experiments.train",
                                      "experiments.export", "experiments.evaluate"], wanted
    assert wanted[0] == wanted[1], "the resume command must be the train command"
    return wanted


def _run(command, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=1200,
                         env=env)
    assert run.returncode == 0, (command, run.stdout[-2000:], run.stderr[-3000:])
    return run.stdout


def _run_here(command, cwd):
    """``command`` (``python -m module args``) run in this process, from ``cwd``."""
    run = launchers.run(command[2], *command[3:], cwd=cwd)
    assert run.returncode == 0, (command, run.stdout[-2000:], run.stderr[-3000:])
    return run.stdout


def test_quickstart_commands_are_read_from_the_readme():
    train, resume, export, evaluate = _the_four(quickstart_commands())
    assert "--flagfile=experiments/configs/cartpole.cfg" in train
    assert "--saved_model=saved_models/cartpole-v1" in evaluate


def test_quickstart_runs_as_written_on_a_short_run(tmp_path):
    """The README's commands with a shorter run appended (the committed model, of the full
    run's config, is removed from the copy: the short run exports there instead)."""
    tree = launchers.copy_of_checkout(tmp_path / "clone")
    shutil.rmtree(os.path.join(tree, "saved_models", "cartpole-v1"))
    train, resume, export, evaluate = _the_four(quickstart_commands())
    out = _run(train + SHORT, tree)
    assert "2000 env steps" in out and "SavedModel: saved_models/cartpole-v1" in out, out
    again = _run_here(resume + SHORT, tree)
    assert "2000 env steps" in again, again
    _run_here(export, tree)
    assert os.path.exists(os.path.join(tree, "saved_models", "cp", "saved_model.pb"))
    result = json.loads(_run_here(evaluate, tree).strip().splitlines()[-1])
    assert result["episodes"] == 20 and result["env"] == "CartPole-v1"
    assert os.path.exists(os.path.join(tree, "videos", "episode_000.gif"))


@pytest.mark.slow
def test_quickstart_runs_verbatim_and_remakes_the_committed_model(tmp_path):
    tree = launchers.copy_of_checkout(tmp_path / "clone")
    committed = os.path.join(ROOT, "saved_models", "cartpole-v1", "config.json")
    train, resume, export, evaluate = _the_four(quickstart_commands())
    out = _run(train, tree)
    assert "final evaluation return over 20 episodes: 500.00" in out, out
    again = _run(resume, tree)
    assert "500.00 +- 0.00 (greedy, CartPole-v1, 50000 env steps" in again, again
    _run(export, tree)
    with open(committed) as f, open(os.path.join(tree, "saved_models", "cartpole-v1",
                                                 "config.json")) as g:
        assert json.load(f) == json.load(g)
    result = json.loads(_run(evaluate, tree).strip().splitlines()[-1])
    assert result["mean_return"] == 500.0, result


# --- the docs: cheap reads ------------------------------------------------------------

DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
PAGES = [os.path.join(ROOT, "README.md"), *DOCS]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HISTORY = re.compile(r"\b(this|previous|last|next|that|an earlier|the earlier) (round|session)s?\b"
                     r"|\bissues? #?\d|\bround \d|\bsession \d|#\d+\b", re.IGNORECASE)


def _read(path) -> str:
    with open(path) as f:
        return f.read()


def _prose(path) -> str:
    """A page without its code: fenced blocks and indented lines."""
    text = re.sub(r"^```.*?^```", "", _read(path), flags=re.MULTILINE | re.DOTALL)
    return "\n".join(line for line in text.splitlines() if not line.startswith("    "))


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path) -> set:
    return {_slug(line.lstrip("#")) for line in _read(path).splitlines()
            if re.match(r"^#{1,6} ", line)}


def _name(path) -> str:
    return os.path.relpath(path, ROOT)


def test_readme_is_a_front_page_of_at_most_200_lines():
    lines = _read(os.path.join(ROOT, "README.md")).splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(_prose(page)):
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(full):
                broken.append(f"{_name(page)}: {target}")
            elif anchor and full.endswith(".md") and anchor not in _anchors(full):
                broken.append(f"{_name(page)}: {target} (no such heading)")
    assert not broken, broken


def test_every_docs_page_is_linked_from_the_readme():
    readme = _read(os.path.join(ROOT, "README.md"))
    missing = [_name(d) for d in DOCS if f"({_name(d)})" not in readme]
    assert not missing, missing


def test_no_page_narrates_history():
    found = [f"{_name(page)}: {m.group(0)!r}" for page in PAGES
             for m in HISTORY.finditer(_read(page))]
    assert not found, found


def _commands(text: str) -> list:
    """Each shell command of a page, continuation lines joined, ``$VARS`` the page defines
    (``NAME="..."`` lines) expanded: the argument lists of ``python -m experiments.X``."""
    text = text.replace("\\\n", " ")
    variables = dict(re.findall(r'^\s*([A-Z_]+)="([^"]*)"\s*$', text, re.MULTILINE))
    for name, value in variables.items():
        text = re.sub(r"\$" + name + r"\b", value, text)
    commands = []
    for line in text.splitlines():
        match = re.search(r"python -m ((?:experiments|benchmarks|examples|pg_keras\.cli)\.\w+)"
                          r"(.*)", line)
        if match and not re.match(r'^\s*[A-Z_]+="', line):
            args = re.findall(r"--([A-Za-z_]+)(?:=(\S+))?", match.group(2).split("#")[0])
            commands.append((match.group(1), args))
    return commands


def _flags_of(module: str) -> set:
    """The flags ``python -m experiments.<module>`` accepts (its own, Config's if it
    defines them, absl's and the launchers' shared ones)."""
    import dataclasses

    from experiments import flags_doc
    from pg_keras.config import Config

    names = {f[0] for f in flags_doc.launcher_flags(module)}
    if "define_config_flags(" in _read(flags_doc.source_path(module)):
        names |= {f.name for f in dataclasses.fields(Config)}
    return names | {"flagfile", "helpfull", "help", "tf_logs"}


def test_every_command_names_a_module_its_flags_and_flagfiles_that_exist():
    problems = []
    for page in PAGES:
        for module, args in _commands(_read(page)):
            path = os.path.join(ROOT, *module.split(".")) + ".py"
            if not os.path.exists(path):
                problems.append(f"{_name(page)}: no module {module}")
                continue
            known = _flags_of(module)
            for flag, value in args:
                if flag.isupper():
                    continue  # a placeholder: FLAGS
                if flag not in known and not (flag.startswith("no") and flag[2:] in known):
                    problems.append(f"{_name(page)}: {module} has no flag --{flag}")
                if flag == "flagfile" and value.startswith("experiments/") and \
                        value == value.lower() and not os.path.exists(os.path.join(ROOT, value)):
                    problems.append(f"{_name(page)}: no flagfile {value}")
    assert not problems, problems


def test_the_readme_results_rows_are_rows_of_the_generated_table():
    readme = _read(os.path.join(ROOT, "README.md"))
    table = _read(os.path.join(ROOT, "docs", "results.md")).split(
        "<!-- results-table")[1].split("<!-- end results-table")[0]
    rows = [line for line in readme.split("## Results", 1)[1].split("\n## ", 1)[0].splitlines()
            if line.startswith("| ") and "`experiments/configs/" in line]
    assert rows, "README's results excerpt has no rows"
    assert [row for row in rows if row not in table.splitlines()] == []


def test_the_layout_names_every_module():
    layout = _read(os.path.join(ROOT, "README.md")).split("## Layout", 1)[1]
    package = os.path.join(ROOT, "pg_keras")
    missing = []
    for path in sorted(glob.glob(os.path.join(package, "**", "*.py"), recursive=True)):
        name = os.path.basename(path)
        if name != "__init__.py" and name not in layout:
            missing.append(_name(path))
    for entry in sorted(os.listdir(package)):
        if os.path.isdir(os.path.join(package, entry)) and not entry.startswith("_") \
                and f"{entry}/" not in layout:
            missing.append(f"pg_keras/{entry}/")
    assert not missing, f"README's Layout does not name {missing}"


def test_flagfile_headers_are_at_most_8_comment_lines():
    long = {}
    for path in glob.glob(os.path.join(ROOT, "experiments", "configs", "*.cfg")):
        count = sum(line.lstrip().startswith("#") for line in _read(path).splitlines())
        if count > 8:
            long[_name(path)] = count
    assert not long, long


def test_the_error_shown_is_the_one_users_see(tmp_path):
    """README's example of a bad value: the launcher's line (before TensorFlow), and the
    exception Python raises."""
    readme = _read(os.path.join(ROOT, "README.md"))
    run = subprocess.run([sys.executable, "-m", "experiments.train", "--gamma=1.5",
                          f"--root_dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    line = run.stderr.strip().splitlines()[-1]
    assert run.returncode == 2 and f"`{line}`" in readme, (run.stderr, line)
    import pg_keras

    with pytest.raises(pg_keras.InputError) as error:
        pg_keras.Config(gamma=1.5)
    assert f"`pg_keras.InputError: {error.value}`" in readme
