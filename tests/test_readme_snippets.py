# Copyright 2025 The aetnet developers.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Every code block of README.md runs as written, offline, or says in the README what it needs instead.

The conventions, for whoever edits README.md:

- A block's language says whether it is a command: ```bash and ```python blocks are; ```json, ```text, ```bibtex
  and the like are not, and are never run.
- A command block that this suite cannot run carries a marker, an HTML comment on the line right before its fence
  (one or more words): `<!-- snippet: needs-hub -->` (downloads from the Hugging Face Hub), `needs-gpu`, `long`
  (more than about a minute of CPU, or its input is the output of such a block), `output` (shows output, is no
  command) and `setup` (the two set-up commands, which install `.venv` and run this suite: they cannot run inside
  it). The README must say why next to a marked block, in words a reader sees: "Hub", "GPU", or how long it takes
  (`test_marked_blocks_say_why`). The set-up commands are what CI runs (`test_setup_commands_are_what_ci_runs`).
- Every other command block runs, in README order, in one working copy of the repository (its tracked and
  untracked, not ignored files) in a temporary folder, with `../shared` beside it as in CI. So relative paths
  (`examples/...`, `../shared/data/...`) hold, and what a block writes (a checkpoint, `form.png`) is there for
  the blocks after it, as for a reader who runs them in turn. Before the first block, the working copy gets what
  the README's set-up leaves behind: `scripts/demo.sh` runs there, without its `source scripts/setup_env.sh`.
- The environment is what `source .venv/bin/activate` gives a reader, with the venv that runs this suite
  (`VIRTUAL_ENV`, its `bin` first on `PATH`), plus `PYTHONPATH=<copy>/src` so that the copy's code is the one
  tested, and `HF_HUB_OFFLINE=1` / `HF_DATASETS_OFFLINE=1`. Nothing makes a command smaller than it is written.
- A bash block runs with `bash -e`; a python block runs as `python -c <block>` in the working copy. Each python
  block stands alone (it imports what it uses), so that a reader can paste any one of them; files written by earlier
  blocks are the only link between blocks.
- A command line that already ran verbatim in this working copy (the main job, which the set-up runs and later
  blocks show again; the tiny DocVQA run) is not run again: its outputs are there, and the runs are seeded.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
COMMAND_LANGUAGES = {"bash", "python"}
MARKS = {"setup", "needs-hub", "needs-gpu", "long", "output"}
# What the prose next to a marked block must say, as a regular expression over the words around it.
MARK_REASONS = {
    "needs-hub": r"\bHub\b",
    "needs-gpu": r"\bGPU\b",
    "long": r"\b(\d+|a|an|a few)\s*(s|seconds?|min|minutes?|h|hours?)\b",
}
CONTEXT_LINES = 8  # how far from a block its explanation may sit
BLOCK_TIMEOUT = 600
SETUP_LINE = "source scripts/setup_env.sh"
MARKER = re.compile(r"^<!-- snippet: ([\w -]+) -->$")


@dataclass
class Block:
    """One fenced block of the README: where it starts (1-based line of the fence), its language, code and marks."""

    line: int
    language: str
    code: str
    marks: set[str] = field(default_factory=set)
    context: str = ""

    @property
    def runs(self) -> bool:
        return self.language in COMMAND_LANGUAGES and not self.marks

    @property
    def name(self) -> str:
        return f"L{self.line}-{self.language}"


def parse_readme(text: str) -> list[Block]:
    """The fenced blocks of `text`, with the marker comment before each and the prose within `CONTEXT_LINES`."""
    lines = text.splitlines()
    in_code, spans = [False] * len(lines), []
    start = None
    for index, line in enumerate(lines):
        if line.startswith("```"):
            if start is None:
                start = index
            else:
                spans.append((start, index))
                start = None
        if start is not None or (spans and spans[-1][1] == index):
            in_code[index] = True
    blocks = []
    for begin, end in spans:
        marker = MARKER.match(lines[begin - 1]) if begin else None
        code = lines[begin + 1 : end]
        around = range(max(0, begin - CONTEXT_LINES), min(len(lines), end + CONTEXT_LINES + 1))
        prose = [lines[i] for i in around if not in_code[i] and not MARKER.match(lines[i])]
        comments = [line.split("#", 1)[1] for line in code if "#" in line]
        blocks.append(
            Block(
                line=begin + 1,
                language=lines[begin][3:].strip(),
                code="\n".join(code) + "\n",
                marks=set(marker.group(1).split()) if marker else set(),
                context=" ".join(prose + comments),
            )
        )
    return blocks


def commands(code: str) -> list[tuple[str, str]]:
    """The commands of a bash block: (normalised text, as written), continuation lines joined, comments dropped."""
    result, pending = [], []
    for line in code.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending.append(line)
        if not line.rstrip().endswith("\\"):
            written = "\n".join(pending)
            result.append((" ".join(written.replace("\\\n", " ").split()), written))
            pending = []
    return result


BLOCKS = parse_readme(README.read_text(encoding="utf-8"))
RUNNABLE = [block for block in BLOCKS if block.runs]


def reader_environment(copy: Path) -> dict[str, str]:
    """What `source .venv/bin/activate` gives a reader, with this suite's venv; offline; the copy's code first."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["VIRTUAL_ENV"] = sys.prefix
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(copy / "src"), env.get("PYTHONPATH")]))
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def working_copy(root: Path) -> Path:
    """A copy of the repository's tracked and untracked, not ignored files under `root/repo`, `../shared` beside it."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    copy = root / "repo"
    for relative in filter(None, listed.split("\0")):
        source = REPO / relative
        if source.is_file():
            (copy / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / relative)
    if (REPO.parent / "shared").exists():
        (root / "shared").symlink_to(REPO.parent / "shared")
    return copy


