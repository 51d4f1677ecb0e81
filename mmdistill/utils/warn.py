"""Warnings about a run, where the user reads them: on the console once, and
in the run's log file."""
import logging
import warnings

from mmengine.logging import MMLogger


def warn(message: str, category: type = UserWarning,
         stacklevel: int = 2) -> None:
    """Issue ``message`` as a Python warning (the console, warning filters,
    ``pytest.warns``) and write it as a WARNING into the log files of
    mmengine's current logger (the work dir's log), which a console-only
    warning would miss and ``-W ignore`` would hide. The logger's console
    handler is left out, so the console shows it once.

    Args:
        message (str): What is wrong and how to fix it.
        category (type): The warning class. Defaults to ``UserWarning``.
        stacklevel (int): As :func:`warnings.warn`, counted from the caller
            of this function. Defaults to 2 (the caller's caller).
    """
    warnings.warn(message, category, stacklevel=stacklevel + 1)
    logger = MMLogger.get_current_instance()
    files = [h for h in logger.handlers
             if isinstance(h, logging.FileHandler)]
    if files and logger.isEnabledFor(logging.WARNING):
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 0,
                                   message, None, None)
        for handler in files:
            if record.levelno >= handler.level:
                handler.handle(record)
