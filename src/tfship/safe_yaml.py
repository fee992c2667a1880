"""The one YAML reader for everything tfship reads (pipeline.yaml, TFSHIP_*/--set values,
.trivyignore.yaml).

`yaml.safe_load` builds no Python objects, but it still expands aliases (a few hundred bytes of
`&a [*b, *b, ...]` grow into gigabytes), keeps the *last* of two equal keys (a second `gate:`
silently replaced the thresholds), accepts `on:`/`1:` as non-string keys, and reads input of
any size or nesting depth. This loader refuses each of those with a ConfigError (exit 3) that
names the file, line and column:

* anchors, aliases and merge keys (`&name`, `*name`, `<<:`): configuration is written out;
* a key repeated in one mapping, at any depth;
* a key that is not a string (`1:`, `on:`, `null:`): every mapping tfship reads maps names;
* explicit tags other than the plain YAML types (`!!binary`, `!!set`, `!!python/...`);
* more than `max_bytes` of input, nesting deeper than MAX_DEPTH, input that is not UTF-8.

It is the pure-Python SafeLoader on purpose: the C parser resolves aliases before Python sees
them, so they could not be refused. The inputs are small (bounded above), so speed is no issue.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tfship.errors import ConfigError

MAX_BYTES = 256 * 1024  # pipeline.yaml and allowlists are a few KiB; parsing 256 KiB takes ~2 s
MAX_VALUE_BYTES = 64 * 1024  # one TFSHIP_* variable or --set value
MAX_DEPTH = 32  # pipeline.yaml nests 4 deep; deep nesting would only exhaust the stack
_ALLOWED_TAGS = {
    f"tag:yaml.org,2002:{t}"
    for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")
}
_HINT = "write the value out in full, once, with string keys (see the file's line above)"


class YAMLRefused(ConfigError):
    """Input that parses as YAML but that tfship refuses (alias, duplicate key, ...)."""


class YAMLSyntaxError(ConfigError):
    """Input that is not YAML at all."""


def _where(name: str, mark: Any) -> str:
    return f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name


class _StrictLoader(yaml.SafeLoader):
    def __init__(self, stream: str, name: str) -> None:
        super().__init__(stream)
        self.tfship_name = name
        self._depth = 0

    def _refuse(self, what: str, mark: Any) -> YAMLRefused:
        return YAMLRefused(f"{_where(self.tfship_name, mark)}: {what}", hint=_HINT)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise self._refuse(
                f"alias *{event.anchor} is not allowed (anchors and aliases can expand a "
                "small file into gigabytes)",
                event.start_mark,
            )
        if getattr(event, "anchor", None) is not None:
            raise self._refuse(
                f"anchor &{event.anchor} is not allowed; write the value out where it is used",
                event.start_mark,
            )
        tag = getattr(event, "tag", None)
        if tag not in (None, "!") and tag not in _ALLOWED_TAGS:
            raise self._refuse(
                f"tag {tag} is not allowed; only plain values, lists and mappings",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._refuse(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self._refuse("merge key '<<' is not allowed", key_node.start_mark)
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                shown = "null" if key is None else repr(key)
                raise self._refuse(
                    f"key {shown} is a {type(key).__name__}, not a name; quote it "
                    f"(YAML reads on/off/yes/no/numbers as non-strings)",
                    key_node.start_mark,
                )
            if key in seen:
                raise self._refuse(
                    f"duplicate key '{key}' (first at line {seen[key].line + 1}); YAML would "
                    "silently keep only the last one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{name}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            hint="save the file as UTF-8",
        ) from None


def loads(text: str | bytes, name: str, *, max_bytes: int = MAX_BYTES) -> Any:
    """Parse one YAML document from `text`; `name` (a path, a variable) goes in every error."""
    data = text if isinstance(text, bytes) else _encode(text, name)
    if len(data) > max_bytes:
        raise ConfigError(
            f"{name} is larger than {max_bytes} bytes, the most tfship reads",
            hint="configuration is small: this is not the file you meant, or it is generated "
            "wrongly",
        )
    text = _decode(data, name)
    loader = None
    try:
        loader = _StrictLoader(text, name)  # the reader checks every character here
        return loader.get_single_data()
    except YAMLRefused:
        raise
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise YAMLSyntaxError(
            f"{name}:{line}: character #x{exc.character:04x} is not allowed in YAML",
            hint="remove the control character (a binary or truncated file?)",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = "; ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise YAMLSyntaxError(f"{_where(name, mark)}: not valid YAML: {detail}") from None
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(f"{name}: not valid YAML: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _encode(text: str, name: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # os.environ and argv keep undecodable bytes as lone surrogates.
        raise ConfigError(f"{name}: not UTF-8", hint="set the value as UTF-8 text") from None


def load_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_BYTES) -> Any:
    """Parse a YAML file (a regular file: never a FIFO or device that could block or not end)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p} is not a regular file", hint="point it at a YAML file")
    with p.open("rb") as fh:
        data = fh.read(max_bytes + 1)  # never more, whatever stat said
    return loads(data, str(p), max_bytes=max_bytes)


def parse_value(text: str, name: str) -> Any:
    """A TFSHIP_* variable or `--set` value as YAML: "3" -> 3, "[8, 8]" -> [8, 8], "x" -> "x".

    Text that is not YAML at all stays the plain string it is; YAML that tfship refuses
    (aliases, duplicate keys, ...) and oversized or non-UTF-8 values are errors.
    """
    data = _encode(text, name)
    try:
        return loads(data, name, max_bytes=MAX_VALUE_BYTES)
    except YAMLSyntaxError:
        return text
