"""The one exception type for input a user can act on.

Every layer raises `InputError` (or a subclass) for a bad file, token, field or argument; the CLI
prints its message on one line and exits with code 2. Anything else is an internal error and keeps
its traceback.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input: the message names the file, token or field, what was expected and what was found."""


class FileFormatError(InputError):
    """A file exists but its content is not what its format requires."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
