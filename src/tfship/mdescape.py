"""Values from data (class names, metric names, file names, reasons) made inert in Markdown.

report.md becomes a merge-request comment rendered by GitLab or GitHub, and a class name is
whatever a folder or CSV column was called. Without escaping, `<img src=x onerror=...>` is
HTML, `[x](javascript:...)` a link, `@all` pings everyone, `|` splits a table cell and a
newline starts a new block. `text()` renders a value as plain inline text on one line;
`code()` as an inline code span. Both redact credentials first (tfship.redact) and cap the
length, so a hostile or huge value cannot hide the verdict.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from tfship.redact import redact_text

ELLIPSIS = "…"
# A zero-width space after '@' (rendered as nothing) so GitLab/GitHub see no mention: they
# match mentions on the rendered text, after entities and backslash escapes are decoded, and
# only where no word character precedes the '@' (so `pipeline.yaml@3f2a9c1` stays as it is).
_MENTION = re.compile(r"(?<!\w)@")
_NO_MENTION = "@&#8203;"
# Characters with a meaning in GitLab/GitHub Markdown inside a line: emphasis, code, links and
# images (no '[', no link: '(' and '!' need not be escaped), tables, math, strikethrough, and
# the backslash itself.
_MARKUP = re.compile(r"([\\`*\[\]|$~])")
# '_' emphasises only at a word boundary (GFM): `p95_latency_ms` stays as it is.
_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# '<' opens HTML, a comment or an autolink only when a letter, '/', '!' or '?' follows:
# "<= 0.5" stays readable.
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
# Bidirectional overrides and other invisible format characters can make the rendered text
# say something else than the bytes (e.g. reverse a number).
_INVISIBLE = {"Cc", "Cf", "Zl", "Zp"}


def _one_line(value: Any, limit: int) -> str:
    s = redact_text(str(value))
    s = "".join(" " if unicodedata.category(c) in _INVISIBLE or c.isspace() else c for c in s)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + ELLIPSIS


def text(value: Any, limit: int = 120) -> str:
    """`value` as literal inline Markdown text: one line, at most `limit` characters, no HTML,
    links, images, mentions, emphasis or table breaks."""
    s = _one_line(value, limit).replace("&", "&amp;")
    s = _TAG_OPEN.sub("&lt;", s)
    s = _MARKUP.sub(r"\\\1", s)
    s = _UNDERSCORE.sub(r"\\_", s)
    return _MENTION.sub(_NO_MENTION, s)


def code(value: Any, limit: int = 80) -> str:
    """`value` as an inline code span (nothing inside is interpreted), on one line."""
    s = _one_line(value, limit).replace("|", "\\|")  # GFM splits table cells even in code
    fence = "`" * (max((len(m) for m in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"
