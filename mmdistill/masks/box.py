"""Foreground / background masks from ground-truth boxes, as in FGD.

Reference: Z. Yang, Z. Li, X. Jiang, Y. Gong, Z. Yuan, D. Zhao and C. Yuan,
"Focal and Global Knowledge Distillation for Detectors", CVPR 2022
(arXiv:2111.11837), Eq. 2-4: ``M`` is 1 inside the boxes, the scale mask
``S`` is ``1 / (H_r * W_r)`` inside box ``r`` (the box's area in feature
cells, the larger value where boxes overlap) and ``1 / N_bg`` on the
background, ``N_bg`` being the number of background cells.

Discretisation (the rule of the official implementation, ``yzd-v/FGD``,
``mmdet/distillation/losses/fgd.py`` at its latest commit): a box
``(x1, y1, x2, y2)`` in padded-input pixels is scaled to the ``h x w`` feature
map as ``x * w / W_in`` and ``y * h / H_in``, then covers the *inclusive* cell
ranges

* columns ``floor(x1') .. ceil(x2')`` and rows ``floor(y1') .. ceil(y2')``,

and its area is ``(ceil(y2') + 1 - floor(y1')) * (ceil(x2') + 1 - floor(x1'))``
cells. The area is the unclipped count, so it depends only on the box's size
and position within the cell grid; the cells written are the part of the range
that lies in the map. Hence the fg values of an interior box sum to exactly 1,
while a box whose range crosses the map border (e.g. ``x2 = W_in`` gives
``ceil(x2') = w``, one column past the map) sums to ``cells in map / area``,
as in the official code. The official code indexes rows with the y range and
columns with the x range (its initial commit had them swapped, fixed there
since); the boxes are scaled with the padded batch input shape (the frame of
the feature map) rather than the official code's unpadded ``img_shape``.

Implementation: the boxes of a batch are padded once to the largest box count
(:func:`pad_boxes`, with a validity mask), and the masks of any number of
feature levels come from one rasterisation of all images and boxes
(:func:`box_masks_levels`): no Python loop over images, boxes or cells, and no
value is read back to the host (the per-image background counts are
``torch.where``/``clamp_min`` arithmetic, not ``if`` tests), so the masks can
be built on a GPU without synchronising it. :class:`BoxMaskCache` shares one
rasterisation between the losses of the feature levels of one batch.
"""
import numbers
import weakref
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch.nn.utils.rnn import pad_sequence

ShapeLike = Union[Sequence[int], torch.Size]
Size = Tuple[int, int]


def _as_box_tensor(boxes) -> torch.Tensor:
    # mmdet 3.x may hold ``HorizontalBoxes``; take the raw (k, 4) tensor.
    if hasattr(boxes, 'tensor') and not isinstance(boxes, torch.Tensor):
        boxes = boxes.tensor
    boxes = torch.as_tensor(boxes)
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError('boxes must have shape (k, 4) in (x1, y1, x2, y2) '
                         f'format, got {tuple(boxes.shape)}')
    return boxes


def _per_image_shapes(batch_input_shape, n: int) -> List[Size]:
    shape = list(batch_input_shape)
    if len(shape) == 2 and all(
            isinstance(s, numbers.Real) or (
                isinstance(s, torch.Tensor) and s.dim() == 0)
            for s in shape):
        return [(int(shape[0]), int(shape[1]))] * n
    if len(shape) != n:
        raise ValueError(
            'batch_input_shape must be one (H_in, W_in) pair or one pair per '
            f'image; got {len(shape)} entries for {n} images')
    return [(int(s[0]), int(s[1])) for s in shape]


