r"""Documented commands: find every one, parse each without running it (used by
tests/test_documented_commands.py).

What is collected (automatically; nothing to register):
  * README.md and docs/*.md: fenced code blocks and inline `code` spans (a span may wrap across
    lines; a span that is only `python -m vt_jax.<tool>`, or sits in a heading, names the
    tool);
  * the docstrings (module, class, function) of configs/*.py, vt_jax/**/*.py, benchmarks/*.py;
  * the launch scripts' examples (launch/* comment headers and markdown lines naming
    `launch/...`), run for real with `--dry-run` (scripts that have one) or with
    PYTHON pointing at a recorder (launch/local_multiprocess.sh), and the commands they print
    or would start.
In each, every `python[3] -m vt_jax.<tool> ...` and `python benchmarks/<x>.py ...` invocation
is a command. Shell syntax is read with shlex (`\` continuations, quotes, `# comments`, `&&`
chains, commands nested in `--command='...'`); `[--flag=X]` optional parts are kept (so the
flag's name is checked), other bracketed parts (`[flags...]`) dropped, and the placeholder
value `N` becomes 1. A `--config=` whose file does not exist and is written with capitals
(`FILE[:ARG]`, `configs/X.py`, `vt_rXX.py`), or is `...`, is a usage template, not an example, and is not run.

Python snippets: every ```python block of README.md and docs/*.md is a program that the
test runs, in a fresh interpreter, and that must exit 0 (so a snippet states what it shows
with `assert`). A block that is a fragment of a larger program says so on the line before its
fence: `<!-- not run: why -->`.

Links: every relative link of README.md and docs/*.md, `[text](path#anchor)` or
`![alt](picture)`, must name an existing file, and its anchor a heading of that file.

How a command is "parsed" (parse-only, no work): this file, run as a script, executes the tool
as `__main__` (runpy) with `absl.app.run` and `argparse.ArgumentParser.parse_args` replaced by
hooks that parse the command line and stop before the tool's main does anything. absl parsing
runs the tool's own flag parser (so `--config=FILE:ARG` is loaded by ml_collections'
config_flags, `--config.a.b=...` overrides are applied, and required flags and enum values are
checked); afterwards a module-level `validate_config(config)` in the tool, if it has one (as
vt_jax.main does), is called on every loaded config. A `--config` that is a plain string flag
(or an argparse argument) is loaded with vt_jax.config_lib.files.load. A tool that imports a
module outside vt_jax that is not installed (torch for a comparison benchmark) is skipped,
saying which. Each command runs in its own subprocess, so tools that
define the same flag names do not collide.

What a new CLI must do to be covered: be runnable as `python -m vt_jax.<tool>` (or
`python benchmarks/<x>.py`), call `absl.app.run(main[, flags_parser=...])` (or argparse's
`parse_args`) before doing any work, and define its flags at import time or in its
`if __name__ == "__main__":` block (both are executed); show at least one example in
README.md, docs/*.md or its docstring (test_every_cli_has_a_documented_example enforces this
for vt_jax); optionally define `validate_config(config)` for checks beyond flag parsing. A launch script is
covered once it accepts `--dry-run` as its first argument and prints each command it would run.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import re
import runpy
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PARSED = "PARSE-ONLY OK"
_NEEDS = "PARSE-ONLY NEEDS "  # + a module that is not a vt_jax dependency
# A python interpreter word: python, python3, python3.12, ~/vt_venv/bin/python, "$PYTHON".
_PYTHON_WORD = re.compile(r"^(\S*/)?python(3(\.\d+)?)?$|^\$\{?PYTHON\}?$")
_MENTIONS_TOOL = re.compile(r"python\S*\s+(-m\s+vt_jax\b|benchmarks/\w+\.py)")
_SEPARATORS = {"&&", "||", ";", "|", "&"}


# ---------------------------------------------------------------- extraction

def _drop_brackets(text: str) -> str:
  """`[--x=1]` -> `--x=1`; `FILE[:ARG]` -> `FILE:ARG`; a free-standing `[flags...]` -> ``."""
  def repl(m):
    inner = m.group(1)
    glued = m.start() > 0 and not text[m.start() - 1].isspace()
    return inner if inner.startswith("-") or glued else ""
  return re.sub(r"\[([^\[\]]*)\]", repl, text)


def _shell_lines(text: str) -> list[str]:
  text = re.sub(r"\\\n[ \t#]*", " ", text)  # continuations, also inside `#` comment blocks
  return [_drop_brackets(line) for line in text.splitlines()]


def _words(line: str) -> list[str]:
  """Shell words; `;`, `&&`, `|`, `>` are words of their own even when glued (`a;`)."""
  lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
  lexer.whitespace_split = True
  try:
    return list(lexer)
  except ValueError:  # unbalanced quote in prose: read it as plain words
    return line.split()


def commands_in(text: str) -> list[list[str]]:
  """Every tool invocation in shell-like `text`, as argv lists starting at `-m`/the script."""
  found = []
  for line in _shell_lines(text):
    if _MENTIONS_TOOL.search(line):
      found.extend(_commands_in_words(_words(line)))
  return found


def _commands_in_words(words: list[str]) -> list[list[str]]:
  found, i = [], 0
  while i < len(words):
    word = words[i]
    if " " in word and _MENTIONS_TOOL.search(word):  # nested: --command='... python -m ...'
      found.extend(commands_in(word.split("=", 1)[1] if word.startswith("-") else word))
    elif _PYTHON_WORD.match(word) and i + 1 < len(words):
      rest = words[i + 1:]
      if rest[0] == "-m" and len(rest) > 1 and rest[1].startswith("vt_jax"):
        start = 2
      elif re.fullmatch(r"benchmarks/\w+\.py", rest[0]):
        start = 1
      else:
        i += 1
        continue
      end = next((j for j in range(start, len(rest)) if rest[j] in _SEPARATORS
                  or rest[j].startswith(">")), len(rest))
      argv = ["..." if a == "\u2026" else a for a in rest[:end]]
      found.append(["1" if a == "N" else re.sub(r"^(--\w+)=N$", r"\1=1", a) for a in argv])
      i += end
    i += 1
  return found


def _markdown_code(text: str) -> list[str]:
  """Fenced blocks as they are; inline spans from paragraphs joined onto one line."""
  pieces, prose = [], []
  for k, part in enumerate(re.split(r"^```[^\n]*\n", text, flags=re.M)):
    (pieces if k % 2 else prose).append(part)
  for part in prose:
    # Headings name tools (`## Training (`python -m vt_jax.main`)`); they are not examples.
    part = re.sub(r"^#.*$", "", part, flags=re.M)
    for paragraph in re.split(r"\n\s*\n", part):
      spans = re.findall(r"`([^`]+)`", " ".join(paragraph.split("\n")))
      # A bare `python -m vt_jax.main` in a sentence names the tool; it is not an example.
      pieces.extend(p for p in spans if not re.fullmatch(r"\s*python3? -m [\w.]+\s*", p))
  return pieces


def _docstrings(path: str) -> list[str]:
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  nodes = [tree] + [n for n in ast.walk(tree) if isinstance(
      n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
  return [d for d in (ast.get_docstring(n, clean=False) for n in nodes) if d]


def _relative(path: str) -> str:
  return os.path.relpath(path, ROOT)


def markdown_files() -> list[str]:
  """README.md and docs/*.md, relative to ROOT."""
  return ["README.md"] + sorted(_relative(p) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _read(relative_path: str) -> str:
  with open(os.path.join(ROOT, relative_path)) as f:
    return f.read()


def doc_sources() -> dict[str, list[str]]:
  """{source file: [texts to scan]} for README.md, docs/*.md and the docstrings."""
  sources = {path: _markdown_code(_read(path)) for path in markdown_files()}
  for pattern in ("configs/*.py", "vt_jax/**/*.py", "benchmarks/*.py"):
    for path in sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True)):
      sources[_relative(path)] = _docstrings(path)
  return sources


def is_template(argv: list[str]) -> bool:
  """A usage line (`--config=FILE[:ARG]`, `configs/X.py`, `--config=...`, or `...` standing
  for flags shown elsewhere), not an example."""
  if "..." in argv:
    return True
  for arg in argv:
    if arg.startswith("--config="):
      path = arg[len("--config="):].split(":")[0]
      if not os.path.exists(os.path.join(ROOT, path)) and (
          re.search(r"[A-Z]", path) or "..." in path):
        return True
  return False


def documented_commands() -> list[tuple[str, list[str]]]:
  out, seen = [], set()
  for source, texts in doc_sources().items():
    for text in texts:
      for argv in commands_in(text):
        if not is_template(argv) and tuple(argv) not in seen:
          seen.add(tuple(argv))
          out.append((source, argv))
  return out


def launch_examples() -> list[tuple[str, dict[str, str], str, list[str]]]:
  """(source, env, script, args) of every `[VAR=x ...] [sbatch ...] launch/S args` example."""
  texts = {}
  for path in sorted(glob.glob(os.path.join(ROOT, "launch", "*"))):
    with open(path) as f:
      texts[_relative(path)] = ["\n".join(l[1:] for l in f.read().splitlines()
                                          if l.startswith("#") and not l.startswith("#!"))]
  texts.update((path, code) for path, code in doc_sources().items() if path.endswith(".md"))
  out, seen = [], set()
  for source, pieces in texts.items():
    for piece in pieces:
      for line in _shell_lines(piece):
        words = _words(line)
        at = next((k for k, w in enumerate(words) if re.fullmatch(r"(\./)?launch/[\w.]+", w)),
                  None)
        if at is None:
          continue
        env = dict(w.split("=", 1) for w in words[:at] if re.fullmatch(r"[A-Z_]+=\S*", w))
        args = ["2" if a == "N" else a for a in words[at + 1:]]
        args = args[:next((j for j, a in enumerate(args) if a in _SEPARATORS), len(args))]
        args = [a for a in args if a not in ("--dry-run", "...")]
        # Without flags it is a mention of the script, not an example.
        if any(a.startswith("--") for a in args) and not is_template(args):
          key = (tuple(sorted(env.items())), os.path.normpath(words[at]), tuple(args))
          if key not in seen:
            seen.add(key)
            out.append((source, env, key[1], args))
  return out


_NOT_RUN = re.compile(r"<!--\s*not run:[^>]*-->\s*$")


def python_snippets() -> list[tuple[str, int, str]]:
  """(markdown file, line of the fence, code) of every ```python block meant to run."""
  out = []
  for path in markdown_files():
    lines = _read(path).split("\n")
    k = 0
    while k < len(lines):
      if re.fullmatch(r"```python\s*", lines[k]):
        end = next(j for j in range(k + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(k - 1, -1, -1) if lines[j].strip()), "")
        if not _NOT_RUN.search(before):
          out.append((path, k + 1, "\n".join(lines[k + 1:end]) + "\n"))
        k = end
      k += 1
  return out


def github_anchor(heading: str) -> str:
  """The anchor GitHub gives a markdown heading: lower case, punctuation dropped, spaces -> -."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
  fenced = re.split(r"^```[^\n]*\n", text, flags=re.M)
  prose = "".join(fenced[0::2])
  return {github_anchor(m) for m in re.findall(r"^#+\s+(.*?)\s*$", prose, flags=re.M)}


def relative_links() -> list[tuple[str, str]]:
  """(markdown file, link target) of every link that is not a URL, in README.md and docs/."""
  out = []
  for path in markdown_files():
    prose = "".join(re.split(r"^```[^\n]*\n", _read(path), flags=re.M)[0::2])
    prose = re.sub(r"`[^`]*`", "", prose)  # code spans are not links
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", prose):
      if not re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
        out.append((path, target))
  return out


def link_problem(source: str, target: str) -> str | None:
  """Why `target`, linked from the markdown file `source`, does not resolve (None if it does)."""
  file_part, _, anchor = target.partition("#")
  linked = source
  if file_part:
    linked = os.path.normpath(os.path.join(os.path.dirname(source), file_part))
  if not os.path.exists(os.path.join(ROOT, linked)):
    return f"{source}: link to {target}: {linked} does not exist"
  if anchor and linked.endswith(".md") and anchor not in _anchors(_read(linked)):
    return f"{source}: link to {target}: {linked} has no heading with the anchor #{anchor}"
  return None


# ---------------------------------------------------------------- parse-only runner

class _ParsedOnly(BaseException):
  """Raised by the hooks once the command line is parsed: the tool's main never runs."""


def _parse_only(argv: list[str]) -> None:
  """Runs `python ARGV` as __main__ up to its flag parsing, then checks its configs."""
  import argparse  # pylint: disable=g-import-not-at-top
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ml_collections.config_flags.config_flags import ConfigFileFlagParser as config_file_parser  # pylint: disable=g-import-not-at-top,line-too-long

  seen = {}

  def absl_run(main, argv=None, flags_parser=None, **unused):
    (flags_parser or app.parse_flags_with_usage)(list(sys.argv if argv is None else argv))
    seen["globals"] = main.__globals__
    seen["configs"] = {}
    for name in flags.FLAGS:
      flag = flags.FLAGS[name]
      if flag.value is not None and (isinstance(flag.parser, config_file_parser) or
                                     isinstance(flag.value, ml_collections.ConfigDict)):
        # A config file that failed to load is an object that raises on first use.
        seen["configs"][name] = flag.value
        seen["configs"][name].keys()
      elif name == "config" and isinstance(flag.value, str):  # a spec the tool loads later
        from vt_jax.config_lib import files  # pylint: disable=g-import-not-at-top
        seen["configs"][name] = files.load(flag.value)
    raise _ParsedOnly

  def argparse_parse(self, args=None, namespace=None):
    namespace = original_parse_args(self, args, namespace)
    seen["globals"], seen["configs"] = {}, {}
    spec = getattr(namespace, "config", None)
    if isinstance(spec, str):
      from vt_jax.config_lib import files  # pylint: disable=g-import-not-at-top
      seen["configs"]["config"] = files.load(spec)
    raise _ParsedOnly

  original_parse_args = argparse.ArgumentParser.parse_args
  app.run = absl_run
  argparse.ArgumentParser.parse_args = argparse_parse
  try:
    if argv[0] == "-m":
      sys.argv = [argv[1]] + argv[2:]
      runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
      sys.argv = list(argv)
      sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
      runpy.run_path(argv[0], run_name="__main__")
  except ModuleNotFoundError as e:
    if e.name and e.name.split(".")[0] != "vt_jax":  # e.g. torch for a comparison benchmark
      print(f"{_NEEDS}{e.name}")
      sys.exit(0)
    raise
  except _ParsedOnly:
    validate = seen["globals"].get("validate_config")
    for name, config in seen["configs"].items():
      if callable(validate):
        validate(config)
      print(f"--{name}: {len(config)} top-level fields")
    print(f"{_PARSED}: {len(seen['configs'])} config(s) loaded")
    sys.exit(0)
  sys.exit(f"{' '.join(argv)}: the tool returned without reaching absl.app.run or argparse; "
           "wrap its main in absl.app.run so its flags are parsed before any work")


def parse_only(argv: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  return subprocess.run([sys.executable, os.path.abspath(__file__), json.dumps(argv)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


if __name__ == "__main__":
  _parse_only(json.loads(sys.argv[1]))
