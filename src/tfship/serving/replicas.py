"""Several TF Serving replicas that read one model repository (`serving.replicas`).

With replicas a deploy is file-driven (docs/deploy.md, "Kubernetes"): tfship writes
`models.config` to the repository and sends no HandleReloadConfigRequest (through a Service it
would reach one pod, whose next poll of its own file would undo it). Each replica's copy of the
repository (the `model-sync` sidecar) and its `--model_config_file_poll_wait_seconds` bring the
change to it; tfship then polls *every* replica over REST until each reports the wanted
versions AVAILABLE, the versions it dropped gone and every label resolved to its version.

`serving.replicas` is a list of REST base URLs, or `dns:<host>:<port>`: every address the name
resolves to (a headless Service such as `tfserving-pods`), resolved again at every poll so pods
that come and go are seen. A name that resolves to no address is an error.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from tfship.errors import InfraError
from tfship.redact import redact_text, redact_url
from tfship.serving.client import ServerAnswered, ServingClient, VersionStatus

log = logging.getLogger(__name__)
DNS_PREFIX = "dns:"


def resolve_dns(spec: str) -> list[str]:
    """`dns:<host>:<port>` -> the REST base URL of every address the name resolves to now."""
    host, _, port = spec[len(DNS_PREFIX) :].rpartition(":")
    hint = (
        "the deploy job must resolve the pods' headless Service (tfserving-pods): run it on a "
        "runner inside the cluster, or list the replicas' REST URLs in serving.replicas"
    )
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise InfraError(
            f"serving.replicas {spec}: cannot resolve {host}: {exc}", hint=hint
        ) from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise InfraError(
            f"serving.replicas {spec}: {host} resolves to no address (no replica is running)",
            hint=hint,
        )
    return [f"http://[{a}]:{port}" if ":" in a else f"http://{a}:{port}" for a in addresses]


class Replicas:
    """One model on every replica. Quacks like ServingClient where the deploy needs it
    (`status`, `wait_available`, `model`); golden requests go to each of `clients()`."""

    grpc_target = None  # never reloaded over gRPC

    def __init__(
        self,
        model: str,
        spec: str | tuple[str, ...],
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.model, self.spec = model, spec
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._clients: dict[str, ServingClient] = {}

    @property
    def rest_url(self) -> str:
        return self.describe()

    def describe(self) -> str:
        if isinstance(self.spec, str):
            return f"every replica of {self.spec}"
        return f"{len(self.spec)} replica(s) {', '.join(redact_url(u) for u in self.spec)}"

    def urls(self) -> list[str]:
        """The replicas now (a `dns:` name is resolved again on every call)."""
        if isinstance(self.spec, str):
            return resolve_dns(self.spec)
        return [u.rstrip("/") for u in self.spec]

    def client(self, url: str) -> ServingClient:
        if url not in self._clients:
            self._clients[url] = ServingClient(
                self.model,
                rest_url=url,
                timeout=self.timeout,
                retries=self.retries,
                backoff=self.backoff,
            )
        return self._clients[url]

    def clients(self) -> list[ServingClient]:
        return [self.client(u) for u in self.urls()]

    def for_model(self, name: str) -> Replicas:
        return Replicas(
            name, self.spec, timeout=self.timeout, retries=self.retries, backoff=self.backoff
        )

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    def reload_config(self, config: Any) -> None:
        raise InfraError(
            "internal error: a config reload was attempted with serving.replicas set; "
            "replicas read models.config from the repository",
        )

    # ---- status ----------------------------------------------------------------------------
    def status(self) -> list[VersionStatus]:
        """Every version any replica knows; its state when all agree, else each replica's."""
        per: dict[str, dict[int, VersionStatus]] = {}
        for c in self.clients():
            per[c.shown_url or ""] = {s.version: s for s in c.status()}
        merged = []
        for v in sorted({v for states in per.values() for v in states}):
            seen = {url: (s[v].state if v in s else "absent") for url, s in per.items()}
            state = next(iter(seen.values()))
            if len(set(seen.values())) > 1:
                state = ", ".join(f"{st} on {url}" for url, st in seen.items())
            first = next(s[v] for s in per.values() if v in s)
            merged.append(VersionStatus(v, state, first.error_code, first.error_message))
        return merged

    def wait_available(
        self,
        versions: Iterable[int],
        *,
        deadline: float,
        poll: float = 0.5,
        gone: Iterable[int] = (),
    ) -> float:
        return self.wait(versions, deadline=deadline, poll=poll, gone=gone)

    def wait(
        self,
        versions: Iterable[int],
        *,
        deadline: float,
        poll: float = 0.5,
        gone: Iterable[int] = (),
        labels: Mapping[str, int] | None = None,
    ) -> float:
        """Poll until every replica reports each of `versions` AVAILABLE, none of `gone`, and
        resolves every label to its version. Returns the seconds waited.

        A replica that gave up loading a version (END with an error) fails at once; on timeout
        the error names every replica that lagged and what it reported.
        """
        want, unwanted, labels = set(versions), set(gone), dict(labels or {})
        t0 = time.monotonic()
        while True:
            urls = self.urls()
            lagging: dict[str, str] = {}
            for url in urls:
                why = self._lag(self.client(url), want, unwanted, labels)
                if why:
                    lagging[redact_url(url)] = why
            waited = time.monotonic() - t0
            if not lagging:
                log.info("%d replica(s) of %s are live after %.1fs", len(urls), self.model, waited)
                return waited
            if waited > deadline:
                detail = "; ".join(f"{url}: {why}" for url, why in lagging.items())
                raise InfraError(
                    f"{len(lagging)} of {len(urls)} replica(s) of {self.describe()} did not "
                    f"serve {self.model} versions {sorted(want)}"
                    + (f", labels {labels}" if labels else "")
                    + f" within {deadline:.0f}s: {redact_text(detail)[:2000]}",
                    hint="each replica must pick up models.config from the repository (its "
                    "sync sidecar, then --model_config_file_poll_wait_seconds) and load the "
                    "version: check those replicas' sidecar and server logs; "
                    "serving.load_deadline_seconds must cover sync interval + poll interval + "
                    "load time",
                )
            time.sleep(poll)

    def _lag(
        self, c: ServingClient, want: set[int], unwanted: set[int], labels: dict[str, int]
    ) -> str | None:
        """Why this replica is not there yet (None: it is)."""
        try:
            states = {s.version: s for s in c.status()}
        except ServerAnswered as exc:
            return f"answered {exc.status}: {exc.error[:200]}"
        except InfraError as exc:
            return f"unreachable ({exc.message[:200]})"
        for v in sorted(want):
            s = states.get(v)
            if s is not None and s.state == "END" and s.error_code not in ("OK", "0", ""):
                raise ServerAnswered(
                    f"TF Serving at {c.shown_url} could not load {self.model} version {v}: "
                    f"{s.error_code}: {s.error_message}",
                    status=500,
                    error=s.error_message,
                    hint="the SavedModel is broken or incompatible with the server's "
                    "TensorFlow; run `tfship validate` on the export",
                )
        missing = [v for v in sorted(want) if v not in states or states[v].state != "AVAILABLE"]
        present = [
            v
            for v in sorted(unwanted)
            if v in states and states[v].state not in ("END", "UNLOADING")
        ]
        if missing or present:
            seen = {v: s.state for v, s in sorted(states.items())}
            return f"reports {seen or 'no versions'}"
        for label, version in sorted(labels.items()):
            try:
                got = c.label_version(label)
            except InfraError as exc:
                return f"unreachable ({exc.message[:200]})"
            if got != version:
                return f"label {label} -> {got if got is not None else 'none'}, not {version}"
        return None
