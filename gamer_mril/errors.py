"""Errors raised on bad input. Messages always name the session and the file."""


class InputError(ValueError):
    """Bad input data: the message names the session, the file and what is wrong."""
