"""Errors in what a user gave the package (a file, a record, a setting), as opposed to bugs.

The ``lightning-dpo`` command prints a :class:`UserError` as one line naming what to fix (the file, the
line or record, the setting), with no traceback, and exits with status 1; any other exception keeps its
traceback. Subclasses keep a standard base as well (``ValueError``, ``FileNotFoundError``), so code that
catches those still works.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the inputs that the message alone lets a user fix."""
