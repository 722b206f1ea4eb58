"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class EmbedlabError(Exception):
    """A problem with the user's input (data, config, model path), with a message saying how to fix it."""
