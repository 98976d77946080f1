"""Issue 24, latent runs: a run carries its autoencoder by content (its sha256, stored when the
run starts). After the autoencoder file changed, ``export``, ``sample`` and ``train --resume``
refuse in one line naming the file and both hash prefixes, and write nothing; after it moved,
``--autoencoder NEW`` points the run at its new place, accepted only with the same hash; run
from another folder, ``export`` bundles the run's own autoencoder, never an unrelated one at
the same relative path. Runs made before the hash keep working, with a warning."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest

from oasis_lib.__main__ import main
from oasis_lib.checkpoint import atomic_save, load_checkpoint, load_safetensors
from oasis_lib.pretrained import autoencoder_sha256, load_autoencoder, load_model

TINY = ["--preset", "tiny", "--no-progress"]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def base(tmp_path_factory, demo_root) -> Path:
    """``ae/`` and ``ae2/`` (two tiny autoencoders, other seeds) and ``ldm/`` (a 2-step latent
    run on ``ae/last.pt``), all made with paths relative to this folder."""
    base = tmp_path_factory.mktemp("latent")
    cwd = os.getcwd()
    os.chdir(base)
    try:
        for name, seed in (("ae", "0"), ("ae2", "1")):
            assert main(["train-autoencoder", "--data-root", str(demo_root), "--preset", "tiny",
                         "--no-progress", "--max-steps", "2", "--seed", seed,
                         "--out", name]) == 0
        assert main(["train", "--data-root", str(demo_root), *TINY, "--autoencoder",
                     "ae/last.pt", "--latent-cache-dir", "cache", "--max-steps", "2",
                     "--epochs", "3", "--out", "ldm"]) == 0
    finally:
        os.chdir(cwd)
    return base


@pytest.fixture
def proj(base, tmp_path, monkeypatch) -> Path:
    """A private copy of ``base``, the current folder."""
    proj = tmp_path / "proj"
    shutil.copytree(base, proj)
    monkeypatch.chdir(proj)
    return proj


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "no message on stderr"
    assert lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    return lines[-1]


def test_the_run_stores_its_autoencoders_content_hash(proj):
    ckpt = load_checkpoint(proj / "ldm" / "last.pt")
    ae = load_autoencoder(proj / "ae" / "last.pt")
    assert ckpt["config"]["autoencoder_sha256"] == autoencoder_sha256(ae)
    assert autoencoder_sha256(load_autoencoder(proj / "ae2" / "last.pt")) != autoencoder_sha256(ae)


def _changed(proj: Path) -> str:
    """The run's autoencoder file replaced by another one (as a retrained one would be)."""
    shutil.copy(proj / "ae2" / "last.pt", proj / "ae" / "last.pt")
    return digest(proj / "ldm" / "last.pt")


CHANGED = [
    ("export", lambda p: ["export", "--checkpoint", "ldm/last.pt", "--out", "x.safetensors"]),
    ("sample", lambda p: ["sample", "--checkpoint", "ldm/last.pt", "--n", "1", "--steps", "2",
                          "--no-progress", "--out", "s.png"]),
    ("resume", lambda p: ["train", "--resume", "--out", "ldm", "--max-steps", "3",
                          "--no-progress"]),
]


@pytest.mark.parametrize(("command", "argv"), CHANGED, ids=[c[0] for c in CHANGED])
def test_a_changed_autoencoder_is_refused_everywhere(command, argv, proj, capsys):
    before = _changed(proj)
    expected = load_checkpoint(proj / "ldm" / "last.pt")["config"]["autoencoder_sha256"]
    found = autoencoder_sha256(load_autoencoder(proj / "ae2" / "last.pt"))
    assert main(argv(proj)) == 1
    line = error_line(capsys)
    assert "autoencoder changed since" in line
    assert re.search(r"ae/last\.pt holds sha256 " + found[:12], line), line
    assert expected[:12] in line
    assert "--autoencoder FILE" in line
    assert digest(proj / "ldm" / "last.pt") == before  # nothing lost
    assert load_checkpoint(proj / "ldm" / "last.pt")["step"] == 2
    assert not (proj / "x.safetensors").exists()
    assert not (proj / "s.png").exists()


