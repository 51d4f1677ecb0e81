"""Draw what each distillation pair compares, on one image: the student's
tapped feature, the student after its connector, the teacher's feature, and
for a ``TaTConnector`` the TaT map (where one student position attends).

Feature maps are reduced over channels (mean) and overlaid on the image by
mmengine's ``Visualizer.draw_featmap``. Files go to ``--out-dir`` as
``<pair>_student.png``, ``<pair>_connector.png``, ``<pair>_teacher.png`` and
``<pair>_tat_map.png``; an existing file is never overwritten (a ``-1``
suffix is added).

Example::

    python tools/analysis/visualize_features.py \\
        configs/tat/tat_backbone_pspnet-r101_pspnet-r18_80k_cityscapes-512x1024.py \\
        demo.png --checkpoint work_dirs/tat/iter_80000.pth \\
        --out-dir vis --query 32 64

``--checkpoint`` is a runner checkpoint of the distiller (student and
connectors; without it they are freshly initialised); ``--random-teacher``
gives the teacher random weights instead of loading its checkpoint.
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
from typing import Dict, List

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, DefaultScope


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw the features each distillation pair compares.')
    parser.add_argument('config', help='distillation config file')
    parser.add_argument('image', help='image file')
    parser.add_argument('--checkpoint', default=None,
                        help='runner checkpoint of the distiller')
    parser.add_argument('--random-teacher', action='store_true',
                        help='random teacher weights (no download)')
    parser.add_argument('--out-dir', default='feature_vis',
                        help='where the PNG files go')
    parser.add_argument('--pairs', nargs='+', default=None,
                        help='only these pairs (default: all)')
    parser.add_argument('--query', type=int, nargs=2, default=None,
                        metavar=('Y', 'X'),
                        help='TaT map query, in pixels of the network input '
                        '(default: the centre)')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    return parser.parse_args(argv)


def build_distiller(cfg: Config, args, workdir: str):
    from mmdistill.testing import use_random_teacher
    from mmdistill.utils.checkpoint import read_checkpoint
    from mmdistill.utils.config import model_config
    if cfg.model.get('type') != 'mmdistill.SingleTeacherDistiller':
        raise ValueError(
            f'{args.config} is not a distillation config (model.type is '
            f'{cfg.model.get("type")!r}).')
    if args.random_teacher:
        use_random_teacher(cfg, osp.join(workdir, 'teacher.pth'))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        # as the Runner builds it (mmpretrain: the config-level
        # data_preprocessor)
        distiller = MODELS.build(model_config(cfg))
    if args.checkpoint:
        state = read_checkpoint(args.checkpoint)
        state = state.get('state_dict', state)
        if not any(k.startswith('student.') for k in state):
            raise KeyError(
                f'{args.checkpoint} does not fit this distiller: it has no '
                "'student.' weights (a checkpoint of the student alone has "
                'no connectors to draw). Give a runner checkpoint of this '
                'config (iter_N.pth / epoch_N.pth).')
        missing, unexpected = distiller.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith('teacher')]:
            raise KeyError(
                f'{args.checkpoint} does not fit this distiller: missing '
                f'{missing[:10]}, unexpected {unexpected[:10]}. Give a runner '
                'checkpoint of this config (iter_N.pth / epoch_N.pth).')
    return distiller.eval()


def load_batch(cfg: Config, image: str) -> dict:
    """The image through the config's test pipeline, ground-truth loading
    left out, collated as a dataloader batch of one."""
    from mmengine.dataset import Compose, pseudo_collate
    if not osp.isfile(image):
        raise FileNotFoundError(f'{image} is not a file.')
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if loader is None:
        raise KeyError('The config has no test_dataloader/val_dataloader '
                       'pipeline to prepare the image with.')
    steps = [s for s in loader.dataset.pipeline if 'LoadAnnotations' not in
             getattr(s['type'], '__name__', str(s['type']))]
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        pipeline = Compose(steps)
    return pseudo_collate([pipeline(dict(img_path=image, img_id=0))])


@torch.no_grad()
def pair_features(distiller, data: dict, pairs: List[str]) -> Dict:
    """Per pair: (student tap, connector output, teacher tap)."""
    with distiller.student_recorder.record() as student:
        distiller.student(data['inputs'], data['data_samples'],
                          mode='tensor')
    teacher = distiller.teacher_features(data['inputs'],
                                         data['data_samples'])
    out = {}
    for name in pairs:
        raw, target = student[name], teacher[name]
        after = raw
        if name in distiller.connectors:
            connector = distiller.connectors[name]
            if type(connector).__name__ == 'TaTConnector':
                # ask for the TaT map (a plain forward forms none)
                after = connector(raw, target, keep_attention=True)
            else:
                after = connector(raw, target)
        out[name] = (raw, after, target)
    return out


def network_image(preprocessor, inputs: torch.Tensor) -> np.ndarray:
    """The network's input as an RGB uint8 (H, W, 3) image: mean/std of
    the preprocessor undone; images are read as BGR, so unless the
    preprocessor swapped the channels the network saw BGR."""
    from mmdistill.distillers.teacher import swaps_channels
    img = inputs
    if hasattr(preprocessor, 'std') and hasattr(preprocessor, 'mean'):
        img = img * preprocessor.std + preprocessor.mean
    image = img.clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
    if not swaps_channels(preprocessor):
        image = image[..., ::-1]
    return np.ascontiguousarray(image)


def as_map(x: torch.Tensor) -> torch.Tensor:
    """(N, L, C) ViT tokens -> (N, C, s, s) over the s*s patch tokens (the
    class/distillation tokens before them left out); other tensors as they
    are."""
    if x.dim() != 3:
        return x
    n, length, c = x.shape
    for extra in (1, 2, 0):
        side = int(round((length - extra)**0.5))
        if side > 0 and side * side == length - extra:
            return x[:, extra:].transpose(1, 2).reshape(n, c, side, side)
    return x


def draw_class_attention(name, loss, student, teacher, image,
                         out_dir) -> List[str]:
    """For a ViTAttentionLoss pair: each model's class-token attention
    over its patches (mean over heads), as the loss computes it."""
    from mmdistill.losses.vit_attention import class_attention
    written = []
    for tag, qkv, heads, extra in (
            ('student', student, loss.student_heads,
             loss.num_extra_tokens[0]),
            ('teacher', teacher, loss.teacher_heads,
             loss.num_extra_tokens[1])):
        attention = class_attention(qkv.float(), heads)[0].mean(0)
        patches = attention[extra:]
        side = int(round(patches.numel()**0.5))
        if side * side != patches.numel():
            continue
        written.append(write(
            osp.join(out_dir, f'{name}_{tag}_class_attention.png'),
            draw(patches.reshape(1, side, side), image)))
    return written


def draw(featmap: torch.Tensor, image: np.ndarray) -> np.ndarray:
    from mmengine.visualization import Visualizer
    return Visualizer.draw_featmap(
        featmap.float().cpu(), image, channel_reduction='squeeze_mean',
        alpha=0.5)


def write(path: str, rgb: np.ndarray) -> str:
    import mmcv

    from mmdistill.utils.checkpoint import free_path
    path = free_path(path)
    mmcv.imwrite(rgb[..., ::-1], path)
    return path


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    import mmdistill  # noqa: F401
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    with tempfile.TemporaryDirectory() as workdir:
        distiller = build_distiller(cfg, args, workdir)
    distiller.to(args.device)
    pairs = args.pairs or list(distiller.pairs)
    unknown = [p for p in pairs if p not in distiller.pairs]
    if unknown:
        raise KeyError(f'No distillation pair {unknown}; the pairs are '
                       f'{list(distiller.pairs)}.')
    data = distiller.data_preprocessor(load_batch(cfg, args.image), False)
    image = network_image(distiller.data_preprocessor, data['inputs'][0])
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for name, (raw, after, target) in pair_features(distiller, data,
                                                    pairs).items():
        panels = dict(student=raw, connector=after, teacher=target)
        if name not in distiller.connectors:
            panels.pop('connector')
        for tag, feat in panels.items():
            feat = as_map(feat)
            if feat.dim() != 4:
                print(f'{name}: the {tag} tensor has shape '
                      f'{tuple(feat.shape)}, not (N, C, H, W); not drawn')
                continue
            written.append(write(
                osp.join(args.out_dir, f'{name}_{tag}.png'),
                draw(feat[0], image)))
        loss = distiller.distill_losses[name]
        if type(loss).__name__ == 'ViTAttentionLoss' and raw.dim() == 3:
            written += draw_class_attention(name, loss, raw, target, image,
                                            args.out_dir)
        connector = distiller.connectors[name] \
            if name in distiller.connectors else None
        if type(connector).__name__ == 'TaTConnector' and raw.dim() == 4:
            h, w = raw.shape[-2:]
            qy, qx = args.query or (image.shape[0] // 2, image.shape[1] // 2)
            query = (min(h - 1, qy * h // image.shape[0]),
                     min(w - 1, qx * w // image.shape[1]))
            tat = connector.attention_map((h, w), query)
            written.append(write(
                osp.join(args.out_dir, f'{name}_tat_map.png'),
                draw(tat[None], image)))
            print(f'{name}: TaT map of student position {query} '
                  f'(input pixel {(qy, qx)})')
    for path in written:
        print(f'wrote {path}')
    if not written:
        print('Nothing to draw: no pair has a spatial feature map (N, C, H, '
              'W) or ViT patch tokens (N, L, C).', file=sys.stderr)
    return written


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
