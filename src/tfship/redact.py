"""Keep credentials out of everything tfship writes: logs, results, deploy records, reports.

A URL may carry a password (`https://user:token@host/`), a presigned query string
(`?X-Amz-Signature=...`) or a token parameter; CI variables may hold the same. Everything that
leaves the process (stderr, `--output json`, deploy.json, the deploy log, manifests) goes through
`redact_url` / `redact_text`, so a value is hidden by its shape, not by remembering every place
it could appear. The secret values tfship itself reads (tfship.env) are also hidden verbatim.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

# Query parameters whose value is a credential (AWS/GCS presigned URLs, generic tokens).
_SECRET_PARAMS = re.compile(
    r"(?i)^(x-amz-(signature|credential|security-token)|x-goog-(signature|credential)|"
    r"signature|sig|token|access_token|api_key|apikey|key|password|passwd|secret|"
    r"awsaccesskeyid|private_token|job_token)$"
)
# scheme://user:password@ or scheme://token@ inside free text.
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")
# key=value / key: value pairs in free text whose key names a credential.
_KV_SECRET = re.compile(
    r"(?i)(?P<key>\b(?:aws_secret_access_key|aws_session_token|x-amz-security-token|"
    r"authorization|private-token|password|passwd|secret|token|api[_-]?key)\b\s*[:=]\s*)"
    r"(?P<quote>['\"]?)(?P<value>(?:Bearer\s+|Basic\s+)?[^\s'\",;&]+)"
)
# AWS access key ids (AKIA.../ASIA...) are identifiers, but they name the account: hide them.
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")

# Environment variables whose values are secrets wherever they show up verbatim.
SECRET_VARIABLES: tuple[str, ...] = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN",
    "TFSHIP_GITLAB_TOKEN",
    "CI_JOB_TOKEN",
    "CI_REGISTRY_PASSWORD",
    "GOOGLE_APPLICATION_CREDENTIALS_JSON",
)


def redact_url(url: str) -> str:
    """The URL with its userinfo and credential query parameters replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if not parts.scheme or not parts.netloc:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, MASK if _SECRET_PARAMS.match(k) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secret_values(environ: Mapping[str, str] | None) -> Iterable[str]:
    environ = os.environ if environ is None else environ
    for name in SECRET_VARIABLES:
        value = environ.get(name)
        # Very short values would mask unrelated text; real credentials are long.
        if value and len(value) >= 8:
            yield value


def redact_text(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Free text (a log line, an error message) with every credential shape masked."""
    for value in _secret_values(environ):
        text = text.replace(value, MASK)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = _KV_SECRET.sub(lambda m: f"{m['key']}{m['quote']}{MASK}", text)
    return _AWS_KEY_ID.sub(MASK, text)


def redact(value: Any, environ: Mapping[str, str] | None = None) -> Any:
    """A JSON-like value (dicts, lists, strings) with every string passed through redact_text."""
    if isinstance(value, str):
        return redact_text(value, environ)
    if isinstance(value, Mapping):
        return {k: redact(v, environ) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v, environ) for v in value)
    return value