def test_a_moved_autoencoder_is_found_by_content_with_the_new_flag(proj, capsys):
    (proj / "ae").rename(proj / "moved_ae")
    out = ["--out", "x.safetensors"]
    assert main(["export", "--checkpoint", "ldm/last.pt", *out]) == 1
    line = error_line(capsys)
    assert "ae/last.pt" in line
    assert "--autoencoder FILE" in line
    assert main(["export", "--checkpoint", "ldm/last.pt", *out, "--autoencoder",
                 "ae2/last.pt"]) == 1  # another autoencoder at the new place: refused
    assert "autoencoder changed since" in error_line(capsys)
    assert not (proj / "x.safetensors").exists()
    assert main(["export", "--checkpoint", "ldm/last.pt", *out, "--autoencoder",
                 "moved_ae/last.pt"]) == 0
    assert main(["sample", "--checkpoint", "ldm/last.pt", "--autoencoder", "moved_ae/last.pt",
                 "--n", "1", "--steps", "2", "--no-progress", "--out", "s.png"]) == 0
    assert main(["train", "--resume", "--out", "ldm", "--max-steps", "3", "--no-progress",
                 "--autoencoder", "moved_ae/last.pt"]) == 0
    ckpt = load_checkpoint(proj / "ldm" / "last.pt")
    assert (ckpt["step"], ckpt["config"]["autoencoder"]) == (3, "moved_ae/last.pt")


def test_export_from_another_folder_bundles_the_runs_own_autoencoder(proj, tmp_path,
                                                                   monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "ae").mkdir(parents=True)
    shutil.copy(proj / "ae2" / "last.pt", elsewhere / "ae" / "last.pt")  # unrelated, same name
    monkeypatch.chdir(elsewhere)
    out = elsewhere / "ldm.safetensors"
    assert main(["export", "--checkpoint", str(proj / "ldm" / "last.pt"), "--out", str(out)]) == 0
    bundled = load_autoencoder(out)
    assert autoencoder_sha256(bundled) == autoencoder_sha256(load_autoencoder(proj / "ae/last.pt"))
    _, meta = load_safetensors(out)
    assert meta["autoencoder"] is None
    assert meta["out_dir"] == "runs/ldm"
    load_model(out)  # the bundled autoencoder is checked against the stored hash


def test_a_run_made_before_hashes_still_loads_with_a_warning(proj, capsys):
    ckpt = load_checkpoint(proj / "ldm" / "last.pt")
    del ckpt["config"]["autoencoder_sha256"]
    atomic_save(ckpt, proj / "ldm" / "old.pt")
    with pytest.warns(UserWarning, match="predates autoencoder hashes"):
        assert main(["export", "--checkpoint", "ldm/old.pt", "--out", "old.safetensors"]) == 0
    assert (proj / "old.safetensors").is_file()


def test_export_never_replaces_a_file_without_overwrite(proj, capsys):
    other = proj / "other.safetensors"
    other.write_bytes(b"another model's weights")
    argv = ["export", "--checkpoint", "ldm/last.pt", "--out", str(other)]
    assert main(argv) == 2
    line = error_line(capsys)
    assert "other.safetensors already exists" in line
    assert "--overwrite" in line
    assert other.read_bytes() == b"another model's weights"
    assert main([*argv, "--overwrite"]) == 0
    assert load_model(other).autoencoder is not None


def test_autoencoder_flag_on_a_pixel_model_is_refused(proj, capsys):
    pixel = Path(__file__).resolve().parents[2] / "checkpoints" / "demo_cpu64_ema.safetensors"
    assert main(["sample", "--checkpoint", str(pixel), "--autoencoder", "ae/last.pt", "--n",
                 "1", "--steps", "2", "--no-progress", "--out", "s.png"]) == 1
    assert "drop --autoencoder" in error_line(capsys)
    assert not (proj / "s.png").exists()
