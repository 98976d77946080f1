"""show_source renders the library's own code, highlighted in Jupyter and as text elsewhere."""

from __future__ import annotations

import inspect
import re

import pytest

from oasis_lib import NoiseSchedule
from oasis_lib.teaching import source
from oasis_lib.teaching.source import show_source, source_text


def test_source_is_the_running_code_with_a_header():
    text = source_text(NoiseSchedule.q_sample)
    header, *body = text.splitlines()
    lines = inspect.getsourcelines(NoiseSchedule.q_sample)[0]
    assert header == "# oasis_lib/diffusion/schedule.py: NoiseSchedule.q_sample"
    assert body == [ln.rstrip("\n") for ln in lines]


def test_the_header_names_the_object_not_its_line_numbers():
    """A function, a class and a nested class are named by their qualified name, so an edit
    elsewhere in the file leaves the shown text unchanged."""
    from oasis_lib.data.layout import check_train_splits
    from oasis_lib.models.autoencoder import DiagonalGaussian

    assert source_text(check_train_splits).splitlines()[0] == (
        "# oasis_lib/data/layout.py: check_train_splits")
    assert source_text(NoiseSchedule).splitlines()[0] == (
        "# oasis_lib/diffusion/schedule.py: NoiseSchedule")
    assert source_text(DiagonalGaussian.kl).splitlines()[0] == (
        "# oasis_lib/models/autoencoder.py: DiagonalGaussian.kl")
    assert not re.search(r"\d", source_text(NoiseSchedule.q_step).splitlines()[0])


def test_a_decorated_method_names_its_own_file_not_the_decorators():
    """EMA.update is wrapped by @torch.no_grad(), whose wrapper lives in torch's _contextlib.py."""
    from oasis_lib.training.ema import EMA

    assert inspect.getsourcefile(EMA.update).endswith("_contextlib.py")  # what unwrap fixes
    header, *body = source_text(EMA.update).splitlines()
    assert header == "# oasis_lib/training/ema.py: EMA.update"
    assert len(body) == len(inspect.getsourcelines(inspect.unwrap(EMA.update))[0])
    assert body[0].strip() == "@torch.no_grad()"
    assert body[1].strip().startswith("def update(self, model")


def test_a_part_of_the_source():
    full = source_text(NoiseSchedule.q_sample).splitlines()
    part = source_text(NoiseSchedule.q_sample, lines=(2, 4)).splitlines()
    assert part[0] == "# oasis_lib/diffusion/schedule.py: NoiseSchedule.q_sample, lines 2-4"
    assert part[1:] == full[2:5]


@pytest.mark.parametrize("lines", [(0, 2), (3, 2), (1, 10_000), [1, 2], (1.0, 2)])
def test_bad_line_ranges_are_refused(lines):
    with pytest.raises(ValueError, match="lines"):
        source_text(NoiseSchedule.q_sample, lines=lines)


def test_objects_without_source_are_refused():
    with pytest.raises(TypeError, match="no Python source"):
        source_text(len)
    with pytest.raises(TypeError, match="no Python source"):
        source_text(3)


def test_plain_text_outside_jupyter(capsys):
    assert show_source(NoiseSchedule.q_step) is None
    out = capsys.readouterr().out
    assert out == source_text(NoiseSchedule.q_step) + "\n"


def test_highlighted_markdown_in_jupyter(monkeypatch, capsys):
    import IPython.display

    shown = []
    monkeypatch.setattr(source, "_in_jupyter", lambda: True)
    monkeypatch.setattr(IPython.display, "display", shown.append)
    show_source(NoiseSchedule.q_step)
    assert capsys.readouterr().out == ""
    (md,) = shown
    assert isinstance(md, IPython.display.Markdown)
    assert md.data == f"```python\n{source_text(NoiseSchedule.q_step)}\n```"


def test_not_jupyter_in_pytest():
    assert source._in_jupyter() is False