class PaddedBoxes(NamedTuple):
    """The ground-truth boxes of a batch, padded to the largest count.

    Attributes:
        boxes (Tensor): ``(N, K, 4)`` floating ``(x1, y1, x2, y2)``; rows
            past an image's own boxes are zeros.
        valid (Tensor): ``(N, K)`` bool, True for the real boxes.
        input_shape (tuple | Tensor): ``(H_in, W_in)`` as Python ints when
            every image has the same padded input shape (mmdet's
            ``batch_input_shape``), else an ``(N, 1, 2)`` tensor of the
            boxes' dtype with one ``(H_in, W_in)`` per image.
    """
    boxes: torch.Tensor
    valid: torch.Tensor
    input_shape: Union[Size, torch.Tensor]


def pad_boxes(bboxes: Sequence,
              batch_input_shape: Union[ShapeLike, Sequence[ShapeLike]],
              device: Optional[Union[str, torch.device]] = None
              ) -> PaddedBoxes:
    """Pad the per-image boxes of a batch into one tensor (done once per
    batch; every feature level is rasterised from the result).

    Args:
        bboxes (Sequence[Tensor]): One ``(k_n, 4)`` tensor (or mmdet
            ``HorizontalBoxes``) per image, ``(x1, y1, x2, y2)`` in the pixel
            coordinates of the padded batch input; ``k_n`` may be 0.
        batch_input_shape (tuple | Sequence[tuple]): ``(H_in, W_in)`` of the
            padded input, or one such pair per image.
        device (str | torch.device, optional): Device of the result.
            Defaults to the device of the first image's boxes.

    Returns:
        PaddedBoxes: boxes ``(N, K, 4)`` in the common floating dtype of the
        images that have boxes (integer boxes count as float32, as
        ``Tensor.float()`` makes them; images whose boxes differ in dtype,
        which a data loader does not produce, are computed in the promoted
        dtype), the validity mask and the input shape(s).
    """
    n = len(bboxes)
    shapes = _per_image_shapes(batch_input_shape, n)
    boxes_list = [_as_box_tensor(b) for b in bboxes]
    if device is None:
        device = boxes_list[0].device if n else torch.device('cpu')
    # the images' common dtype; images without boxes do not take part
    dtypes = {b.dtype if b.is_floating_point() else torch.float32
              for b in boxes_list if b.shape[0]}
    dtype = torch.float32
    if dtypes:
        dtype = dtypes.pop()
        for other in dtypes:
            dtype = torch.promote_types(dtype, other)
    boxes_list = [b.to(device=device, dtype=dtype) for b in boxes_list]
    if n == 0:
        boxes = torch.zeros((0, 0, 4), dtype=dtype, device=device)
        valid = torch.zeros((0, 0), dtype=torch.bool, device=device)
    else:
        boxes = pad_sequence(boxes_list, batch_first=True)
        # built on the device (no host-to-device copy of the counts)
        valid = pad_sequence([
            torch.ones(b.shape[0], dtype=torch.bool, device=device)
            for b in boxes_list
        ],
                             batch_first=True)
    if len(set(shapes)) <= 1:
        input_shape = shapes[0] if shapes else (1, 1)
    else:
        # rare (mmdet pads a batch to one shape): per-image shapes, filled
        # on the device
        input_shape = torch.stack([
            torch.stack([
                torch.full((), float(h_in), dtype=dtype, device=device),
                torch.full((), float(w_in), dtype=dtype, device=device)
            ]) for h_in, w_in in shapes
        ]).reshape(n, 1, 2)
    return PaddedBoxes(boxes, valid, input_shape)


class _Geometry(NamedTuple):
    """Per-level constants of a set of feature sizes, on one device."""
    scale_h: torch.Tensor  # (L,) h of each level, in the boxes' dtype
    scale_w: torch.Tensor  # (L,) w of each level
    rows: List[torch.Tensor]  # arange(h) of each level
    cols: List[torch.Tensor]  # arange(w) of each level


_GEOMETRY_CACHE: 'OrderedDict[tuple, _Geometry]' = OrderedDict()
_GEOMETRY_CACHE_SIZE = 64


