"""tools/analysis/visualize_features.py: the pictures of every pair, the TaT
map, from a runner checkpoint, and no overwriting."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch

from tools_support import load_script

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'analysis', 'visualize_features.py')
DEMO = osp.join(ROOT, 'demo', 'configs', 'seg')

TAT_CONFIG = f"""
_base_ = ['{DEMO}/pspnet_r18-w8_student_synth.py']
model = dict(
    _delete_=True,
    type='mmdistill.SingleTeacherDistiller',
    student={{{{_base_.model}}}},
    teacher=dict(config='{DEMO}/pspnet_r50-w16_teacher_synth.py',
                 checkpoint='none.pth'),
    distill=dict(
        tat=dict(student='backbone.layer4', teacher='backbone.layer4',
                 connector=dict(type='TaTConnector', in_channels=64,
                                out_channels=512, mode='global'),
                 loss=dict(type='MSELoss'))))
"""


def load_tool():
    return load_script(TOOL, 'visualize_features')


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / 'img.png')
    rng = np.random.default_rng(0)
    mmcv.imwrite(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), path)
    return path


def test_every_panel_and_the_tat_map(tmp_path, image):
    config = tmp_path / 'tat.py'
    config.write_text(TAT_CONFIG)
    out = str(tmp_path / 'vis')
    tool = load_tool()
    written = tool.main([str(config), image, '--random-teacher', '--out-dir',
                         out, '--query', '10', '50'])
    names = sorted(osp.basename(p) for p in written)
    assert names == ['tat_connector.png', 'tat_student.png',
                     'tat_tat_map.png', 'tat_teacher.png']
    for path in written:
        assert mmcv.imread(path).shape == (64, 64, 3)
    # a second run keeps the first pictures
    again = tool.main([str(config), image, '--random-teacher', '--out-dir',
                       out, '--pairs', 'tat'])
    assert all(p.endswith('-1.png') for p in again)
    with pytest.raises(KeyError, match="No distillation pair \\['x'\\]"):
        tool.main([str(config), image, '--random-teacher', '--out-dir', out,
                   '--pairs', 'x'])


def test_loads_a_runner_checkpoint(tmp_path, image):
    """The student and connector weights of a runner checkpoint are used:
    a checkpoint with other connector weights gives another picture."""
    config = tmp_path / 'tat.py'
    config.write_text(TAT_CONFIG)
    tool = load_tool()
    first = tool.main([str(config), image, '--random-teacher', '--out-dir',
                       str(tmp_path / 'a'), '--pairs', 'tat'])
    # the distiller as the tool builds it, with the TaT value conv changed
    from mmengine.config import Config
    cfg = Config.fromfile(str(config))
    args = tool.parse_args([str(config), image, '--random-teacher'])
    distiller = tool.build_distiller(cfg, args, str(tmp_path))
    state = distiller.state_dict()
    key = [k for k in state if k.startswith('connectors.tat.value')][0]
    state[key] = torch.randn_like(state[key]) * 5
    ckpt = str(tmp_path / 'iter_1.pth')
    torch.save(dict(state_dict=state, meta=dict()), ckpt)
    second = tool.main([str(config), image, '--random-teacher', '--out-dir',
                        str(tmp_path / 'b'), '--pairs', 'tat',
                        '--checkpoint', ckpt])
    pick = {osp.basename(p): p for p in first}, {
        osp.basename(p): p for p in second}
    same = mmcv.imread(pick[0]['tat_student.png']), mmcv.imread(
        pick[1]['tat_student.png'])
    # the student itself is the same: every build here starts from the
    # seed random_checkpoint sets for the random teacher
    assert np.array_equal(*same)
    changed = mmcv.imread(pick[0]['tat_connector.png']), mmcv.imread(
        pick[1]['tat_connector.png'])
    assert not np.array_equal(*changed)
    with pytest.raises(KeyError, match='does not fit this distiller'):
        bad = str(tmp_path / 'bad.pth')
        torch.save(dict(state_dict={'nope': torch.zeros(1)}), bad)
        tool.main([str(config), image, '--random-teacher', '--checkpoint',
                   bad, '--out-dir', str(tmp_path / 'c')])


@pytest.mark.parametrize('config', [
    'demo/configs/det/mlp_fpn_retinanet_r50-r18_synth.py',
    'demo/configs/seg/mlp_backbone_pspnet_r50-r18_synth.py'
])
def test_pictures_show_the_image_in_its_colours(config, tmp_path):
    """A pure red image is drawn red, whether the model reads BGR (mmdet's
    RetinaNet here) or RGB (mmseg's PSPNet)."""
    from mmengine.config import Config
    path = str(tmp_path / 'red.png')
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 2] = 255  # BGR on disk
    mmcv.imwrite(red, path)
    tool = load_tool()
    cfg = Config.fromfile(osp.join(ROOT, config))
    args = tool.parse_args([config, path, '--random-teacher'])
    distiller = tool.build_distiller(cfg, args, str(tmp_path))
    data = distiller.data_preprocessor(tool.load_batch(cfg, path), False)
    image = tool.network_image(distiller.data_preprocessor,
                               data['inputs'][0])
    # the image area (mmdet pads the batch with zeros)
    assert (image[:48, :48] == [255, 0, 0]).all()


def test_vit_pairs_draw_patch_maps_and_class_attention(tmp_path, image):
    """The DeiT-small -> DeiT-tiny config (mmpretrain): token tensors are
    drawn over the 14 x 14 patch grid, and the attention pair's class-token
    attention of both models."""
    config = osp.join(ROOT, 'configs', 'vit_attention',
                      'vit-attention_last-block_deit-small_deit-tiny_300e_'
                      'in1k.py')
    written = load_tool().main([config, image, '--random-teacher',
                                '--out-dir', str(tmp_path / 'vis')])
    names = sorted(osp.basename(p) for p in written)
    assert 'class_attention_student_class_attention.png' in names
    assert 'class_attention_teacher_class_attention.png' in names
    assert 'class_attention_student.png' in names  # qkv tokens as a map
    for path in written:
        assert mmcv.imread(path).shape == (224, 224, 3)
