"""jaxconv's two kinds of failure, so that the command line answers each in one place.

- ``UserError``: what the user asked for or gave cannot be used — a config value, a model name,
  a weights file that is not what it claims, a workdir another run holds. The message says which
  value, why, and what would be right; `jaxconv` prints it in one line and exits with status 2.
- ``RunFailure``: a run that was going could not go on — a full disk, a loss that diverged. One
  line, exit status 1, and what was saved is said.

Each module's own error classes derive from one of these (and from the built-in exception a
Python caller would expect: ValueError, FileNotFoundError, ImportError, ...).
"""


class UserError(Exception):
    """A mistake in what the user asked for or gave; reported in one line with exit status 2."""


class RunFailure(Exception):
    """A run could not go on; reported in one line with exit status 1."""
