"""Loading the configs that name a teacher."""
import os.path as osp

from mmengine.config import Config


def load_config(path: str) -> Config:
    """Load a config from a local file or a scoped ``mmdet::``/``mmseg::``/
    ``mmpretrain::`` path shipped inside those packages."""
    if '::' in path:
        from mmengine.hub import get_config
        try:
            return get_config(path)
        except Exception as err:
            scope = path.split('::', 1)[0]
            raise FileNotFoundError(
                f'Cannot load the config {path!r}: {err}. Check that the '
                f'package of scope {scope!r} is installed and that the file '
                'exists in its configs/ folder (3.x file names for mmdet, '
                '1.x for mmseg).') from err
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'Config file {path!r} does not exist (relative paths are taken '
            f'from the current directory {osp.abspath(".")!r}).')
    return Config.fromfile(path)
