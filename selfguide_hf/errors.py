"""Every error a user can meet, by who has to act, and the one table of exit codes.

Each error class of the package derives from one of three bases here, so both
fronts (`selfguide` and `recipes/sft.py`) turn the same failure into the same
line and the same exit code (`exit_code`). docs/ERRORS.md lists the codes.
"""

from __future__ import annotations

__all__ = ["EXIT_CODES", "ConfigError", "PublishError", "StageError", "UserError", "exit_code", "one_line"]


class UserError(ValueError):
    """What the user gave cannot run: a flag, a file, a model, too little data. Exit 2."""


class ConfigError(UserError):
    """A setting, flag or config file that cannot run; the message names the key and the value."""


class StageError(RuntimeError):
    """A stage met something it cannot go on from (every input filtered, training diverged). Exit 1."""


class PublishError(RuntimeError):
    """The Hub refused a push, or a push must not happen. Exit 3."""


# Checked in order: the first base an error derives from decides its code.
EXIT_CODES: tuple[tuple[type[BaseException], int, str], ...] = (
    (UserError, 2, "what you gave cannot run (flag, file, model, too few pairs)"),
    (PublishError, 3, "the Hub refused a push"),
    (StageError, 1, "a stage could not go on"),
    # Raised below the package's own checks (a library, the file system): the value or file at fault.
    (ValueError, 2, "a value or file the libraries refused"),
    (OSError, 2, "a file or folder that cannot be read or written"),
    (RuntimeError, 1, "a stage failed in a library"),
)


def exit_code(exc: BaseException) -> int | None:
    """The front's exit code for ``exc``; None for anything else (a bug: let its traceback show)."""
    for base, code, _ in EXIT_CODES:
        if isinstance(exc, base):
            return code
    return None


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: a library's error as one line of ours."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
