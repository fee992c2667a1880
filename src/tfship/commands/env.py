from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from tfship import env


@dataclass(frozen=True)
class EnvResult:
    """Every TFSHIP_* variable tfship understands."""

    variables: dict[str, str]

    def render_text(self) -> str:
        width = max(len(k) for k in self.variables)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.variables.items())


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("env", parents=[common], help="list every TFSHIP_* environment variable")
    p.set_defaults(handler=lambda args: EnvResult(env.all_variables()))
