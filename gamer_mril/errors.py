"""Errors raised on bad input. Messages always name the session and the file.

Errors of ANTs (and of ITK inside it) are named too: :func:`ants_error` puts the
project's own line, naming the session, the step and its files, above ANTs' message.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input data: the message names the session, the file and what is wrong."""


class ConfigError(ValueError):
    """A bad configuration: the message names the config file(s), the key and what is
    allowed there."""


class RegistrationError(RuntimeError):
    """ANTs (or ITK) failed: the message names the session, the step and its files, and
    keeps ANTs' own message below."""


def from_ants(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) was raised inside ANTsPy or
    carries an ITK exception's text."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if "itk::" in str(err) or "ITK ERROR" in str(err):
            return True
        tb = err.__traceback__
        while tb is not None:
            name = str(tb.tb_frame.f_globals.get("__name__", ""))
            if name == "ants" or name.startswith("ants."):
                return True
            tb = tb.tb_next
        err = err.__cause__ or err.__context__
    return False


def ants_error(err: BaseException, what: str, session: str, files) -> RegistrationError:
    """A :class:`RegistrationError` for ANTs' ``err`` in ``what`` (the step) of ``session``:
    the project's line first (session, step, ``files``: {role: path}), then ANTs' message,
    indented."""
    named = "; ".join(f"{role} {path}" for role, path in dict(files).items())
    original = "\n".join(f"    {line}" for line in
                         f"{type(err).__name__}: {err}".strip().splitlines())
    return RegistrationError(
        f"{session}: {what} failed inside ANTs ({named}). Check that these images show the "
        f"same head and that their headers' orientation (qform/sform) is right; the "
        f"sidecars of the session's earlier steps show what came before. ANTs said:\n"
        f"{original}")
