"""Make a CUDA-built torchvision importable with a CPU-only torch.

torchvision registers fake (meta) kernels for its C++ ops at import time.
When its C++ extension cannot load (a wheel built against CUDA torch, used
with a CPU torch), every registration is skipped through
``torchvision.extension._has_ops()`` except ``torchvision::nms`` and
``torchvision::qnms`` in 0.28, whose ``torch.library.register_fake``
decorators then fail with "operator torchvision::nms does not exist" and
break ``import torchvision`` (and with it ``import mmpretrain``).

This script adds the same ``_has_ops()`` guard to those two decorators in
the installed ``torchvision/_meta_registrations.py``. It changes nothing when
the guard is already there, and refuses to touch a file that does not have
the expected lines. torchvision's Python parts (transforms, box helpers in
Python) then work; its compiled ops (``torchvision.ops.nms``) stay
unavailable, which mmpretrain's classifiers do not use.

Usage: python tools/misc/guard_torchvision_fake_ops.py
"""
import importlib.util
import os.path as osp
import re
import sys

GUARD = ('@(torch.library.register_fake("torchvision::{op}") '
         'if torchvision.extension._has_ops() else (lambda fn: fn))')


def main() -> int:
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        print('torchvision is not installed', file=sys.stderr)
        return 1
    path = osp.join(list(spec.submodule_search_locations)[0],
                    '_meta_registrations.py')
    with open(path) as f:
        text = f.read()
    changed = text
    for op in ('nms', 'qnms'):
        plain = re.compile(
            r'^@torch\.library\.register_fake\("torchvision::' + op +
            r'"\)$', re.M)
        changed = plain.sub(GUARD.format(op=op), changed)
    if changed == text:
        if all(GUARD.format(op=op) in text for op in ('nms', 'qnms')):
            print(f'{path}: already guarded')
            return 0
        print(f'{path}: the expected register_fake lines are not there; '
              'not changing it', file=sys.stderr)
        return 1
    with open(path, 'w') as f:
        f.write(changed)
    print(f'{path}: guarded the nms/qnms fake registrations')
    return 0


if __name__ == '__main__':
    sys.exit(main())
