import pytest
import torch
import torch.nn as nn

from mmdistill.distillers.taps import (FeatureRecorder, StopForward, Tap,
                                       check_paths, expand_braces, parse_tap)


class Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())
        self.shared = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.body(self.stem(x))
        levels = [self.shared(x), self.shared(x * 2)]
        return self.head(levels[0] + levels[1])


def test_expand_braces_range_list_and_dict():
    assert expand_braces('neck.fpn_convs.{0-2}.conv') == [
        'neck.fpn_convs.0.conv', 'neck.fpn_convs.1.conv',
        'neck.fpn_convs.2.conv'
    ]
    assert expand_braces('neck[{1,3}]') == ['neck[1]', 'neck[3]']
    assert expand_braces('backbone.layer4') == ['backbone.layer4']
    assert expand_braces(dict(path='a.{0-1}', source='input')) == [
        dict(path='a.0', source='input'),
        dict(path='a.1', source='input')
    ]
    with pytest.raises(ValueError, match='one is allowed'):
        expand_braces('a.{0-1}.b.{0-1}')


def test_parse_tap_forms():
    assert parse_tap('neck[2]') == Tap('neck', index=2)
    assert parse_tap('backbone.layer4') == Tap('backbone.layer4')
    assert parse_tap(dict(path='head', source='input', call=1)) == Tap(
        'head', None, 'input', 1)
    with pytest.raises(ValueError, match='source'):
        parse_tap(dict(path='head', source='middle'))
    with pytest.raises(ValueError, match='keys'):
        parse_tap(dict(pth='head'))


def test_unknown_path_names_closest_modules():
    with pytest.raises(KeyError) as err:
        FeatureRecorder(Net(), {'a': Tap('body.O')}, 'student')
    message = str(err.value)
    assert "'body.O'" in message and "'body.0'" in message


class Pooled(nn.ModuleList):
    """A ModuleList with a forward of its own (as mmseg's PPM)."""

    def forward(self, x):
        return [m(x) for m in self]


class Nested(nn.Module):
    """Stages as a ModuleList of ModuleLists (as mmseg's MiT), run by the
    model's loop, and a ModuleList subclass that runs as a whole."""

    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList([
            nn.ModuleList([nn.Conv2d(3, 3, 1), nn.ModuleList([nn.ReLU()])])
            for _ in range(2)
        ])
        self.pool = Pooled([nn.Identity(), nn.Identity()])

    def forward(self, x):
        for stage in self.stages:
            x = stage[1][0](stage[0](x))
        return self.pool(x)


def test_containers_without_a_forward_are_refused_with_what_runs():
    """A tap on a ModuleList/ModuleDict never records: the error names its
    last element that runs and the module above that runs; a ModuleList
    subclass with a forward is a tap like any module, and suggestions
    never name a container."""
    model = nn.Module()
    model.backbone = Nested()
    model.stages = nn.ModuleList([nn.Conv2d(3, 3, 1)])
    check_paths(model, [Tap('backbone.pool'), Tap('backbone.pool.0')],
                'student')
    for path in ('backbone.stages', 'backbone.stages.1'):
        with pytest.raises(KeyError) as err:
            check_paths(model, [Tap(path)], 'student')
        message = str(err.value)
        assert f"'{path}' is a ModuleList of the student, without a " \
            'forward of its own' in message
        # its last element that runs, below the nested ModuleLists
        assert "tap 'backbone.stages.1.1.0'" in message
        assert "'backbone' (or 'backbone[i]'" in message
    with pytest.raises(KeyError) as err:
        check_paths(model, [Tap('stages')], 'student')
    assert str(err.value).splitlines()[1].endswith("tap 'stages.0'")
    with pytest.raises(KeyError) as err:
        check_paths(model, [Tap('backbone.stage')], 'student')
    closest = str(err.value).split('(closest: ')[1].split(')')[0]
    assert 'backbone.stages' not in closest.split(', ')


def test_config_text_writes_taps_as_a_config_does():
    assert parse_tap('neck[2]').config_text() == "'neck[2]'"
    assert parse_tap(dict(path='head', source='input', call=1)
                     ).config_text() == \
        "dict(path='head', source='input', call=1)"


def test_records_output_input_index_and_call():
    net = Net()
    taps = {
        'out': Tap('stem'),
        'inp': Tap('head', source='input'),
        'second': Tap('shared', call=1),
    }
    recorder = FeatureRecorder(net, taps, 'student')
    x = torch.randn(2, 3, 5, 5)
    with recorder.record() as feats:
        net(x)
    stem = net.stem(x)
    torch.testing.assert_close(feats['out'], stem)
    body = net.body(stem)
    torch.testing.assert_close(feats['second'], net.shared(body * 2))
    torch.testing.assert_close(
        feats['inp'], net.shared(body) + net.shared(body * 2))
    # hooks are gone after the context
    assert not net.stem._forward_hooks and not net.head._forward_pre_hooks


def test_stop_when_done_skips_the_rest():
    net = Net()
    calls = []
    net.head.register_forward_hook(lambda *a: calls.append(1))
    recorder = FeatureRecorder(net, {'b': Tap('body')}, 'teacher')
    with recorder.record(stop_when_done=True) as feats:
        with pytest.raises(StopForward):
            net(torch.randn(1, 3, 4, 4))
    assert 'b' in feats and calls == []


def test_tuple_output_needs_index():

    class TupleNet(nn.Module):

        def __init__(self):
            super().__init__()
            self.split = Splitter()

        def forward(self, x):
            return self.split(x)

    class Splitter(nn.Module):

        def forward(self, x):
            return x, 2 * x

    net = TupleNet()
    recorder = FeatureRecorder(net, {'a': Tap('split')}, 'student')
    with pytest.raises(TypeError, match=r'split\[0\]'):
        with recorder.record():
            net(torch.ones(1))
    recorder = FeatureRecorder(net, {'a': Tap('split', index=1)}, 'student')
    with recorder.record() as feats:
        net(torch.ones(1))
    assert feats['a'].item() == 2
    with pytest.raises(RuntimeError, match='did not run'):
        recorder.check_complete({}, 'loss')


def test_in_place_change_after_recording_is_caught():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4),
                        nn.ReLU(inplace=True))
    x = torch.randn(2, 3, 4, 4)
    recorder = FeatureRecorder(net, {'bn': Tap('1')}, 'student')
    with recorder.record() as feats:
        net(x)
    with pytest.raises(RuntimeError, match='changed in place'):
        recorder.check_complete(feats, 'loss')
    recorder = FeatureRecorder(net, {'bn': parse_tap(
        dict(path='1', clone=True))}, 'student')
    with recorder.record() as feats:
        net(x)
    recorder.check_complete(feats, 'loss')
    assert feats['bn'].min() < 0  # the BN output, before the ReLU


def test_stop_forward_is_not_swallowed_by_except_exception():

    class Guarded(Net):

        def forward(self, x):
            try:
                return super().forward(x)
            except Exception:
                return None

    net = Guarded()
    recorder = FeatureRecorder(net, {'s': Tap('stem')}, 'teacher')
    with pytest.raises(StopForward):
        with recorder.record(stop_when_done=True):
            net(torch.randn(1, 3, 2, 2))
