"""The one exception type a user sees: the CLI prints its message and exits non-zero."""


class SrcoreError(Exception):
    """A problem the user can fix. The message names the file or key and the remedy."""
