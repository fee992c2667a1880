from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import yaml

from tfship.commands import load
from tfship.config import PipelineConfig


@dataclass(frozen=True)
class ConfigResult:
    """The resolved configuration, or its schema with `--explain`."""

    config: dict[str, Any]

    def render_text(self) -> str:
        return yaml.safe_dump(self.config, sort_keys=False).rstrip()


def _handle(args: argparse.Namespace) -> ConfigResult:
    if args.explain:
        return ConfigResult(PipelineConfig.model_json_schema())
    cfg, _ = load(args)
    return ConfigResult(cfg.to_dict())


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[common], help="validate and print the resolved config")
    p.add_argument("--explain", action="store_true", help="print the JSON schema of every field")
    p.set_defaults(handler=_handle)
