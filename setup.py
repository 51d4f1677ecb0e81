"""mmdistill: knowledge distillation for mmdet 3.x / mmseg 1.x / mmpretrain."""
import os
import os.path as osp
import shutil

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def readme() -> str:
    with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
        return f.read()


def version() -> str:
    scope = {}
    with open(osp.join(HERE, 'mmdistill', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def requirements(name: str) -> list:
    with open(osp.join(HERE, 'requirements', name)) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith(('#', '-'))]


def add_mim_extension() -> None:
    """Ship configs/ and tools/ in mmdistill/.mim so that `mim train
    mmdistill CONFIG` finds them (mmengine's `pkg::` config prefix knows
    only the OpenMMLab packages, not mmdistill). An editable install links
    them, a wheel copies them."""
    mim = osp.join(HERE, 'mmdistill', '.mim')
    os.makedirs(mim, exist_ok=True)
    editable = 'develop' in os.sys.argv or 'editable_wheel' in os.sys.argv
    for name in ('configs', 'tools', 'model-index.yml'):
        src, dst = osp.join(HERE, name), osp.join(mim, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if editable:
            os.symlink(osp.relpath(src, mim), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst)
        else:
            shutil.copyfile(src, dst)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmdistill',
        version=version(),
        description='Knowledge distillation for OpenMMLab detectors, '
        'segmentors and classifiers',
        long_description=readme(),
        long_description_content_type='text/markdown',
        license='Apache License 2.0',
        packages=find_packages(exclude=('tests', 'tests.*', 'configs',
                                        'tools')),
        include_package_data=True,
        package_data={'mmdistill': ['.mim/**/*', '.mim/*']},
        python_requires='>=3.8',
        install_requires=requirements('runtime.txt') +
        requirements('mminstall.txt'),
        extras_require=dict(
            cls=requirements('cls.txt'),
            # the demo's classification task uses mmpretrain
            demo=requirements('demo.txt') + requirements('cls.txt'),
            tests=requirements('tests.txt') + requirements('cls.txt') +
            requirements('demo.txt'),
            all=requirements('cls.txt') + requirements('demo.txt')),
        zip_safe=False)
