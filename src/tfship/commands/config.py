from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import yaml

from tfship.commands import load
from tfship.config import PipelineConfig
from tfship.config.fields import FIELDS


@dataclass(frozen=True)
class ConfigResult:
    """The resolved configuration, or its schema with `--explain`."""

    config: dict[str, Any]

    def render_text(self) -> str:
        return yaml.safe_dump(self.config, sort_keys=False).rstrip()


def _handle(args: argparse.Namespace) -> ConfigResult:
    if args.explain:
        schema = PipelineConfig.model_json_schema()
        # Which fields decide whether a model ships (committed only, in CI) and why.
        schema["x-tfship-field-roles"] = {
            name: {"role": role.value, "why": why} for name, (role, why) in FIELDS.items()
        }
        return ConfigResult(schema)
    cfg, _ = load(args)
    if args.sources:
        sources = cfg.sources.to_dict()
        sources["fields"] = {
            name: {"source": source, "role": FIELDS[name][0].value}
            for name, source in sources["fields"].items()
        }
        return ConfigResult(sources)
    return ConfigResult(cfg.to_dict())


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[common], help="validate and print the resolved config")
    p.add_argument(
        "--explain",
        action="store_true",
        help="print the JSON schema of every field, and which fields decide whether a model "
        "ships (x-tfship-field-roles)",
    )
    p.add_argument(
        "--sources",
        action="store_true",
        help="print where every value that is not a default came from (file@commit, variable "
        "or flag, and who set it)",
    )
    p.set_defaults(handler=_handle)
