"""User-facing errors.

Every error a user can cause (bad config, bad file, missing checkpoint) is raised as a
:class:`RecsysError` whose message is one line saying what is wrong, where, and what to do.
The CLI prints that line without a traceback and exits with status 2.
"""


class RecsysError(Exception):
    """An error caused by user input; its message is shown to the user as is."""


class ConfigError(RecsysError):
    """An invalid config value or combination (names the config key)."""


class DataError(RecsysError):
    """An unreadable or invalid input file (names the file, column and row where known)."""
