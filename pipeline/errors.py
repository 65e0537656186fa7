"""One exception type for bad input, so every CLI turns it into a one-line error and exit 2."""


class InputError(Exception):
    """Bad or missing input. The message names the file (and position) and what is wrong."""


EXIT_INPUT_ERROR = 2
