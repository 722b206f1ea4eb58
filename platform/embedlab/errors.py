"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2; and the
one-line warnings for what trains but may not be what the user meant."""

import sys


class EmbedlabError(Exception):
    """A problem with the user's input (data, config, model path), with a message saying how to fix it."""


def warn(message: str) -> None:
    print(f"embedlab: warning: {message}", file=sys.stderr)


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """`warn`, once per process: a check that runs for the sweep and again for each trial says it once."""
    if message not in _warned:
        _warned.add(message)
        warn(message)
