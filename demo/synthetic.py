"""The demo's scene writer: a deterministic generator of small detection,
segmentation and classification datasets.

It lives with the demo, not in the mmdistill package: the registered dataset
classes that read what it writes (``mmdistill.SynthDetDataset``,
``mmdistill.SynthSegDataset``, and the class names ``SYNTH_CLASSES``) are in
``mmdistill.datasets``, and its photo content needs the ``[demo]`` extra
(scikit-image). Import it with the repository root on ``sys.path``
(``from demo.synthetic import write_synth_dataset``) or run
``demo/run_demo.py``.

Each scene is a textured, cluttered background with objects of several
classes (distinct shapes, colours and textures, varied scales, occluding each
other). The same scenes are written in two standard formats:

* COCO detection: ``<root>/images/<split>/*.png`` and
  ``<root>/annotations/<split>.json`` (visible-part boxes, ``iscrowd=0``);
* mmseg segmentation: ``<root>/images/<split>/*.png`` and
  ``<root>/labels/<split>/*.png`` (class index + 1 per pixel, 0 =
  background).

The objects of a COCO split can be cut out into a classification dataset
(:func:`write_crops`: one square crop per object, in mmpretrain's
``CustomDataset`` annotation-file format).

The Cityscapes layout used by mmseg's stock Cityscapes configs can be written
too (:func:`write_cityscapes_layout`), so their pipelines run unchanged.

With ``photos=True`` the scenes use real image content: backgrounds are
crops of the sample photos that scikit-image ships in ``skimage/data``
(astronaut, cat, coffee, motorcycle, rocket, ...), and object classes carry
the texture photos (brick, grass, gravel, ...). Distractors (class shapes
filled with background photo content) make shape alone insufficient. When
scikit-image is not installed, procedural textures are used instead
(:func:`photo_bank` returns None).
"""
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

SHAPES = ('rectangle', 'ellipse', 'triangle', 'diamond', 'ring', 'cross')

# Sample photos shipped in scikit-image's ``skimage/data`` (BSD licensed).
BACKGROUND_PHOTOS = ('astronaut.png', 'chelsea.png', 'coffee.png',
                     'motorcycle_left.png', 'motorcycle_right.png',
                     'rocket.jpg', 'camera.png', 'hubble_deep_field.jpg',
                     'ihc.png', 'retina.jpg', 'clock_motion.png', 'moon.png',
                     'page.png', 'text.png', 'cell.png', 'color.png')
TEXTURE_PHOTOS = ('brick.png', 'grass.png', 'gravel.png', 'coins.png')

_PHOTO_CACHE: Dict[str, Optional['PhotoBank']] = {}


class PhotoBank:
    """Real photos to draw backgrounds and textures from.

    Args:
        backgrounds (list[np.ndarray]): BGR uint8 photos for backgrounds and
            distractors.
        textures (list[np.ndarray]): BGR uint8 texture photos for objects.
    """

    def __init__(self, backgrounds: List[np.ndarray],
                 textures: List[np.ndarray]) -> None:
        if not backgrounds or not textures:
            raise ValueError('PhotoBank needs background and texture photos.')
        self.backgrounds = backgrounds
        self.textures = textures

    @staticmethod
    def crop(rng: np.random.Generator, photo: np.ndarray, h: int, w: int,
             zoom: Tuple[float, float] = (0.3, 1.0)) -> np.ndarray:
        """A random crop of ``photo`` covering ``zoom`` of its short side,
        resized to (h, w)."""
        import cv2
        ph, pw = photo.shape[:2]
        side = rng.uniform(*zoom) * min(ph, pw)
        ch = int(np.clip(side * h / max(h, w), 8, ph))
        cw = int(np.clip(side * w / max(h, w), 8, pw))
        y = int(rng.integers(0, ph - ch + 1))
        x = int(rng.integers(0, pw - cw + 1))
        patch = photo[y:y + ch, x:x + cw]
        return cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA)

    def background(self, rng: np.random.Generator, h: int,
                   w: int) -> np.ndarray:
        photo = self.backgrounds[int(rng.integers(0, len(self.backgrounds)))]
        return self.crop(rng, photo, h, w)

    def texture(self, rng: np.random.Generator, index: int, h: int, w: int,
                tint: np.ndarray) -> np.ndarray:
        """Texture photo ``index`` at about its own scale (a crop 1.5 to 3
        times the object's size) resized to (h, w) and tinted towards the
        colour ``tint`` (its grey levels keep the texture)."""
        import cv2
        photo = self.textures[index % len(self.textures)]
        ph, pw = photo.shape[:2]
        scale = rng.uniform(1.5, 3.0)
        ch, cw = (int(np.clip(h * scale, 8, ph)),
                  int(np.clip(w * scale, 8, pw)))
        y = int(rng.integers(0, ph - ch + 1))
        x = int(rng.integers(0, pw - cw + 1))
        patch = cv2.resize(photo[y:y + ch, x:x + cw], (w, h),
                           interpolation=cv2.INTER_AREA)
        grey = patch.astype(np.float32).mean(axis=2, keepdims=True) / 255.
        img = grey * (0.5 * tint[None, None, :] + 127.)
        img += rng.normal(0, 6, img.shape)
        return np.clip(img, 0, 255).astype(np.uint8)


