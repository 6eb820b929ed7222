"""Data prep's one error type (data_prep/errors.py), under the name the wiki stages import: InputError(message),
where the message names the file; the CLI prints it without a traceback."""
from data_prep.errors import PrepError as InputError  # noqa: F401
