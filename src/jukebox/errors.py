"""Exceptions that the command line turns into one-line messages."""

from __future__ import annotations


class JukeboxError(Exception):
    """A failure the user can act on; the CLI prints ``error: <message>`` and exits with 1."""

    exit_code = 1


class UsageError(JukeboxError):
    """Bad arguments or input given by the user; the CLI exits with 2."""

    exit_code = 2
