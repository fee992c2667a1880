"""How many Dockerfile layers a change invalidates, from the Dockerfile structure.

BuildKit reuses a cached step until the first COPY/ADD whose inputs changed; that step and every
step after it rebuild. This script finds that step for two kinds of change - a code-only change
(a file under src/) and a requirements change (requirements.txt) - in our Dockerfiles and in a
plain baseline (`COPY . .` before `pip install`), and prints the counts and the ratio.

    python benchmarks/docker_layers.py
"""

from __future__ import annotations

import fnmatch
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYER_INSTRUCTIONS = {"RUN", "COPY", "ADD"}  # the ones that add a filesystem layer
CHANGES = {"code-only change (src/tfship/train.py)": "src/tfship/train.py",
           "requirements change (requirements.txt)": "requirements.txt"}  # fmt: skip

BASELINE = """\
FROM tensorflow/tensorflow:2.21.0-gpu
WORKDIR /app
COPY . .
RUN pip install -r requirements.txt
RUN pip install --no-deps -r requirements-serving-api.txt
RUN pip install --no-deps .
"""


@dataclass(frozen=True)
class Step:
    instruction: str
    args: str


def parse(text: str) -> list[Step]:
    """Instructions of the last stage, continuation lines joined, comments dropped."""
    steps: list[Step] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        full = (buffer + line).strip()
        buffer = ""
        instruction, _, args = full.partition(" ")
        if instruction.upper() == "FROM":
            steps = []
        steps.append(Step(instruction.upper(), args.strip()))
    return steps


def dockerignore() -> list[str]:
    path = ROOT / ".dockerignore"
    lines = path.read_text().splitlines() if path.exists() else []
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def copies(step: Step, changed: str, ignored: list[str]) -> bool:
    """Does this COPY/ADD read `changed` from the build context?"""
    if any(fnmatch.fnmatch(changed, p) or changed.startswith(p.rstrip("/") + "/") for p in ignored):
        return False
    words = [w for w in shlex.split(step.args) if not w.startswith("--")]
    for source in words[:-1]:  # the last word is the destination
        source = source.rstrip("/") or "."
        if source == "." or fnmatch.fnmatch(changed, source) or changed.startswith(source + "/"):
            return True
    return False


def invalidated(steps: list[Step], changed: str, ignored: list[str]) -> tuple[int, int, int]:
    """(layers rebuilt, total layers, dependency-install layers rebuilt) for a change."""
    layers = [s for s in steps if s.instruction in LAYER_INSTRUCTIONS]
    for index, step in enumerate(layers):
        if step.instruction in ("COPY", "ADD") and copies(step, changed, ignored):
            rebuilt = layers[index:]
            deps = sum(1 for s in rebuilt if s.instruction == "RUN" and "-r requirements" in s.args)
            return len(rebuilt), len(layers), deps
    return 0, len(layers), 0


def main() -> int:
    ignored = dockerignore()
    files = {
        "docker/train.Dockerfile": (ROOT / "docker/train.Dockerfile").read_text(),
        "docker/test.Dockerfile": (ROOT / "docker/test.Dockerfile").read_text(),
        "baseline (COPY . . first)": BASELINE,
    }
    results: dict[tuple[str, str], tuple[int, int, int]] = {}
    print(f"{'Dockerfile':<27} {'change':<40} {'layers rebuilt':>14} {'pip -r layers rebuilt':>22}")
    for name, text in files.items():
        steps = parse(text)
        for label, changed in CHANGES.items():
            rebuilt, total, deps = results[(name, label)] = invalidated(steps, changed, ignored)
            print(f"{name:<27} {label:<40} {f'{rebuilt} of {total}':>14} {deps:>22}")
    code = next(iter(CHANGES))
    ours = results[("docker/train.Dockerfile", code)]
    base = results[("baseline (COPY . . first)", code)]
    print(
        f"\ncode-only change, training image: {ours[0]} layers rebuilt vs {base[0]} (baseline)"
        f" ({base[0] / ours[0]:.2f}x); dependency installs rebuilt: {ours[2]} vs {base[2]}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