def _fill(values: Sequence[float], dtype: torch.dtype,
          device: torch.device) -> torch.Tensor:
    """A 1-D tensor of ``values`` written by fill kernels on ``device``
    (``torch.tensor(values, device=cuda)`` would copy from pageable host
    memory and synchronise the stream)."""
    return torch.cat([
        torch.full((1, ), v, dtype=dtype, device=device) for v in values
    ])


def _geometry(sizes: Sequence[Size], dtype: torch.dtype,
              device: torch.device) -> _Geometry:
    key = (tuple(sizes), dtype, str(device))
    geom = _GEOMETRY_CACHE.get(key)
    if geom is not None:
        _GEOMETRY_CACHE.move_to_end(key)
        return geom
    geom = _Geometry(
        scale_h=_fill([float(h) for h, _ in sizes], dtype, device),
        scale_w=_fill([float(w) for _, w in sizes], dtype, device),
        rows=[torch.arange(h, device=device) for h, _ in sizes],
        cols=[torch.arange(w, device=device) for _, w in sizes])
    _GEOMETRY_CACHE[key] = geom
    while len(_GEOMETRY_CACHE) > _GEOMETRY_CACHE_SIZE:
        _GEOMETRY_CACHE.popitem(last=False)
    return geom


def box_masks_levels(padded: PaddedBoxes,
                     feat_sizes: Sequence[ShapeLike],
                     dtype: torch.dtype = torch.float32
                     ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """FGD's foreground and background masks of several feature levels,
    from one rasterisation of the padded boxes of all images.

    For each level ``(h, w)``, with the cell ranges and areas of the module
    docstring's rule,

    * ``fg[n, y, x] = max_j 1 / area_j`` over the valid boxes ``j`` of image
      ``n`` whose ranges contain ``(y, x)``, 0 where no box does;
    * ``bg[n] = 1[fg[n] == 0] / max(1, sum(1[fg[n] == 0]))``: it sums to 1,
      is all ``1 / (h * w)`` for an image without boxes and all zero when
      the boxes cover the whole map.

    The cell ranges of every box on every level are computed at once,
    ``(N, K, L)``; each level's mask is then the maximum over the boxes of
    the separable product ``[y in rows_j] * [x in cols_j] / area_j``, all
    images and boxes in one broadcast.

    Args:
        padded (PaddedBoxes): The batch's boxes from :func:`pad_boxes`.
        feat_sizes (Sequence[tuple]): ``(h, w)`` of each feature level.
        dtype (torch.dtype): dtype of the masks. Defaults to float32.

    Returns:
        list[tuple[Tensor, Tensor]]: ``(fg, bg)`` per level, each
        ``(N, h, w)`` on the boxes' device.
    """
    sizes = [(int(s[0]), int(s[1])) for s in feat_sizes]
    if not sizes:
        return []
    boxes, valid, input_shape = padded
    n, k = boxes.shape[0], boxes.shape[1]
    device = boxes.device
    geom = _geometry(sizes, boxes.dtype, device)
    if k:
        # the official operation order, x / W_in * w: the division by the
        # batch's common input shape is the same (Python-scalar) division
        # as the per-image code it replaces
        if isinstance(input_shape, torch.Tensor):
            norm_y = boxes[..., 1::2] / input_shape[..., 0:1]
            norm_x = boxes[..., 0::2] / input_shape[..., 1:2]
        else:
            norm_y = boxes[..., 1::2] / input_shape[0]
            norm_x = boxes[..., 0::2] / input_shape[1]
        # (N, K, L) cell ranges and areas of every box on every level
        y1 = torch.floor(norm_y[..., 0:1] * geom.scale_h).long()
        y2 = torch.ceil(norm_y[..., 1:2] * geom.scale_h).long()
        x1 = torch.floor(norm_x[..., 0:1] * geom.scale_w).long()
        x2 = torch.ceil(norm_x[..., 1:2] * geom.scale_w).long()
        area = (y2 + 1 - y1) * (x2 + 1 - x1)
        # padding rows and empty ranges (area <= 0 or inverted) give 0,
        # never inf * 0
        value = torch.where(valid[..., None] & (area > 0),
                            1.0 / area.to(dtype),
                            area.new_zeros((), dtype=dtype))
    out = []
    for level, (h, w) in enumerate(sizes):
        if k == 0:  # no box in the whole batch (a shape, known on the host)
            fg = torch.zeros((n, h, w), dtype=dtype, device=device)
        else:
            rows, cols = geom.rows[level], geom.cols[level]
            in_y = ((rows >= y1[..., level, None]) &
                    (rows <= y2[..., level, None])).to(dtype)  # (N, K, h)
            in_x = ((cols >= x1[..., level, None]) &
                    (cols <= x2[..., level, None])).to(dtype)  # (N, K, w)
            # exact: each product is 0 or the box's value
            fg = (in_y[..., :, None] *
                  (in_x * value[..., level, None])[..., None, :]).amax(dim=1)
        # background: the free cells over their count; where nothing is
        # free every numerator is 0, so a count clamped to 1 gives the zero
        # mask without asking on the host whether the count is positive
        free = fg == 0
        count = free.sum(dim=(1, 2)).clamp_min(1).to(dtype)
        out.append((fg, free.to(dtype) / count[:, None, None]))
    return out


def box_masks(bboxes: Sequence,
              batch_input_shape: Union[ShapeLike, Sequence[ShapeLike]],
              feat_size: ShapeLike,
              dtype: torch.dtype = torch.float32,
              device: Optional[Union[str, torch.device]] = None
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background masks of FGD (Yang et al., CVPR 2022,
    Eq. 2-4) for one feature level.

    With the cell ranges and areas of the module docstring's rule,

    * ``fg[n, y, x] = max_j 1 / area_j`` over the boxes ``j`` of image ``n``
      whose ranges contain ``(y, x)``, 0 where no box does;
    * ``bg[n] = 1[fg[n] == 0] / sum(1[fg[n] == 0])``, so it sums to 1 (all
      zero if boxes cover the whole map; all ``1 / (h * w)`` for an image
      without boxes, whose ``fg`` is all zero).

    All images and boxes are rasterised at once (:func:`pad_boxes` then
    :func:`box_masks_levels`); use those two directly to build several
    levels from one rasterisation.

    Args:
        bboxes (Sequence[Tensor]): One ``(k_n, 4)`` tensor (or mmdet
            ``HorizontalBoxes``) per image, ``(x1, y1, x2, y2)`` in the pixel
            coordinates of the padded batch input; ``k_n`` may be 0.
        batch_input_shape (tuple | Sequence[tuple]): ``(H_in, W_in)`` of the
            padded input (mmdet's ``metainfo['batch_input_shape']``), or one
            such pair per image.
        feat_size (tuple): ``(h, w)`` of the feature map.
        dtype (torch.dtype): dtype of the masks. Defaults to float32.
        device (str | torch.device, optional): Device of the masks. Defaults
            to the device of the first image's boxes.

    Returns:
        tuple[Tensor, Tensor]: ``(fg, bg)``, each of shape ``(N, h, w)``.
    """
    padded = pad_boxes(bboxes, batch_input_shape, device)
    return box_masks_levels(padded, [feat_size], dtype)[0]


class BoxMaskCache:
    """Masks of every feature level of a batch from one rasterisation.

    The losses of the feature levels of one batch (e.g. one ``FGDLoss`` per
    FPN level) each ask for their level's masks with the same boxes. The
    first request of a batch pads the boxes once and rasterises, in one
    :func:`box_masks_levels` call, every level size that was requested
    before for the same padded input shape (the level sizes of a network
    depend only on its input shape) plus the requested one; the other levels
    of the batch then read their masks from here. A size not seen before is
    rasterised on its own and remembered.

    A batch is recognised by the identity of its data samples and box
    tensors (held by weak references, so a batch is not kept alive, and a
    freed batch whose ids are reused is not mistaken for a new one) and by
    the boxes' in-place version counters, so a new batch or boxes changed in
    place are never served stale masks. Only the last batch's masks are
    kept.

    Args:
        max_shapes (int): How many input shapes' level sizes to remember.
            Defaults to 256.
    """

    def __init__(self, max_shapes: int = 256) -> None:
        self.max_shapes = max_shapes
        self._sizes: 'OrderedDict[tuple, List[Size]]' = OrderedDict()
        self._key: Optional[tuple] = None
        self._refs: tuple = ()
        self._padded: Dict[tuple, PaddedBoxes] = {}
        self._masks: Dict[tuple, Tuple[torch.Tensor, torch.Tensor]] = {}
        self.rasterisations = 0  # calls of box_masks_levels, for tests

    @staticmethod
    def _ref(obj):
        try:
            return weakref.ref(obj)
        except TypeError:  # no weak references: hold it
            return lambda: obj

    def _same_batch(self, key: tuple, objects: Sequence) -> bool:
        return key == self._key and len(objects) == len(self._refs) and all(
            ref() is obj for ref, obj in zip(self._refs, objects))

    @staticmethod
    def _batch_key(samples: Sequence, boxes: Sequence,
                   shapes: Sequence) -> tuple:
        parts = []
        for sample, box in zip(samples, boxes):
            raw = box if isinstance(box, torch.Tensor) else getattr(
                box, 'tensor', box)
            parts.append((id(sample), id(box), id(raw),
                          getattr(raw, '_version', None)))
        return tuple(parts), tuple(tuple(s) for s in shapes)

    def get(self,
            samples: Sequence,
            bboxes: Sequence,
            batch_input_shape: Sequence[ShapeLike],
            feat_size: ShapeLike,
            dtype: torch.dtype = torch.float32,
            device: Optional[Union[str, torch.device]] = None
            ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(fg, bg)`` of one level, as :func:`box_masks` returns them.

        Args:
            samples (Sequence): The batch's data samples (their identity
                recognises the batch).
            bboxes (Sequence): One box tensor per image (see
                :func:`box_masks`).
            batch_input_shape (Sequence[tuple]): One ``(H_in, W_in)`` per
                image.
            feat_size (tuple): ``(h, w)`` of the level.
            dtype (torch.dtype): dtype of the masks.
            device (str | torch.device, optional): Device of the masks.
        """
        size = (int(feat_size[0]), int(feat_size[1]))
        shapes = _per_image_shapes(batch_input_shape, len(bboxes))
        key = self._batch_key(samples, bboxes, shapes)
        objects = tuple(samples) + tuple(bboxes)
        if not self._same_batch(key, objects):
            self._key = key
            self._refs = tuple(self._ref(obj) for obj in objects)
            self._padded, self._masks = {}, {}
        dev = torch.device(device) if device is not None else None
        group = (dtype, str(dev))
        found = self._masks.get(group + size)
        if found is not None:
            return found
        padded = self._padded.get(group)
        if padded is None:
            padded = pad_boxes(bboxes, shapes, dev)
            self._padded[group] = padded
        shape_key = tuple(sorted(set(shapes)))
        known = self._sizes.setdefault(shape_key, [])
        self._sizes.move_to_end(shape_key)
        while len(self._sizes) > self.max_shapes:
            self._sizes.popitem(last=False)
        if size not in known:
            known.append(size)
        wanted = [s for s in known if group + s not in self._masks]
        self.rasterisations += 1
        for s, masks in zip(wanted,
                            box_masks_levels(padded, wanted, dtype)):
            self._masks[group + s] = masks
        return self._masks[group + size]

    def clear(self) -> None:
        """Forget the last batch and the remembered level sizes."""
        self.__init__(self.max_shapes)
