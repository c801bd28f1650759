"""Every documented command parses, every snippet runs, every link resolves: no example in the
docs can rot.

What counts as a documented command or snippet, how a command is parsed without doing any
work, and what a new CLI or launch script must do to be covered: see tests/doc_commands.py's
docstring.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.doc_commands import (  # pylint: disable=g-multiple-import
    ROOT, _NEEDS, _PARSED, _markdown_code, _relative, _shell_lines, _words,
    commands_in, documented_commands, github_anchor, is_template, launch_examples, link_problem,
    parse_only, python_snippets, relative_links)


# ---------------------------------------------------------------- launch scripts

_RECORDER = """#!/bin/sh
# Stands in for python: records its argv (NUL-separated) and exits 0.
printf '%s\\0' "$@" > "$RECORD_DIR/$$.argv"
"""


def run_launch_example(env: dict[str, str], script: str, args: list[str], tmp_path):
  """Runs a launch example without launching: `--dry-run`, or PYTHON=a recorder.

  Returns (CompletedProcess, [argv of every tool command it printed or started]).
  """
  with open(os.path.join(ROOT, script)) as f:
    has_dry_run = "--dry-run" in f.read()
  full_env = dict(os.environ, TMPDIR=str(tmp_path), **env)
  if has_dry_run:
    proc = subprocess.run(["bash", script, "--dry-run", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=60)
    return proc, commands_in(proc.stdout)
  record_dir = tmp_path / "records"
  record_dir.mkdir()
  recorder = tmp_path / "python"
  recorder.write_text(_RECORDER)
  recorder.chmod(0o755)
  full_env.update(PYTHON=str(recorder), RECORD_DIR=str(record_dir), LOGDIR=str(tmp_path / "logs"))
  # The recorder writes nothing there, but the script may make the workdir: keep it in tmp.
  args = [f"--workdir={tmp_path / 'workdir'}" if a.startswith("--workdir=") else a for a in args]
  proc = subprocess.run(["bash", script, *args], cwd=ROOT, env=full_env, capture_output=True,
                        text=True, timeout=60)
  commands = []
  for name in sorted(os.listdir(record_dir)):
    argv = (record_dir / name).read_text().split("\0")[:-1]
    commands.append(argv)
  return proc, commands


def _check_parses(argv: list[str], where: str) -> None:
  result = parse_only(argv)
  command = "python " + shlex.join(argv)
  if result.returncode == 0 and result.stdout.startswith(_NEEDS):
    pytest.skip(f"{where}: `{command}` imports {result.stdout[len(_NEEDS):].strip()}, which is "
                "not installed (not a vt_jax dependency)")
  assert result.returncode == 0, (
      f"{where}: `{command}` no longer parses:\n{result.stderr[-3000:]}\n{result.stdout[-1000:]}")
  assert _PARSED in result.stdout, f"{where}: `{command}`: {result.stdout[-1000:]}"
  if any(a.startswith("--config=") for a in argv):
    assert "0 config(s) loaded" not in result.stdout, (
        f"{where}: `{command}` names a config the tool did not load")


# ---------------------------------------------------------------- tests

_COMMANDS = documented_commands()
_LAUNCHES = launch_examples()


def _command_id(item):
  source, argv = item
  return f"{source}:{' '.join(argv)[:80]}"


@pytest.mark.parametrize("source,argv", _COMMANDS, ids=[_command_id(c) for c in _COMMANDS])
def test_documented_command_parses(source, argv):
  _check_parses(argv, source)


@pytest.mark.parametrize("source,env,script,args", _LAUNCHES,
                         ids=[f"{s}:{sc}" for s, _, sc, _ in _LAUNCHES])
def test_launch_example_prints_commands_that_parse(source, env, script, args, tmp_path):
  proc, commands = run_launch_example(env, script, args, tmp_path)
  shown = f"{source}: {script} {shlex.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
  if args[0].isdigit():  # local_multiprocess.sh N ...: one process each, ids 0..N-1
    ids = sorted(a for c in commands for a in c if a.startswith("--process_id="))
    assert ids == [f"--process_id={i}" for i in range(int(args[0]))], shown
  else:
    assert proc.returncode == 0, shown
    assert commands, f"the dry run printed no vt_jax command: {shown}"
  for argv in commands:
    for arg in args[1:] if args[0].isdigit() else args:
      if arg.startswith("--config"):
        assert arg in argv, f"{script} dropped {arg}: {shown}"
    _check_parses(argv, f"{source} ({script} dry run)")


def test_every_launch_script_has_a_documented_example():
  scripts = {_relative(p) for p in glob.glob(os.path.join(ROOT, "launch", "*"))}
  assert scripts == {script for _, _, script, _ in _LAUNCHES}


def test_tpu_pod_dry_run_copies_installs_and_runs_on_every_worker(tmp_path):
  env = {"TPU": "t1", "ZONE": "z1", "PROJECT": "p1", "CREATE": "v4-32"}
  args = ["--config=configs/vt_r50.py:recipe=advanced", "--workdir=gs://b/runs/r50"]
  proc, commands = run_launch_example(env, "launch/tpu_pod.sh", args, tmp_path)
  assert proc.returncode == 0, proc.stderr
  steps = [_words(line) for line in proc.stdout.splitlines()]
  kinds = [w[4] if w[0] == "gcloud" else w[0] for w in steps]
  assert kinds == ["create", "tar", "scp", "ssh", "ssh"], proc.stdout
  create, tar, scp, setup, train = steps
  assert "--accelerator-type=v4-32" in create and "t1" in create
  tarball = tar[tar.index("-czf") + 1]
  assert {"vt_jax", "configs", "setup.cfg", "pyproject.toml", "README.md"} <= set(tar)
  assert scp[5] == tarball and scp[6] == "t1:vt_jax.tar.gz"
  for step in (create, scp, setup, train):
    assert "--zone=z1" in step and "--project=p1" in step
  for step in (scp, setup, train):
    assert "--worker=all" in step
  setup_cmd = next(w for w in setup if w.startswith("--command="))
  assert "tar -xzf ~/vt_jax.tar.gz" in setup_cmd and "vt_jax[tpu]" in setup_cmd
  assert setup_cmd.index("tar -xzf") < setup_cmd.index("pip install")
  assert commands == [["-m", "vt_jax.main", "--distributed=auto", *args]]
  # The same command runs the printed words: the dry run's train step is the run's.
  assert next(w for w in train if w.startswith("--command=")).startswith(
      "--command=cd ~/vt_jax && ~/vt_venv/bin/python -m vt_jax.main")


def test_docs_show_what_the_tpu_dry_run_prints():
  """docs/multi_host.md quotes the dry run's output after 'prints (from a checkout in `DIR`):'."""
  with open(os.path.join(ROOT, "docs", "multi_host.md")) as f:
    doc = f.read()
  match = re.search(r"```bash\n([^`]*launch/tpu_pod\.sh --dry-run[^`]*)```\s*"
                    r"prints \(from a checkout in `([^`]+)`\):\s*```bash\n(.*?)```", doc, re.S)
  assert match, "docs/multi_host.md: the TPU pod section no longer quotes the dry run's output"
  command, checkout, quoted = match.groups()
  words = _words(_shell_lines(command)[0])
  env = dict(w.split("=", 1) for w in words[:2])
  assert words[2:4] == ["launch/tpu_pod.sh", "--dry-run"], words
  proc = subprocess.run(["bash", *words[2:]], cwd=ROOT,
                        env=dict(os.environ, TMPDIR="/tmp", **env), capture_output=True,
                        text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.replace(ROOT, checkout) == quoted


@pytest.mark.parametrize("script,env,workdir,message", [
    ("launch/tpu_pod.sh", {"TPU": "t", "ZONE": "z"}, "/tmp/r", "must be a gs:// bucket path"),
    ("launch/tpu_pod.sh", {"TPU": "t", "ZONE": "z"}, None, "must be a gs:// bucket path"),
    ("launch/slurm_gpu.sbatch", {"SLURM_JOB_NUM_NODES": "2"}, "/tmp/r", "node-local"),
    ("launch/slurm_gpu.sbatch", {}, None, "--workdir=DIR is required"),
])
def test_launch_scripts_refuse_a_workdir_the_hosts_cannot_share(script, env, workdir, message):
  args = ["--config=configs/quickstart.py"] + ([f"--workdir={workdir}"] if workdir else [])
  proc = subprocess.run(["bash", script, *args], cwd=ROOT, env=dict(os.environ, **env),
                        capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_launch_scripts_are_shellcheck_clean():
  """Warnings and errors (real bugs: unquoted expansions that split, bad tests); `info` and
  `style` notes are left to the author."""
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (apt-get install shellcheck); scripts not linted")
  scripts = sorted(glob.glob(os.path.join(ROOT, "launch", "*"))) + [os.path.join(ROOT, ".ci", "run")]
  proc = subprocess.run(["shellcheck", "--shell=bash", "--severity=warning", *scripts],
                        capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stdout[-5000:]


def test_every_cli_has_a_documented_example():
  """A vt_jax module that calls absl.app.run is a CLI; each needs an example to be tested."""
  clis = set()
  for path in glob.glob(os.path.join(ROOT, "vt_jax", "**", "*.py"), recursive=True):
    with open(path) as f:
      if re.search(r"\bapp\.run\(", f.read()):
        module = _relative(path)[:-len(".py")].replace(os.sep, ".")
        clis.add(module[:-len(".__main__")] if module.endswith(".__main__") else module)
  documented = {argv[1] for _, argv in _COMMANDS if argv[0] == "-m"}
  assert {"vt_jax.main", "vt_jax.data", "vt_jax.profile", "vt_jax.convert"} <= clis
  assert clis - documented == set(), "CLIs with no example in README.md, docs/ or a docstring"


_SNIPPETS = python_snippets()


@pytest.mark.parametrize("source,line,code", _SNIPPETS,
                         ids=[f"{s}:{n}" for s, n, _ in _SNIPPETS])
def test_documented_python_snippet_runs(source, line, code, tmp_path):
  """Each ```python block runs as its own program, from an empty directory."""
  script = tmp_path / "snippet.py"
  script.write_text(code)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, (
      f"{source}, the snippet at line {line}, fails:\n{proc.stderr[-3000:]}")


def test_readme_and_docs_have_a_python_snippet_to_run():
  assert any(source == "README.md" for source, _, _ in _SNIPPETS)


def test_relative_links_in_readme_and_docs_resolve():
  links = relative_links()
  assert ("README.md", "LICENSE") in links and any(s.startswith("docs/") for s, _ in links)
  problems = [p for p in (link_problem(s, t) for s, t in links) if p]
  assert not problems, "\n".join(problems)


def test_link_checker_finds_a_missing_file_and_a_missing_anchor():
  assert github_anchor("Semantic segmentation (`config.task = 'segmentation'`)") == (
      "semantic-segmentation-configtask--segmentation")
  assert github_anchor("Training the paper's models") == "training-the-papers-models"
  assert link_problem("README.md", "docs/training.md") is None
  assert "does not exist" in link_problem("README.md", "docs/no_such_page.md")
  assert "no heading" in link_problem("docs/multi_host.md", "training.md#no-such-section")


def test_readme_holds_the_ci_test_command_verbatim():
  """.ci/run runs 'the README's test command, verbatim': the two must not drift apart."""
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci = f.read()
  marker = "# --- the README's test command, verbatim ---"
  command = next(line.strip() for line in ci.split(marker, 1)[1].splitlines()
                 if line.strip() and not line.strip().startswith("#"))
  with open(os.path.join(ROOT, "README.md")) as f:
    assert f"```bash\n{command}\n```" in f.read(), command


# ---------------------------------------------------------------- the mechanism itself

def test_extraction_reads_shell_syntax_as_a_shell_would():
  text = ("x && python -m vt_jax.main --config=configs/a.py \\\n"
          "    --workdir=DIR [--checkpoint_step=N]  # a comment\n"
          "gcloud ssh h --command='cd ~/v && ~/venv/bin/python -m vt_jax.data --save=/t; ls'\n"
          "python3 benchmarks/b.py [flags...] > out.txt\n"
          "python -m vt_jax.profile --config=FILE[:ARG]\n"
          "python -m json.tool x\n")
  assert commands_in(text) == [
      ["-m", "vt_jax.main", "--config=configs/a.py", "--workdir=DIR", "--checkpoint_step=1"],
      ["-m", "vt_jax.data", "--save=/t"],
      ["benchmarks/b.py"],
      ["-m", "vt_jax.profile", "--config=FILE:ARG"],
  ]
  assert is_template(["-m", "vt_jax.profile", "--config=FILE:ARG"])
  assert is_template(["-m", "vt_jax.data", "--config=configs/X.py"])
  assert not is_template(["-m", "vt_jax.data", "--config=configs/no_such_file.py"])
  markdown = ("## Tool (`python -m vt_jax.main`)\n\nRun `python -m vt_jax.data\n--batches=2` "
              "now, not `python -m vt_jax.main`.\n\n```bash\npython -m vt_jax.profile --json\n```\n")
  found = [argv for piece in _markdown_code(markdown) for argv in commands_in(piece)]
  assert found == [["-m", "vt_jax.profile", "--json"], ["-m", "vt_jax.data", "--batches=2"]]


def test_parse_only_hooks_argparse_tools(tmp_path):
  script = tmp_path / "tool.py"
  script.write_text("import argparse, sys\n"
                    "p = argparse.ArgumentParser(); p.add_argument('--config')\n"
                    "p.parse_args()\n"
                    "sys.exit('the hook let the tool run past its parsing')\n")
  good = parse_only([str(script), "--config=configs/quickstart.py"])
  assert good.returncode == 0 and "1 config(s) loaded" in good.stdout, good.stderr
  for argv, message in [([str(script), "--no_such_flag=1"], "no_such_flag"),
                        ([str(script), "--config=configs/vt_r50.py:advanced"], "'advanced'")]:
    bad = parse_only(argv)
    assert bad.returncode != 0 and message in bad.stderr, bad.stderr[-2000:]


@pytest.mark.parametrize("argv,message", [
    (["-m", "vt_jax.main", "--config=configs/vt_r50.py:advanced", "--workdir=w"],
     "unknown config arg 'advanced'"),
    (["-m", "vt_jax.main", "--config=configs/no_such.py", "--workdir=w"], "no_such.py"),
    (["-m", "vt_jax.main", "--config=configs/quickstart.py", "--workdir=w", "--config.nope=1"],
     "no field 'nope'"),
    (["-m", "vt_jax.main", "--config=configs/quickstart.py"], "workdir"),
    (["-m", "vt_jax.profile", "--no_such_flag"], "no_such_flag"),
    (["-m", "vt_jax.main", "--config=configs/digit_scenes.py:task=segmentation", "--workdir=w"],
     "config.data.task='segmentation'"),  # validate_config runs
])
def test_parse_only_fails_on_a_rotten_command(argv, message):
  result = parse_only(argv)
  assert result.returncode != 0 and _PARSED not in result.stdout
  assert message in result.stderr, result.stderr[-3000:]


def test_readme_stays_a_page_that_starts_a_reader():
  """The README starts a reader (what, status, install, quickstart, ...) in at most ~300
  lines; the long reads belong in docs/*.md, linked from it."""
  with open(os.path.join(ROOT, "README.md")) as f:
    lines = f.read().splitlines()
  assert len(lines) <= 300, f"README.md has {len(lines)} lines: move the details to docs/"