def _skimage_data_dir() -> Optional[str]:
    import importlib.util
    spec = importlib.util.find_spec('skimage')
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = osp.join(list(spec.submodule_search_locations)[0], 'data')
    return folder if osp.isdir(folder) else None


def photo_bank(folder: Optional[str] = None) -> Optional[PhotoBank]:
    """The photos of ``folder`` (default: scikit-image's ``skimage/data``)
    as a :class:`PhotoBank`, or None when they are not there."""
    import cv2
    folder = folder or _skimage_data_dir()
    if folder is None:
        return None
    if folder in _PHOTO_CACHE:
        return _PHOTO_CACHE[folder]

    def read(names):
        images = []
        for name in names:
            path = osp.join(folder, name)
            if not osp.isfile(path):
                continue
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is not None:
                images.append(img)
        return images

    backgrounds, textures = read(BACKGROUND_PHOTOS), read(TEXTURE_PHOTOS)
    bank = PhotoBank(backgrounds, textures) if (backgrounds
                                                and textures) else None
    _PHOTO_CACHE[folder] = bank
    return bank


def _texture(rng: np.random.Generator, h: int, w: int,
             base: np.ndarray, kind: int) -> np.ndarray:
    """A (h, w, 3) uint8 texture around colour ``base``."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(0.25, 0.6)
    if kind == 0:  # stripes
        pattern = np.sin(freq * (xx + yy) + phase)
    elif kind == 1:  # checks
        pattern = np.sign(np.sin(freq * xx + phase) * np.sin(freq * yy))
    elif kind == 2:  # dots
        pattern = np.cos(freq * 2 * xx + phase) + np.cos(freq * 2 * yy)
        pattern = pattern / 2
    else:  # flat with noise
        pattern = rng.normal(0, 0.3, (h, w)).astype(np.float32)
    img = base[None, None, :].astype(np.float32) + 40 * pattern[..., None]
    img += rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_mask(shape: str, h: int, w: int) -> np.ndarray:
    """A boolean (h, w) mask of ``shape`` filling its box."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ny, nx = (yy - cy) / max(h / 2, 1), (xx - cx) / max(w / 2, 1)
    if shape == 'rectangle':
        return np.ones((h, w), bool)
    if shape == 'ellipse':
        return nx**2 + ny**2 <= 1
    if shape == 'triangle':
        return (ny >= -1) & (np.abs(nx) <= (ny + 1) / 2)
    if shape == 'diamond':
        return np.abs(nx) + np.abs(ny) <= 1
    if shape == 'ring':
        r = nx**2 + ny**2
        return (r <= 1) & (r >= 0.35)
    if shape == 'cross':
        return (np.abs(nx) <= 0.3) | (np.abs(ny) <= 0.3)
    raise ValueError(f'unknown shape {shape!r}')


