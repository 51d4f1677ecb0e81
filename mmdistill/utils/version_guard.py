"""Supported versions of the packages mmdistill builds on, checked at import.

Read from the installed distributions' metadata (``importlib.metadata``), so
the check imports none of the packages it checks. ``import mmdistill``
stops with :class:`IncompatibleVersionError` naming the package, the
installed and the supported versions, as mmdet does for mmcv. mmpretrain is
checked where mmdistill uses it (:func:`check_package`), not at import, so a
detection or segmentation user's environment is never judged by it.

The ranges are the ones of ``requirements/``: keep them equal (a test does).
"""
import re
from typing import Dict, Optional, Tuple

#: distribution -> (import name, minimum (inclusive), maximum (exclusive))
SUPPORTED: Dict[str, Tuple[str, str, str]] = {
    'torch': ('torch', '2.0.0', '3.0.0'),
    'mmengine': ('mmengine', '0.10.0', '1.0.0'),
    'mmcv': ('mmcv', '2.0.0', '2.2.0'),
    'mmdet': ('mmdet', '3.0.0', '3.4.0'),
    'mmsegmentation': ('mmseg', '1.0.0', '1.3.0'),
    'mmpretrain': ('mmpretrain', '1.0.0', '1.3.0'),
}
#: checked by ``import mmdistill`` (when installed; mmengine and mmcv must be)
CHECKED_AT_IMPORT = ('torch', 'mmengine', 'mmcv', 'mmdet', 'mmsegmentation')
REQUIRED = ('torch', 'mmengine', 'mmcv')
#: where mmcv has other distribution names (mmcv-full is mmcv 1.x)
ALIASES = {'mmcv': ('mmcv', 'mmcv-lite')}


class IncompatibleVersionError(ImportError):
    """An installed package is outside the range mmdistill supports."""


def parse_version(text: str) -> Tuple[int, ...]:
    """``'2.1.0rc1+cu121'`` -> ``(2, 1, 0)``: numeric release parts only."""
    parts = []
    for piece in re.split(r'[.+-]', text):
        number = re.match(r'\d+', piece)
        if not number:
            break
        parts.append(int(number.group()))
        if number.group() != piece:  # '0rc1': a pre-release of 0
            break
    return tuple(parts) + (0, ) * (3 - len(parts))


def installed_version(dist: str) -> Optional[str]:
    """The installed version of a distribution, or None."""
    from importlib import metadata
    for name in ALIASES.get(dist, (dist, )):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_package(dist: str, version: Optional[str] = None,
                  required: bool = False) -> Optional[str]:
    """Check one package against :data:`SUPPORTED`.

    Args:
        dist (str): Distribution name (``'mmsegmentation'``).
        version (str, optional): The version to check; defaults to the
            installed one.
        required (bool): Whether a missing package is an error.

    Returns:
        str | None: The version checked (None when not installed).

    Raises:
        IncompatibleVersionError: Outside the supported range, or missing
            when required.
    """
    module, low, high = SUPPORTED[dist]
    version = version or installed_version(dist)
    if version is None:
        if required:
            raise IncompatibleVersionError(
                f'mmdistill needs {dist} (>={low}, <{high}), which is not '
                f'installed: pip install "{dist}>={low},<{high}"' +
                (' (mmcv with its compiled ops: see the README, "Install")'
                 if dist == 'mmcv' else '') + '.')
        return None
    if not parse_version(low) <= parse_version(version) < parse_version(high):
        raise IncompatibleVersionError(
            f'{dist}=={version} is installed, but mmdistill supports '
            f'{dist}>={low},<{high}. Install a supported version (pip '
            f'install "{dist}>={low},<{high}") or a mmdistill release that '
            f'supports {dist} {version}.')
    return version


def check_versions() -> Dict[str, Optional[str]]:
    """Check every package of :data:`CHECKED_AT_IMPORT`; returns their
    versions (None for those not installed)."""
    return {dist: check_package(dist, required=dist in REQUIRED)
            for dist in CHECKED_AT_IMPORT}


#: registry scope -> distribution
SCOPE_PACKAGES = dict(mmdet='mmdet', mmseg='mmsegmentation',
                      mmpretrain='mmpretrain')


def check_scope(scope: Optional[str]) -> None:
    """Check the package behind a config's ``default_scope`` when mmdistill
    is about to build a model with it (how mmpretrain gets checked)."""
    dist = SCOPE_PACKAGES.get(scope or '')
    if dist is not None:
        check_package(dist, required=True)
