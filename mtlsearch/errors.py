"""One exception type for every kind of bad input the user can give us."""

from __future__ import annotations

from typing import Any, Iterable


class ConfigError(ValueError):
    """Bad user input (a YAML file, a CLI flag, a trial config, a data folder).

    The message names the offending file and/or field and lists what is allowed.
    Command-line entry points turn it into one line on stderr and exit code 2.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        prefix = ""
        if source:
            prefix += f"{source}: "
        if field:
            prefix += f"{field}: "
        super().__init__(prefix + message)
        self.message = message
        self.source = source
        self.field = field

    def with_source(self, source: str | None) -> "ConfigError":
        """The same error, attributed to a file (kept if it already names one)."""
        if self.source or not source:
            return self
        return ConfigError(self.message, source=source, field=self.field)


def first_line(err: BaseException, *, typed: bool = True, limit: int | None = 300, text: str | None = None) -> str:
    """An exception in one line for a message: ``Type: first line of its text`` (at most ``limit``
    characters of text), or only the text (``typed=False``); the type's name where it has no text.
    ``text``: the exception's text where it is not ``str(err)`` (a wrapped error's message)."""
    text = (str(err) if text is None else text).strip()
    if not text:
        return type(err).__name__
    line = text.splitlines()[0][:limit]
    return f"{type(err).__name__}: {line}" if typed else line


def choices(values: Iterable[Any]) -> str:
    """Format a list of valid choices for an error message."""
    return ", ".join(repr(v) for v in sorted(values))
