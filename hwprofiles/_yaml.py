"""Reading YAML a user wrote (configs, hardware profiles, ``--set`` values) without trusting it.

The text must be UTF-8 and at most ``MAX_YAML_BYTES`` long; aliases (``*name``) are refused
before anything is built from them, so an alias bomb ("billion laughs") cannot grow memory;
and error messages name the source, the line and the rule, never the text itself (a file
given by mistake, such as ``/etc/shadow``, must not be echoed to a terminal or a log).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ECHO_LIMIT", "MAX_YAML_BYTES", "UserYamlError", "parse_user_yaml", "read_user_yaml",
    "short_repr",
]

#: The largest YAML file read: configs and profiles are a few KiB; this bounds what a path
#: such as /dev/zero or a large log given by mistake can make us read.
MAX_YAML_BYTES = 1 << 20
#: The most characters of a user's value a message echoes.
ECHO_LIMIT = 80


class UserYamlError(ValueError):
    """YAML that cannot be read; the message names its source, never its content."""


class _AliasError(yaml.YAMLError):
    def __init__(self, anchor: str, mark: yaml.Mark | None) -> None:
        super().__init__(anchor)
        self.anchor, self.mark = anchor, mark


class _NoAliasLoader(yaml.SafeLoader):
    """A SafeLoader that stops at the first alias, before composing what it refers to."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasError(str(event.anchor), event.start_mark)
        return super().compose_node(parent, index)


def short_repr(value: object, limit: int = ECHO_LIMIT) -> str:
    """Returns ``repr(value)`` cut to ``limit`` characters (``...`` marks a cut)."""
    if isinstance(value, (dict, list, tuple, set)) and len(value) >= 64:
        return f"<a {type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_user_yaml(text: str, source: str) -> Any:
    """Returns the value of the YAML document ``text`` (``None`` when it holds none).

    Raises:
        UserYamlError: the text is not YAML, uses an alias or is nested too deeply; the
            message starts with ``source`` and gives the line, never the text.
    """
    loader = None
    try:
        loader = _NoAliasLoader(text)  # checks the characters at once
        return loader.get_single_data()
    except _AliasError as exc:
        where = _where(exc.mark)
        raise UserYamlError(f"{source}:{where} YAML aliases (*{exc.anchor[:40]}) are not "
                            "supported; write the value out in full") from None
    except yaml.MarkedYAMLError as exc:
        problem = str(exc.problem or exc.context or "not valid YAML")
        if problem.startswith("could not determine a constructor"):
            problem = "a YAML tag (!...) that plain YAML does not define"
        raise UserYamlError(f"{source}:{_where(exc.problem_mark)} not valid YAML: "
                            f"{problem[:ECHO_LIMIT]}") from None
    except yaml.reader.ReaderError as exc:
        raise UserYamlError(f"{source}: not valid YAML: character #x{exc.character:04x} at "
                            f"position {exc.position} is not allowed in YAML") from None
    except yaml.YAMLError as exc:
        raise UserYamlError(f"{source}: not valid YAML ({type(exc).__name__})") from None
    except RecursionError:
        raise UserYamlError(f"{source}: not valid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_user_yaml(path: Path, what: str = "YAML file") -> Any:
    """Returns the value of the YAML file ``path`` (``None`` when it holds no document).

    Raises:
        UserYamlError: the file cannot be read, is larger than ``MAX_YAML_BYTES``, is not
            UTF-8 text or not valid YAML; the message names ``path`` and ``what`` it should
            be, never its content.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise UserYamlError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if len(data) > MAX_YAML_BYTES:
        raise UserYamlError(f"{path}: larger than {MAX_YAML_BYTES >> 20} MiB; is it a {what}?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserYamlError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                            f"{exc.start}); is it a {what}? Save it as UTF-8.") from None
    return parse_user_yaml(text, str(path))


def _where(mark: yaml.Mark | None) -> str:
    return f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
