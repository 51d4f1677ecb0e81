"""Small tensor helpers shared by losses and connectors."""
import torch


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` in float32 when it is half precision, unchanged otherwise.

    Losses are computed in at least float32 under AMP, and keep float64 when
    given float64 (the tests compare against float64 references).
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def check_same_shape(
        owner: str,
        student: torch.Tensor,
        teacher: torch.Tensor,
        fix: str = ('add a connector that maps the student to the '
                    "teacher's channels and size.")) -> None:
    """Raise a ``ValueError`` naming both shapes and the fix when the
    student and teacher tensors a loss compares differ in shape."""
    if student.shape != teacher.shape:
        raise ValueError(
            f'{owner} needs equal shapes, got student {tuple(student.shape)}'
            f' and teacher {tuple(teacher.shape)}: {fix}')
