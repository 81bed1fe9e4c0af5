"""User errors: bad settings, bad input, missing files. The command line prints these as one line; anything else is a
bug and keeps its traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Something the user can fix; the message says what and how."""


class InputError(UserError):
    """An input (image, video, text, option value) the library cannot take."""
