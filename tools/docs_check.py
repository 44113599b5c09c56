"""Run the `allwen` commands the README and the docs pages show, as a reader would (`make docs-check`).

Every ```bash block of README.md and docs/**/*.md is read; each `allwen ...` line (with its `\\`
continuations, without its comment) is one command. In page order, in a scratch folder that has
`../shared` beside it as a checkout does, each command:

- runs, when everything it reads exists (data, runs and bundles made by earlier commands);
- is skipped with the reason, when it names an input that is not here, is a template (`RUN`,
  `CONFIG`, `...`), or is a server (`allwen serve`);
- with `--parse-only`, is only parsed (`--help` appended), as the fast test does.

Prints one line per command (page:line, result, seconds) and exits 1 when any command that ran
failed. Training commands on real data take minutes to hours: `--timeout` bounds each one.

    python tools/docs_check.py [--fast] [--parse-only] [--only PAGE] [--timeout SECONDS] [--keep DIR] [--list]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
TEMPLATE = re.compile(r"(?:^|/)(?:[A-Z][A-Z0-9_]+|\.\.\.)(?:/|:|$)|<[a-z]+>")
#: options whose value is a file or folder the command reads
READS = {"--model-dir", "--weights"}
#: commands that write their --out (or second argument) and read their first arguments
NO_INPUT = {"presets", "config", "synth", "demo"}


@dataclass
class Command:
    page: str
    line: int
    text: str

    @property
    def argv(self) -> list[str]:
        words = shlex.split(self.text)
        if words and words[0] == "time":
            words = words[1:]
        return words[1:]  # after `allwen`

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def commands(paths: list[Path] | None = None) -> list[Command]:
    """Every `allwen ...` command in the bash blocks of the pages, in page order."""
    found = []
    for path in paths or pages():
        in_bash, pending, start = False, "", 0
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fence = FENCE.match(line)
            if fence:
                in_bash = not in_bash and fence.group(2) in ("bash", "sh", "shell", "console")
                continue
            if not in_bash:
                continue
            code = _strip_comment(line).strip()
            if code.startswith("$ "):
                code = code[2:]
            if pending:
                pending += " " + code.rstrip("\\").strip()
            elif re.match(r"^(time\s+)?allwen\s", code):
                pending, start = code.rstrip("\\").strip(), number
            if pending and not code.endswith("\\"):
                for part in re.split(r"\s*(?:&&|;)\s*", pending):  # `allwen a && allwen b`: two commands
                    if re.match(r"^(time\s+)?allwen\s", part):
                        found.append(Command(_name(path), start, " ".join(part.split())))
                pending = ""
    return found


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a `#` inside quotes or a word stays)."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def parse_argv(command: Command) -> list[str]:
    """The argument list that checks a command parses without running it."""
    return [*command.argv, "--help"]


def why_not_run(command: Command, cwd: Path) -> str | None:
    """The reason a command cannot run here, or None."""
    argv = command.argv
    if not argv:
        return "no subcommand"
    if any(TEMPLATE.search(w) for w in argv):
        return "a template (placeholders in capitals or ...)"
    if argv[0] == "serve":
        return "a server (parsed only)"
    if "--executor" in argv and "ray" in argv:
        return "needs a Ray cluster"
    if argv[0] in NO_INPUT or "--dry-run" in argv:
        return _missing_set_paths(argv, cwd)
    inputs = []
    skip_next = False
    for i, word in enumerate(argv[1:], 1):
        if skip_next:
            skip_next = False
            continue
        if word.startswith("-"):
            skip_next = word not in ("--headline", "--quiet", "-q", "--json", "--tta", "--by-folder", "--dry-run") \
                and "=" not in word and word not in READS
            if word in READS:
                continue
            continue
        inputs.append(word)
    if argv[0] in ("run", "crossval", "config", "split"):
        inputs = inputs[:0]  # the first argument is a preset or a config file
        first = argv[1] if len(argv) > 1 else ""
        if first.endswith((".yaml", ".yml")):
            inputs.append(first)
    for word in inputs:
        if any(ch in word for ch in "*?"):
            continue
        if not (cwd / word).exists():
            return f"{word} is not here"
    return _missing_set_paths(argv, cwd)


def _missing_set_paths(argv: list[str], cwd: Path) -> str | None:
    for i, word in enumerate(argv):
        if word in ("--set", "-s") and i + 1 < len(argv):
            key, _, value = argv[i + 1].partition("=")
            if key in ("data.path", "model.weights") and value not in ("hub", "none") and not (cwd / value).exists():
                return f"{key}={value} is not here"
    return None


TRAINS = {"run", "crossval", "demo"}


def run_all(found: list[Command], parse_only: bool, timeout: float, keep: Path | None, fast: bool = False) -> int:
    scratch = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="allwen-docs-check-"))
    work = scratch / "work"
    work.mkdir(parents=True, exist_ok=True)
    shared = ROOT.parent / "shared"
    if shared.exists() and not (scratch / "shared").exists():
        (scratch / "shared").symlink_to(shared)  # ../shared from the scratch folder, as from a checkout
    demo = ROOT / "runs" / "demo"  # what `make demo` made: the README's examples use it
    if demo.is_dir() and not (work / "runs" / "demo").exists():
        (work / "runs").mkdir(exist_ok=True)
        (work / "runs" / "demo").symlink_to(demo)
    allwen = shutil.which("allwen") or str(Path(sys.executable).parent / "allwen")
    failed = 0
    for command in found:
        argv = parse_argv(command) if parse_only else command.argv
        why = None if parse_only else why_not_run(command, work)
        if not why and fast and command.argv[0] in TRAINS and "--dry-run" not in command.argv:
            why = "trains (left out by --fast)"
        if why:
            print(f"SKIP {command.where}: {command.text}  ({why})", flush=True)
            continue
        start = time.perf_counter()
        try:
            done = subprocess.run([allwen, *argv], cwd=work, capture_output=True, text=True, timeout=timeout)
            rc, tail = done.returncode, (done.stderr.strip().splitlines() or [""])[-1]
        except subprocess.TimeoutExpired:
            rc, tail = -1, f"still running after {timeout:g} s"
        seconds = time.perf_counter() - start
        ok = rc == 0
        failed += not ok
        print(f"{'OK  ' if ok else 'FAIL'} {command.where}: {command.text}  ({seconds:.1f} s)"
              + ("" if ok else f"\n     exit {rc}: {tail}"), flush=True)
    print(f"{len(found)} commands; {failed} failed; scratch folder {scratch}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parse-only", action="store_true", help="only check that each command parses (--help appended)")
    parser.add_argument("--only", help="only the commands of pages whose path contains this text")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds each command may run (default 3600)")
    parser.add_argument("--keep", type=Path, help="scratch folder to run in (kept; default: a new temporary one)")
    parser.add_argument("--list", action="store_true", help="only list the commands found")
    parser.add_argument("--fast", action="store_true", help="leave out the commands that train (run, crossval, demo)")
    args = parser.parse_args()
    found = [c for c in commands() if not args.only or args.only in c.page]
    if args.list:
        for c in found:
            print(f"{c.where}: {c.text}")
        return 0
    return run_all(found, args.parse_only, args.timeout, args.keep, args.fast)


if __name__ == "__main__":
    sys.exit(main())
