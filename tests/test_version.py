"""One version, written once: ``oasis_lib.__version__``, which pyproject.toml reads."""

from pathlib import Path

import pytest
from packaging.version import Version

import oasis_lib

# The build backend (pyproject's build-system); a venv made by Python >= 3.12 may lack it.
pyprojecttoml = pytest.importorskip("setuptools.config.pyprojecttoml")

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_pyproject_takes_its_version_from_the_package():
    project = pyprojecttoml.load_file(PYPROJECT)  # the TOML as written
    assert "version" not in project["project"]  # no second copy to drift
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "oasis_lib.__version__"}


def test_a_build_gets_the_packages_version(monkeypatch):
    monkeypatch.chdir(PYPROJECT.parent)  # setuptools resolves the package from the project root
    built = pyprojecttoml.read_configuration(PYPROJECT)["project"]["version"]
    assert built == oasis_lib.__version__
    assert str(Version(built)) == built  # a normalised PEP 440 version
