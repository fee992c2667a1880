"""Process entry point: flags -> core -> initial config -> gRPC + REST -> readiness -> SIGTERM.

Startup follows model_servers/server.cc: the initial config is loaded and the server waits for
every model's latest version before opening its ports (a failure ends the process with
``Failed to start server. Error: ...``, as the real binary does); then it logs
``Running gRPC ModelServer at ...`` and ``Exporting HTTP/REST API at:...``. The stand-in also
prints one machine-readable line on stdout, which tests may use instead of polling::

    TFSERVING_STANDIN_READY grpc=127.0.0.1:<port> rest=http://127.0.0.1:<port>

``--model_config_file_poll_wait_seconds`` > 0 re-reads the config file on that period and reloads
it (server.cc ``PollFilesystemAndReloadConfig``); a bad file is logged and the old config kept.
SIGTERM / SIGINT stop the servers and exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from tests.tfserving_standin import flags as flags_mod
from tests.tfserving_standin import grpc_services, rest
from tests.tfserving_standin import model_config as mc
from tests.tfserving_standin.core import ServerCore
from tests.tfserving_standin.status import ServingError

log = logging.getLogger("tfserving_standin")
READY_PREFIX = "TFSERVING_STANDIN_READY"


def _initial_config(flags: flags_mod.Flags) -> mc.ModelServerConfig:
    if flags.model_config_file:
        return mc.read_config_file(flags.model_config_file)
    return mc.single_model_config(flags.model_name, flags.model_base_path)


def _watch_config_file(core: ServerCore, flags: flags_mod.Flags, stop: threading.Event) -> None:
    while not stop.wait(flags.model_config_file_poll_wait_seconds):
        try:
            core.reload_config(mc.read_config_file(flags.model_config_file))
        except ServingError as err:
            log.error(
                "Failed to reload config from %s: %s: %s",
                flags.model_config_file,
                err.code,
                err.message,
            )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname).1s tfserving_standin] %(message)s",
    )
    flags = flags_mod.parse(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("Received signal %d, shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    core = ServerCore(
        poll_wait_seconds=flags.file_system_poll_wait_seconds,
        max_num_load_retries=flags.max_num_load_retries,
        load_retry_interval_micros=flags.load_retry_interval_micros,
        allow_version_labels=flags.allow_version_labels,
        allow_version_labels_for_unavailable_models=flags.allow_version_labels_for_unavailable_models,
        saved_model_tags={t for t in flags.saved_model_tags.split(",") if t},
    )
    core.start()
    try:
        core.reload_config(_initial_config(flags))
    except ServingError as err:
        print(f"Failed to start server. Error: {err.code}: {err.message}", file=sys.stderr)
        core.stop()
        return 1

    grpc_server, grpc_port = grpc_services.make_server(core, flags.port)
    log.info("Running gRPC ModelServer at 127.0.0.1:%d ... (TF Serving stand-in)", grpc_port)
    rest_server = None
    rest_url = ""
    if flags.rest_api_port:
        rest_server = rest.make_server(core, flags.rest_api_port)
        rest.serve_in_thread(rest_server)
        rest_url = f"http://127.0.0.1:{rest_server.server_address[1]}"
        log.info(
            "Exporting HTTP/REST API at:localhost:%d ... (TF Serving stand-in)",
            rest_server.server_address[1],
        )
    if flags.model_config_file and flags.model_config_file_poll_wait_seconds > 0:
        threading.Thread(
            target=_watch_config_file,
            args=(core, flags, stop),
            daemon=True,
            name="standin-config-poll",
        ).start()
    print(f"{READY_PREFIX} grpc=127.0.0.1:{grpc_port} rest={rest_url}", flush=True)

    while not stop.wait(0.5):
        pass
    if rest_server is not None:
        rest_server.shutdown()
        rest_server.server_close()
    grpc_server.stop(grace=1).wait(2)
    core.stop()
    log.info("Stand-in stopped")
    return 0
