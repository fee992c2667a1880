"""Command-line flags, named and defaulted as ``tensorflow_model_server``'s.

Source: tensorflow_serving/model_servers/main.cc (flag list and defaults) and server.cc (how they
are used). Both ``--flag=value`` and ``--flag value`` are accepted; boolean flags accept ``--flag``,
``--flag=true`` and ``--flag=false`` as TensorFlow's flag parser does.

Implemented: --port, --rest_api_port, --model_config_file, --model_config_file_poll_wait_seconds,
--model_name, --model_base_path, --file_system_poll_wait_seconds,
--allow_version_labels, --allow_version_labels_for_unavailable_models, --max_num_load_retries,
--load_retry_interval_micros, --saved_model_tags, --rest_api_timeout_in_ms (parsed, not enforced).

Accepted and ignored (they tune performance or features a stand-in does not model):
see ``IGNORED``. Any other flag is an error, as in the real binary.
"""

from __future__ import annotations

import argparse
import dataclasses

IGNORED = (
    "enable_batching",
    "batching_parameters_file",
    "monitoring_config_file",
    "rest_api_num_threads",
    "rest_api_enable_cors_support",
    "tensorflow_session_parallelism",
    "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism",
    "num_load_threads",
    "num_unload_threads",
    "enable_model_warmup",
    "num_request_iterations_for_warmup",
    "grpc_channel_arguments",
    "grpc_max_threads",
    "platform_config_file",
    "per_process_gpu_memory_fraction",
    "flush_filesystem_caches",
    "xla_cpu_compilation_enabled",
    "enable_profiler",
)


@dataclasses.dataclass(frozen=True)
class Flags:
    port: int = 8500
    rest_api_port: int = 0
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    file_system_poll_wait_seconds: int = 1
    allow_version_labels: bool = True
    allow_version_labels_for_unavailable_models: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    saved_model_tags: str = "serve"
    rest_api_timeout_in_ms: int = 30000


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse(argv: list[str]) -> Flags:
    parser = argparse.ArgumentParser(
        prog="python -m tests.tfserving_standin",
        description="Test stand-in for tensorflow_model_server (not TF Serving).",
        allow_abbrev=False,
    )
    for field in dataclasses.fields(Flags):
        if field.type == "bool":
            parser.add_argument(
                f"--{field.name}", type=_bool, nargs="?", const=True, default=field.default
            )
        else:
            kind = int if field.type == "int" else str
            parser.add_argument(f"--{field.name}", type=kind, default=field.default)
    for name in IGNORED:
        parser.add_argument(
            f"--{name}", nargs="?", const="true", default=None, help=argparse.SUPPRESS
        )
    ns = parser.parse_args(argv)
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(Flags)}
    flags = Flags(**values)
    if not flags.model_config_file and not flags.model_base_path:
        parser.error(
            "Both server_options.model_base_path and server_options.model_config_file are "
            "empty! Set --model_base_path (with --model_name) or --model_config_file."
        )
    if flags.port == flags.rest_api_port and flags.port != 0:
        parser.error("server_options.grpc_port and server_options.http_port cannot be the same")
    return flags
