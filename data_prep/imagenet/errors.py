"""The one exception data prep raises for bad inputs or outputs; the CLI turns it into a clean message."""


class PrepError(Exception):
    """A problem with a named input or output file (or an archive member inside one)."""

    def __init__(self, where, problem):
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")

    def __reduce__(self):  # keep (where, problem) when the error crosses a process boundary
        return type(self), (self.where, self.problem)


class CorruptImageError(PrepError):
    """An image that cannot be decoded; fatal unless --skip_corrupt."""