@dataclass
class Outcome:
    returncode: int
    seconds: float
    output: str
    skipped: list[str] = field(default_factory=list)  # commands that had already run


class ReadmeRun:
    """Runs the set-up's job, then the runnable blocks in README order, each once, in one working copy."""

    def __init__(self, copy: Path):
        self.copy, self.env = copy, reader_environment(copy)
        self.already_ran: set[str] = set()
        self.outcomes: dict[int, Outcome] = {}
        self.setup = self._run_demo()

    def _execute(self, argv: list[str], env: dict[str, str] | None = None) -> Outcome:
        start = time.perf_counter()
        try:
            done = subprocess.run(
                argv, cwd=self.copy, env=env or self.env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
            )
            returncode, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as error:
            returncode, output = -1, f"timed out after {BLOCK_TIMEOUT} s: {error.output or ''}{error.stderr or ''}"
        return Outcome(returncode, time.perf_counter() - start, output)

    def _run_demo(self) -> Outcome:
        """`scripts/demo.sh` without its set-up line (the venv is this suite's), traced to learn what it ran."""
        script = (self.copy / "scripts" / "demo.sh").read_text()
        assert SETUP_LINE in script.splitlines(), f"scripts/demo.sh no longer runs `{SETUP_LINE}`"
        # (bash, run as root, ignores a PS4 from the environment: the script sets it.)
        script = "PS4='+[demo] '; set -x\n" + script.replace(SETUP_LINE, ":", 1)
        outcome = self._execute(["bash", "-e", "-c", script, "scripts/demo.sh"])
        traced = [match.group(1) for match in re.finditer(r"^\++\[demo\] (.*)$", outcome.output, re.MULTILINE)]
        self.already_ran.update(" ".join(command.split()) for command in traced)
        return outcome

    def run_through(self, block: Block) -> Outcome:
        """Run every runnable block up to and including `block` that has not run yet; `block`'s outcome."""
        for earlier in RUNNABLE:
            if earlier.line not in self.outcomes:
                self.outcomes[earlier.line] = self._run_block(earlier)
            if earlier is block:
                break
        return self.outcomes[block.line]

    def _run_block(self, block: Block) -> Outcome:
        if block.language == "python":
            return self._execute(["python", "-c", block.code])
        new, skipped = [], []
        for normalised, written in commands(block.code):
            (skipped if normalised in self.already_ran else new).append((normalised, written))
        outcome = self._execute(["bash", "-e", "-c", "\n".join(written for _, written in new)])
        if outcome.returncode == 0:
            self.already_ran.update(normalised for normalised, _ in new)
        outcome.skipped = [normalised for normalised, _ in skipped]
        return outcome


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> ReadmeRun:
    run = ReadmeRun(working_copy(tmp_path_factory.mktemp("readme")))
    assert run.setup.returncode == 0, f"the set-up's job (scripts/demo.sh) failed:\n{run.setup.output[-4000:]}"
    return run


def test_every_fence_has_a_language_and_known_marks():
    assert RUNNABLE, "no runnable block found: is the README parsed right?"
    for block in BLOCKS:
        assert block.language, f"README line {block.line}: a fence without a language"
        assert block.marks <= MARKS, f"README line {block.line}: unknown marks {sorted(block.marks - MARKS)}"
        if block.marks:
            assert block.language in COMMAND_LANGUAGES, f"README line {block.line}: a marked {block.language} block"


def test_marked_blocks_say_why():
    for block in BLOCKS:
        for mark in sorted(block.marks & MARK_REASONS.keys()):
            assert re.search(MARK_REASONS[mark], block.context), (
                f"README line {block.line} is marked {mark!r}, but the text around it does not say so "
                f"(expected {MARK_REASONS[mark]!r} within {CONTEXT_LINES} lines)"
            )


def test_setup_commands_are_what_ci_runs():
    """The set-up block holds `bash scripts/demo.sh` and `bash scripts/test.sh`: CI (`.ci/run`) runs the suite
    with `bash scripts/test.sh` after the very set-up that `scripts/demo.sh` sources; the demo's job itself is run by
    this file (`readme_run`)."""
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    setup_blocks = [block for block in BLOCKS if "setup" in block.marks]
    assert len(setup_blocks) == 1, "exactly one set-up block is expected"
    written = [command.split("#")[0].strip() for command, _ in commands(setup_blocks[0].code)]
    assert written == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in ci and SETUP_LINE in ci
    assert SETUP_LINE in (REPO / "scripts" / "demo.sh").read_text().splitlines()
    assert SETUP_LINE in (REPO / "scripts" / "test.sh").read_text().splitlines()


@pytest.mark.shared_data
@pytest.mark.parametrize("block", RUNNABLE, ids=[block.name for block in RUNNABLE])
def test_readme_block_runs(readme_run, block):
    outcome = readme_run.run_through(block)
    assert outcome.returncode == 0, (
        f"README block at line {block.line} failed (exit {outcome.returncode}, {outcome.seconds:.0f} s):\n"
        f"{block.code}\n--- output (tail) ---\n{outcome.output[-4000:]}"
    )