def class_styles(num_classes: int, seed: int = 0) -> List[dict]:
    """A fixed shape, colour and texture per class."""
    rng = np.random.default_rng(10_000 + seed)
    styles = []
    for i in range(num_classes):
        styles.append(
            dict(
                shape=SHAPES[i % len(SHAPES)],
                color=rng.integers(40, 230, 3),
                texture=int(i // len(SHAPES)) % 4))
    return styles


def render_scene(rng: np.random.Generator,
                 size: Tuple[int, int],
                 styles: Sequence[dict],
                 max_objects: int = 6,
                 scale_range: Tuple[float, float] = (0.12, 0.5),
                 clutter: int = 6,
                 photos: Optional[PhotoBank] = None,
                 distractors: int = 0,
                 random_tint: bool = False,
                 min_objects: int = 1,
                 tint_jitter: float = 0.) -> Tuple[np.ndarray, np.ndarray,
                                                   list]:
    """Render one scene.

    Args:
        photos (PhotoBank, optional): Real photos: the background is a photo
            crop and class ``k`` is textured with texture photo ``k``.
        distractors (int): Up to this many shapes of the class shapes filled
            with photo content (or a random texture) that are not objects.
        random_tint (bool): Tint every object with a random colour instead of
            its class colour, so colour does not give the class away.
        min_objects (int): At least this many objects per scene.
        tint_jitter (float): Each object's colour varies by up to this much
            per channel around its class colour.

    Returns:
        tuple: image (h, w, 3) uint8 BGR, label map (h, w) uint8 with
        0 = background and ``k + 1`` = class k, and the visible instances as
        dicts with ``label``, ``bbox`` (x1, y1, x2, y2) and ``area``.
    """
    h, w = size
    if photos is not None:
        background = photos.background(rng, h, w)
    else:
        background = _texture(rng, h, w, rng.integers(60, 200, 3),
                              int(rng.integers(0, 4)))
    image = background.copy()
    labels = np.zeros((h, w), np.uint8)
    instance_ids = np.zeros((h, w), np.int32)
    # Clutter: untextured blobs of random colours, not objects.
    for _ in range(clutter):
        bh, bw = (int(rng.integers(3, max(4, h // 6))),
                  int(rng.integers(3, max(4, w // 6))))
        y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        blob = _shape_mask('ellipse', bh, bw)
        image[y:y + bh, x:x + bw][blob] = rng.integers(0, 255, 3)
    # Distractors: class shapes with the wrong content, not objects.
    for _ in range(int(rng.integers(0, distractors + 1)) if distractors
                   else 0):
        shape = styles[int(rng.integers(0, len(styles)))]['shape']
        side = rng.uniform(*scale_range) * min(h, w)
        dh, dw = int(np.clip(side, 6, h - 1)), int(np.clip(side, 6, w - 1))
        y, x = int(rng.integers(0, h - dh)), int(rng.integers(0, w - dw))
        mask = _shape_mask(shape, dh, dw)
        if photos is not None:
            content = photos.background(rng, dh, dw)
        else:
            content = _texture(rng, dh, dw, rng.integers(40, 230, 3), 3)
        image[y:y + dh, x:x + dw][mask] = content[mask]
    objects = []
    count = int(rng.integers(min(min_objects, max_objects), max_objects + 1))
    for k in range(count):
        label = int(rng.integers(0, len(styles)))
        style = styles[label]
        side = rng.uniform(*scale_range) * min(h, w)
        aspect = rng.uniform(0.6, 1.6)
        oh = int(np.clip(side * aspect, 6, h - 1))
        ow = int(np.clip(side / aspect, 6, w - 1))
        y, x = int(rng.integers(0, h - oh)), int(rng.integers(0, w - ow))
        mask = _shape_mask(style['shape'], oh, ow)
        color = (rng.integers(40, 230, 3) if random_tint
                 else np.asarray(style['color'], np.float32))
        if tint_jitter:
            color = np.clip(color + rng.uniform(-tint_jitter, tint_jitter, 3),
                            0, 255)
        if photos is not None:
            tex = photos.texture(rng, style.get('photo', label), oh, ow,
                                 color.astype(np.float32))
        else:
            tex = _texture(rng, oh, ow, color, style['texture'])
        region = image[y:y + oh, x:x + ow]
        region[mask] = tex[mask]
        labels[y:y + oh, x:x + ow][mask] = label + 1
        instance_ids[y:y + oh, x:x + ow][mask] = k + 1
        objects.append(label)
    instances = []
    for k, label in enumerate(objects):
        ys, xs = np.nonzero(instance_ids == k + 1)
        if len(ys) < 12:  # (almost) fully occluded
            continue
        instances.append(
            dict(
                label=label,
                bbox=[float(xs.min()), float(ys.min()),
                      float(xs.max() + 1), float(ys.max() + 1)],
                area=float(len(ys))))
    return image, labels, instances


def generate(root: str,
             classes: Sequence[str],
             splits: Dict[str, int],
             size: Tuple[int, int] = (128, 128),
             seed: int = 0,
             max_objects: int = 6,
             scale_range: Tuple[float, float] = (0.12, 0.5),
             clutter: int = 6,
             photos: Union[bool, PhotoBank, None] = False,
             distractors: int = 0,
             random_tint: bool = False,
             min_objects: int = 1,
             tint_jitter: float = 0.) -> Dict[str, dict]:
    """Write a dataset in COCO and mmseg formats under ``root``.

    Args:
        root (str): Output folder.
        classes (Sequence[str]): Class names (the label map uses index + 1;
            0 is background).
        splits (dict): Split name -> number of images, e.g.
            ``dict(train=64, val=16)``.
        size (tuple): Image (height, width).
        seed (int): Seed; the same seed writes the same files.
        max_objects, scale_range, clutter, distractors, random_tint,
        min_objects, tint_jitter: See :func:`render_scene`.
        photos (bool | PhotoBank): True uses scikit-image's sample photos
            (procedural textures when scikit-image is not installed); a
            :class:`PhotoBank` uses its photos.

    Returns:
        dict: Per split, the paths written (``img_dir``, ``seg_dir``,
        ``ann_file``), plus ``photos`` (whether real photos were used).
    """
    import cv2
    styles = class_styles(len(classes), seed)
    if photos is True:
        photos = photo_bank()
    elif photos is False:
        photos = None
    written = {}
    for split_index, (split, count) in enumerate(sorted(splits.items())):
        rng = np.random.default_rng([seed, split_index])
        img_dir = osp.join(root, 'images', split)
        seg_dir = osp.join(root, 'labels', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(seg_dir, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image, labels, instances = render_scene(
                rng, size, styles, max_objects, scale_range, clutter,
                photos=photos, distractors=distractors,
                random_tint=random_tint, min_objects=min_objects,
                tint_jitter=tint_jitter)
            name = f'{split}_{i:05d}.png'
            cv2.imwrite(osp.join(img_dir, name), image)
            cv2.imwrite(osp.join(seg_dir, name), labels)
            images.append(
                dict(id=i + 1, file_name=name, height=size[0],
                     width=size[1]))
            for inst in instances:
                x1, y1, x2, y2 = inst['bbox']
                annotations.append(
                    dict(
                        id=len(annotations) + 1,
                        image_id=i + 1,
                        category_id=inst['label'] + 1,
                        bbox=[x1, y1, x2 - x1, y2 - y1],
                        area=inst['area'],
                        iscrowd=0))
        ann_file = osp.join(root, 'annotations', f'{split}.json')
        os.makedirs(osp.dirname(ann_file), exist_ok=True)
        with open(ann_file, 'w') as f:
            json.dump(
                dict(
                    images=images,
                    annotations=annotations,
                    categories=[
                        dict(id=k + 1, name=name)
                        for k, name in enumerate(classes)
                    ]), f)
        written[split] = dict(
            img_dir=img_dir,
            seg_dir=seg_dir,
            ann_file=ann_file,
            photos=photos is not None)
    return written


def write_cityscapes_layout(root: str,
                            splits: Dict[str, int],
                            size: Tuple[int, int] = (64, 128),
                            num_classes: int = 19,
                            seed: int = 0,
                            city: str = 'synth') -> str:
    """Write scenes in the Cityscapes folder layout with train ids.

    ``leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` and
    ``gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png``; label
    ``k`` is class k of the 19 Cityscapes classes, 255 is ignore (used for
    the background here), as mmseg's ``CityscapesDataset`` expects.

    Returns:
        str: ``root``.
    """
    import cv2
    styles = class_styles(num_classes, seed)
    for split_index, (split, count) in enumerate(sorted(splits.items())):
        rng = np.random.default_rng([seed, 100 + split_index])
        img_dir = osp.join(root, 'leftImg8bit', split, city)
        seg_dir = osp.join(root, 'gtFine', split, city)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(seg_dir, exist_ok=True)
        for i in range(count):
            image, labels, _ = render_scene(rng, size, styles)
            train_ids = np.where(labels == 0, 255, labels - 1).astype(
                np.uint8)
            stem = f'{city}_{i:06d}_000019'
            cv2.imwrite(osp.join(img_dir, f'{stem}_leftImg8bit.png'), image)
            cv2.imwrite(
                osp.join(seg_dir, f'{stem}_gtFine_labelTrainIds.png'),
                train_ids)
    return root


def write_coco_layout(root: str,
                      splits: Dict[str, int],
                      classes: Optional[Sequence[str]] = None,
                      size: Tuple[int, int] = (96, 128),
                      seed: int = 0) -> str:
    """Write scenes in the COCO 2017 layout used by mmdet's stock configs:
    ``<split>2017/*.png`` and ``annotations/instances_<split>2017.json``.

    Args:
        classes (Sequence[str], optional): Category names; defaults to the 80
            COCO classes, so ``CocoDataset`` maps them unchanged.

    Returns:
        str: ``root``.
    """
    import shutil
    if classes is None:
        from mmdet.datasets import CocoDataset
        classes = CocoDataset.METAINFO['classes']
    tmp = osp.join(root, '_generated')
    written = generate(tmp, classes, splits, size=size, seed=seed)
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for split, paths in written.items():
        dst = osp.join(root, f'{split}2017')
        if osp.isdir(dst):
            shutil.rmtree(dst)
        shutil.move(paths['img_dir'], dst)
        shutil.move(paths['ann_file'],
                    osp.join(root, 'annotations',
                             f'instances_{split}2017.json'))
    shutil.rmtree(tmp)
    return root


def write_synth_dataset(root: str,
                        splits: Dict[str, int],
                        size: Tuple[int, int] = (96, 96),
                        seed: int = 0,
                        photos: bool = True,
                        **options) -> Dict[str, dict]:
    """Write scenes of the six ``mmdistill.datasets.SYNTH_CLASSES`` under
    ``root`` for ``mmdistill.SynthDetDataset`` and
    ``mmdistill.SynthSegDataset``.

    Args:
        root (str): Output folder.
        splits (dict): Split name -> number of images.
        size (tuple): Image (height, width).
        seed (int): The same seed writes the same files.
        photos (bool): Use scikit-image's sample photos for backgrounds and
            textures (procedural textures when it is not installed).
        **options: ``max_objects``, ``scale_range``, ``clutter``,
            ``distractors``, ``random_tint``, ``min_objects``,
            ``tint_jitter`` of :func:`generate`.

    Returns:
        dict: What :func:`generate` returns.
    """
    from mmdistill.datasets import SYNTH_CLASSES
    assert len(SYNTH_CLASSES) == len(SHAPES)
    return generate(
        root, SYNTH_CLASSES, splits, size=size, seed=seed, photos=photos,
        **options)


def write_crops(src_root: str,
                dst_root: str,
                splits: Sequence[str],
                size: int = 32,
                context: float = 0.25,
                min_side: int = 4) -> Dict[str, dict]:
    """Cut every object of the COCO splits written by :func:`generate` under
    ``src_root`` out into a classification dataset under ``dst_root``.

    A crop is the square around the object's (visible-part) box, widened by
    ``context`` of the box's longer side on each side, clipped to the image
    (its scene around the object, other objects, clutter and distractors
    included), resized to ``size`` x ``size``. Objects whose box is under
    ``min_side`` pixels on a side are left out.

    Writes ``<dst_root>/<split>/<image>_<k>.png`` and
    ``<dst_root>/annotations/<split>.txt`` with one ``<split>/<file> <label>``
    line per crop (label = category id - 1), which mmpretrain's
    ``CustomDataset(data_root=dst_root, ann_file='annotations/<split>.txt')``
    reads.

    Returns:
        dict: Per split, ``ann_file`` and ``count`` (crops written).
    """
    import cv2
    written = {}
    os.makedirs(osp.join(dst_root, 'annotations'), exist_ok=True)
    for split in splits:
        with open(osp.join(src_root, 'annotations', f'{split}.json')) as f:
            coco = json.load(f)
        images = {image['id']: image for image in coco['images']}
        os.makedirs(osp.join(dst_root, split), exist_ok=True)
        lines, current, img = [], None, None
        for ann in coco['annotations']:
            x, y, w, h = ann['bbox']
            if min(w, h) < min_side:
                continue
            image = images[ann['image_id']]
            if image['id'] != current:
                current = image['id']
                img = cv2.imread(
                    osp.join(src_root, 'images', split, image['file_name']))
            side = max(w, h) * (1 + 2 * context)
            cx, cy = x + w / 2, y + h / 2
            x1 = int(round(max(0, cx - side / 2)))
            y1 = int(round(max(0, cy - side / 2)))
            x2 = int(round(min(img.shape[1], cx + side / 2)))
            y2 = int(round(min(img.shape[0], cy + side / 2)))
            crop = cv2.resize(img[y1:y2, x1:x2], (size, size),
                              interpolation=cv2.INTER_AREA)
            stem = osp.splitext(image['file_name'])[0]
            name = f'{split}/{stem}_{ann["id"]:05d}.png'
            cv2.imwrite(osp.join(dst_root, name), crop)
            lines.append(f'{name} {ann["category_id"] - 1}')
        ann_file = osp.join(dst_root, 'annotations', f'{split}.txt')
        with open(ann_file, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        written[split] = dict(ann_file=ann_file, count=len(lines))
    return written
