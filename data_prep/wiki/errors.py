"""The one exception type the wiki pipeline raises for bad inputs (the CLI prints it without a traceback)."""


class InputError(Exception):
    """An input file is unusable; the message always names the file."""
