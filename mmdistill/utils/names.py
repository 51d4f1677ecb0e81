"""Names given in a config that do not exist: the closest existing ones, and
an error that prints its message as written."""
import difflib
from typing import Iterable, List


def closest(name: str, names: Iterable[str], n: int = 3) -> List[str]:
    """The existing names closest to ``name`` (case does not count, so
    ``'L2loss'`` finds ``'L2Loss'``), best first.

    Args:
        name (str): The name as written.
        names (Iterable[str]): The names that exist.
        n (int): At most this many. Defaults to 3.

    Returns:
        list[str]: The closest names, possibly none.
    """
    by_lower = {}
    for existing in names:
        by_lower.setdefault(str(existing).lower(), str(existing))
    found = difflib.get_close_matches(str(name).lower(), list(by_lower), n=n)
    return [by_lower[key] for key in found]


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"`` for the closest existing name, or ``''``.

    Args:
        name (str): The name as written.
        names (Iterable[str]): The names that exist.

    Returns:
        str: The hint, with a leading space, or an empty string.
    """
    found = closest(name, names, n=1)
    return f' (did you mean {found[0]!r}?)' if found else ''


class UnknownNameError(KeyError):
    """A name that does not exist (a module path, a registered type);
    a ``KeyError`` that prints its message unquoted, as written."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ''
