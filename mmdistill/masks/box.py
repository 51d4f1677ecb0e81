"""Foreground / background masks from ground-truth boxes, as in FGD.

Reference: Z. Yang et al., "Focal and Global Knowledge Distillation for
Detectors", CVPR 2022 (arXiv:2111.11837), Eq. 2-4: ``M`` is 1 inside the
boxes, the scale mask ``S`` is ``1 / (H_r * W_r)`` inside box ``r`` (the box's
area in feature cells, the larger value where boxes overlap) and
``1 / N_bg`` on the background, ``N_bg`` being the number of background cells.

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
"""
import numbers
from typing import List, Optional, Sequence, Tuple, Union

import torch

ShapeLike = Union[Sequence[int], torch.Size]


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


def _per_image_shapes(batch_input_shape, n: int) -> List[Tuple[int, int]]:
    shape = list(batch_input_shape)
    if len(shape) == 2 and all(
            isinstance(s, numbers.Real) or
        (isinstance(s, torch.Tensor) and s.dim() == 0) for s in shape):
        return [(int(shape[0]), int(shape[1]))] * n
    if len(shape) != n:
        raise ValueError(
            'batch_input_shape must be one (H_in, W_in) pair or one pair per '
            f'image; got {len(shape)} entries for {n} images')
    return [(int(s[0]), int(s[1])) for s in shape]


def box_masks(bboxes: Sequence,
              batch_input_shape: Union[ShapeLike, Sequence[ShapeLike]],
              feat_size: ShapeLike,
              dtype: torch.dtype = torch.float32,
              device: Optional[Union[str, torch.device]] = None
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background masks of FGD (Yang et al., CVPR 2022).

    With the cell ranges and areas of the module docstring's rule,

    * ``fg[n, y, x] = max_j 1 / area_j`` over the boxes ``j`` of image ``n``
      whose ranges contain ``(y, x)``, 0 where no box does;
    * ``bg[n] = 1[fg[n] == 0] / sum(1[fg[n] == 0])``, so it sums to 1 (all
      zero if boxes cover the whole map; all ``1 / (h * w)`` for an image
      without boxes, whose ``fg`` is all zero).

    The boxes of one image are rasterised at once by broadcasting over
    ``(k, h, w)``; there is no Python loop over boxes.

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
    n = len(bboxes)
    h, w = int(feat_size[0]), int(feat_size[1])
    shapes = _per_image_shapes(batch_input_shape, n)
    boxes_list = [_as_box_tensor(b) for b in bboxes]
    if device is None:
        device = boxes_list[0].device if n else torch.device('cpu')
    fg = torch.zeros((n, h, w), dtype=dtype, device=device)
    bg = torch.zeros((n, h, w), dtype=dtype, device=device)
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    for i, (boxes, (h_in, w_in)) in enumerate(zip(boxes_list, shapes)):
        boxes = boxes.to(device)
        if not boxes.is_floating_point():
            boxes = boxes.float()
        if boxes.shape[0]:
            # same operation order as the official code: x / W_in * w
            x1 = torch.floor(boxes[:, 0] / w_in * w).long()
            x2 = torch.ceil(boxes[:, 2] / w_in * w).long()
            y1 = torch.floor(boxes[:, 1] / h_in * h).long()
            y2 = torch.ceil(boxes[:, 3] / h_in * h).long()
            area = ((y2 + 1 - y1) * (x2 + 1 - x1)).to(dtype)
            value = 1.0 / area  # (k,)
            in_y = (ys[None, :] >= y1[:, None]) & (ys[None, :] <= y2[:, None])
            in_x = (xs[None, :] >= x1[:, None]) & (xs[None, :] <= x2[:, None])
            inside = in_y[:, :, None] & in_x[:, None, :]  # (k, h, w)
            fg[i] = torch.where(inside, value[:, None, None],
                                value.new_zeros(())).amax(dim=0)
        free = (fg[i] == 0).to(dtype)
        total = free.sum()
        if total > 0:
            bg[i] = free / total
    return fg, bg
