"""Just enough of the Dockerfile language to test deploy/Dockerfile without Docker:
stages, their instructions, ARG defaults in FROM, ENV pairs, exec-form commands and
the ``.dockerignore`` rules that decide what the build context holds."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.checkout import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ENV, ...
    flags: tuple[str, ...]  # the leading --name=value options (RUN --mount, COPY --from)
    value: str  # the rest of the line, continuations joined


@dataclass(slots=True)
class Stage:
    base: str  # the image FROM names, ARG defaults substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """The variables the stage's ENV instructions set, in order (later ones win)."""
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            env.update(env_pairs(instruction.value))
        return env

    def run_commands(self) -> list[list[str]]:
        """Each RUN's shell commands (split at ``&&``), as argument lists."""
        commands = []
        for instruction in self.all("RUN"):
            for part in re.split(r"&&|;", instruction.value):
                if part.strip():
                    commands.append(shlex.split(part))
        return commands


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: continuations (a trailing backslash) joined, comment
    lines and blank lines dropped, as Docker reads them."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # a comment inside a continuation
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1].rstrip() + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current.strip())
    return lines


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), value)


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile; global ARG defaults are substituted into FROM."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        tokens = rest.split()
        flags = []
        while tokens and tokens[0].startswith("--"):
            flags.append(tokens.pop(0))
        value = rest.strip()
        for flag in flags:
            value = value[len(flag):].lstrip()
        if keyword == "ARG" and not stages:
            name, _, default = value.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = _substitute(value, args).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, tuple(flags), value))
        else:
            raise ValueError(f"{keyword} before the first FROM")
    return stages


def env_pairs(value: str) -> dict[str, str]:
    """``ENV A=1 B="two words"`` (or the legacy ``ENV A 1``) as a dict."""
    words = shlex.split(value)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def exec_form(instruction: Instruction) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD (a shell form is an error: it runs
    under /bin/sh, which would receive SIGTERM instead of the server)."""
    command = json.loads(instruction.value)
    if not isinstance(command, list) or not all(isinstance(w, str) for w in command):
        raise ValueError(f"{instruction.keyword} is not an exec-form array")
    return command


def flag_value(instruction: Instruction, flag: str) -> dict[str, str] | str | None:
    """``--mount=type=bind,from=build`` as {'type': 'bind', 'from': 'build'};
    ``--from=build`` as 'build'; None when the instruction has no such flag."""
    for item in instruction.flags:
        name, _, value = item[2:].partition("=")
        if name == flag:
            if "=" in value:
                return dict(part.split("=", 1) for part in value.split(","))
            return value
    return None


# -- the build context ---------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex over context-relative paths: Go's
    filepath.Match (``*`` and ``?`` stop at ``/``) plus ``**`` for any number of
    folders, which is what Docker's pattern matcher implements."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is an exception ``!``, pattern) per rule, in order; comments and blanks dropped."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.strip("/")  # Docker cleans the path: `dir/` is `dir`
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the file at context-relative ``path`` is sent to the build: the last rule
    that matches the path or one of its parent folders decides (an excluded folder
    excludes what is inside it; a later ``!`` rule can bring it back)."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for negate, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negate
    return included


def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())
