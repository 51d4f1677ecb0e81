"""Warnings about a run, where the user reads them: in the run's log."""
import logging
import warnings

from mmengine.logging import print_log


def warn(message: str, category: type = UserWarning,
         stacklevel: int = 2) -> None:
    """Log ``message`` as a WARNING through mmengine's current logger (so it
    is in the work dir's log file, not only on stderr, and survives
    ``-W ignore``) and issue it as a Python warning (for warning filters and
    ``pytest.warns``).

    Args:
        message (str): What is wrong and how to fix it.
        category (type): The warning class. Defaults to ``UserWarning``.
        stacklevel (int): As :func:`warnings.warn`, counted from the caller
            of this function. Defaults to 2 (the caller's caller).
    """
    print_log(message, logger='current', level=logging.WARNING)
    warnings.warn(message, category, stacklevel=stacklevel + 1)
