"""Every shipped config builds at full size (its real student and teacher,
random teacher weights written to a temporary checkpoint) and trains one
iteration on a small hand-made batch (issue 4)."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS, DefaultScope

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# configs/_base_/ holds fragments that configs inherit, not configs
CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(
        osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if not osp.relpath(p, ROOT).startswith(osp.join('configs', '_base_')))
# (h, w) of the one training batch: small, as the full-size models are
# costly on a CPU (PSPNet R101-d8 at 128 x 128 is ~130 GFLOPs a forward)
SIZE = dict(det=(96, 96), seg=(64, 64), cls=(64, 64))
# mmpretrain's models import torchvision, which not every environment has a
# working build of (a CUDA-only wheel fails on a CPU torch)
MMPRETRAIN_MISSING = ('mmpretrain.models cannot be imported (torchvision is '
                      'missing or unusable here)')


def build_distiller(cfg: Config):
    """Build ``cfg.model`` the way the Runner does (default scope of the
    student's config, top-level data preprocessor passed in)."""
    model_cfg = cfg.model.copy()
    model_cfg.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(model_cfg)


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_full_size_and_trains_one_iteration(
        config, teacher_checkpoint, make_batch, distill_keys):
    cfg = Config.fromfile(osp.join(ROOT, config))
    kind = {'mmdet': 'det', 'mmseg': 'seg',
            'mmpretrain': 'cls'}[cfg.default_scope]
    if kind == 'cls':
        pytest.importorskip('mmpretrain.models', reason=MMPRETRAIN_MISSING)
    cfg.model.teacher.checkpoint = teacher_checkpoint(cfg.model.teacher)
    if kind == 'seg':
        # the segmentation preprocessor pads every image to the crop size
        cfg.model.student.data_preprocessor.size = SIZE[kind]
        cfg.data_preprocessor.size = SIZE[kind]
    torch.manual_seed(0)
    model = build_distiller(cfg)
    if model.init_student_from_teacher:
        # FGD/MGD inheriting: at full size every teacher tensor of these
        # modules must fit the student
        counts = model.inherit_from_teacher(model.init_student_from_teacher)
        assert counts['copied'] > 0 and counts['skipped'] == 0, counts
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = OptimWrapper(torch.optim.SGD(params, lr=1e-4))
    learnable = {
        name: [p.detach().clone() for p in module.parameters()]
        for name, module in [*model.connectors.items(),
                             *model.distill_losses.items()]
    }
    log_vars = model.train_step(make_batch(kind, SIZE[kind]), optim)

    keys = distill_keys(cfg.model.distill)
    missing = [k for k in keys if k not in log_vars]
    assert not missing, f'{missing} not in {sorted(log_vars)}'
    for key in keys:
        value = torch.as_tensor(log_vars[key])
        assert torch.isfinite(value) and value >= 0, (key, value)
    assert torch.isfinite(torch.as_tensor(log_vars['loss']))
    # the step reached every connector and learnable loss (FGD's GcBlocks)
    for name, before in learnable.items():
        if not before:
            continue
        module = (model.connectors[name] if name in model.connectors else
                  model.distill_losses[name])
        after = list(module.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before)), \
            f'{name}: no parameter was updated'
