"""Tests of IdentityConnector (the "Identity" row of the MLP-connector
paper, Liu et al., ICCV-W 2023)."""
import pytest
import torch

from mmdistill.connectors import IdentityConnector
from mmdistill.registry import MODELS


def test_returns_student_values_and_gradient():
    student = torch.randn(2, 256, 8, 6, dtype=torch.float64,
                          requires_grad=True)
    teacher = torch.randn(2, 256, 8, 6, dtype=torch.float64,
                          requires_grad=True)
    out = IdentityConnector(256, 256)(student, teacher)
    assert out.dtype == torch.float64
    assert torch.equal(out, student)
    (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out)).sum() \
        .backward()
    expected = torch.arange(out.numel(), dtype=out.dtype).view_as(out)
    assert torch.equal(student.grad, expected)
    assert teacher.grad is None


@pytest.mark.parametrize('size', [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)])
def test_fpn_levels_batch_one(size):
    student = torch.randn(1, 256, *size)
    assert IdentityConnector()(student).shape == (1, 256, *size)


def test_channel_mismatch_is_refused():
    with pytest.raises(ValueError, match='LinearConnector'):
        IdentityConnector(512, 2048)
    with pytest.raises(ValueError, match='same shape'):
        IdentityConnector()(torch.randn(1, 512, 4, 4),
                            torch.randn(1, 2048, 4, 4))


def test_registered():
    conn = MODELS.build(dict(type='IdentityConnector'))
    assert isinstance(conn, IdentityConnector)
    assert list(conn.parameters()) == []
