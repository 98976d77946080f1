"""Hostile inputs to the newer features (issue 24, "unclear errors"): each case ends in one line
``error: ...`` that names the flag or the file and what to do, with exit code 2 for bad usage
(refused before any data is read or any step taken) or 1 for a failure of an input file.

``CASES`` is the table, as in ``test_hostile.py``: an id, a function that prepares the case in a
:class:`Ctx` and returns the argv, the expected exit code, and regexes the line must match.
Every case also asserts that no run was started (``r0`` holds no checkpoint) and that the
prepared runs' ``last.pt`` are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from oasis_lib.__main__ import main

TINY = ["--preset", "tiny", "--no-progress"]
AE_TINY = ["--preset", "tiny", "--image-size", "32", "--crop-size", "32", "--no-progress"]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_root) -> Path:
    """A 2-step tiny diffusion run ``diffusion`` and a 2-step tiny autoencoder run ``ae``."""
    root = tmp_path_factory.mktemp("errors")
    assert main(["train", "--data-root", str(demo_root), *TINY, "--out", str(root / "diffusion"),
                 "--max-steps", "2"]) == 0
    assert main(["train-autoencoder", "--data-root", str(demo_root), *AE_TINY,
                 "--out", str(root / "ae"), "--max-steps", "2"]) == 0
    return root


@dataclass
class Ctx:
    tmp: Path
    demo: Path
    diffusion: Path  # private copies of the runs
    ae: Path

    def train(self, *extra: str, out: Path | None = None) -> list[str]:
        return ["train", "--data-root", str(self.demo), *TINY, "--out",
                str(out or self.tmp / "r0"), "--max-steps", "2", *extra]

    def train_ae(self, *extra: str, out: Path | None = None) -> list[str]:
        return ["train-autoencoder", "--data-root", str(self.demo), *AE_TINY, "--out",
                str(out or self.tmp / "r0"), "--max-steps", "2", *extra]

    def cut(self, source: Path, name: str, keep: int) -> Path:
        """A copy of ``source`` cut after ``keep`` bytes (a copy that stopped early)."""
        path = self.tmp / name
        path.write_bytes(Path(source).read_bytes()[:keep])
        return path


@pytest.fixture
def ctx(tmp_path, runs, demo_root) -> Ctx:
    for name in ("diffusion", "ae"):
        shutil.copytree(runs / name, tmp_path / name)
    return Ctx(tmp=tmp_path, demo=demo_root, diffusion=tmp_path / "diffusion",
               ae=tmp_path / "ae")


def ae_export(ctx: Ctx) -> Path:
    from oasis_lib.pretrained import export_autoencoder, load_autoencoder

    return export_autoencoder(load_autoencoder(ctx.ae / "last.pt"), ctx.tmp / "ae.safetensors")


def truncated_autoencoder(ctx: Ctx) -> list[str]:
    whole = ae_export(ctx)
    cut = ctx.cut(whole, "cut.safetensors", whole.stat().st_size // 2)
    return ctx.train("--autoencoder", str(cut))


def truncated_segmenter(ctx: Ctx) -> list[str]:
    cut = ctx.cut(ae_export(ctx), "seg.safetensors", 5)
    return ["evaluate", "--segmenter", str(cut), "--n", "2", "--out", str(ctx.tmp / "ev")]


def truncated_sample_checkpoint(ctx: Ctx) -> list[str]:
    cut = ctx.cut(ae_export(ctx), "model.safetensors", 300)
    return ["sample", "--checkpoint", str(cut), "--n", "1", "--steps", "2", "--no-progress",
            "--out", str(ctx.tmp / "s.png")]


def some_splits(*splits: str):
    """``OASIS_DATA`` at a copy of the demo data holding only ``splits``; train without
    --data-root."""
    def build(ctx: Ctx, monkeypatch) -> list[str]:
        from oasis_lib.data import image_dir, mask_dir

        root = ctx.tmp / "some"
        for split in splits:
            for folder in (image_dir, mask_dir):
                shutil.copytree(folder(ctx.demo, split), folder(root, split))
        monkeypatch.setenv("OASIS_DATA", str(root))
        argv = ctx.train()
        i = argv.index("--data-root")
        return argv[:i] + argv[i + 2:]
    return build


def moved_data(command: str):
    """A run trained on a copy of the demo data, which then moved away."""
    def build(ctx: Ctx, monkeypatch) -> list[str]:
        old, out = ctx.tmp / "old_data", ctx.tmp / "moved_run"
        shutil.copytree(ctx.demo, old)
        train = ctx.train if command == "train" else ctx.train_ae
        argv = train(out=out)
        argv[argv.index("--data-root") + 1] = str(old)
        assert main(argv) == 0
        old.rename(ctx.tmp / "new_data")
        return [command, "--out", str(out), "--resume", "--max-steps", "3", "--no-progress"]
    return build


CASES = [
    # train-autoencoder: the model flags, named as typed, with the valid values
    ("ae-latent-channels-0", lambda c: c.train_ae("--latent-channels", "0"), 2,
     [r"--latent-channels must be an int >= 1, got 0"]),
    ("ae-latent-channels-negative", lambda c: c.train_ae("--latent-channels", "-3"), 2,
     [r"--latent-channels must be an int >= 1, got -3"]),
    ("ae-channel-mult-0", lambda c: c.train_ae("--channel-mult", "0", "1"), 2,
     [r"each --channel-mult entry must be an int >= 1, got 0"]),
    ("ae-channel-mult-negative", lambda c: c.train_ae("--channel-mult", "-1", "2"), 2,
     [r"--channel-mult entry must be an int >= 1, got -1"]),
    ("ae-channel-mult-7-levels",
     lambda c: c.train_ae("--channel-mult", *"1 2 4 8 16 32 64".split()), 2,
     [r"--channel-mult has 7 levels \(f=64\); at most 6", r"e\.g\. 1 2 4"]),
    ("ae-crop-not-multiple", lambda c: c.train_ae("--crop-size", "30"), 2,
     [r"--crop-size must be a multiple of the downsampling factor f=4, got 30"]),
    ("latent-image-size-30", lambda c: c.train("--autoencoder", str(c.ae / "last.pt"),
                                               "--image-size", "30"), 2,
     [r"--image-size 30 must be a multiple of the autoencoder's downsampling factor f=4",
      r"ae/last\.pt", r"--image-size 28 or 32"]),
    ("latent-autoencoder-missing", lambda c: c.train("--autoencoder", str(c.tmp / "no.pt")), 2,
     [r"--autoencoder .*no\.pt does not exist"]),
    # resuming a run of the other kind: what the folder holds, which file, which command
    ("ae-resume-a-diffusion-run", lambda c: c.train_ae("--resume", out=c.diffusion), 2,
     [r"holds a diffusion run", r"diffusion/last\.pt was written by `train`",
      r"python -m oasis_lib train --out .*diffusion --resume"]),
    ("train-resume-an-ae-run", lambda c: c.train("--resume", out=c.ae), 2,
     [r"holds an autoencoder run", r"ae/last\.pt was written by `train-autoencoder`",
      r"oasis_lib train-autoencoder --out .*ae --resume"]),
    # truncated .safetensors inputs, whatever reads them
    ("latent-truncated-autoencoder", truncated_autoencoder, 1,
     [r"cut\.safetensors", r"truncated", r"download it again|export it again"]),
    ("evaluate-truncated-segmenter", truncated_segmenter, 1,
     [r"seg\.safetensors", r"truncated"]),
    ("sample-truncated-safetensors", truncated_sample_checkpoint, 1,
     [r"model\.safetensors", r"truncated"]),
    # data that is not where the run or the environment says
    ("oasis-data-without-validate", some_splits("train", "test"), 1,
     [r"some \(\$OASIS_DATA\) has no validate split", r"keras_png_slices_validate does not",
      r"chooses best\.pt", r"point \$OASIS_DATA at a complete OASIS root"]),
    ("oasis-data-without-test", some_splits("train", "validate"), 1,
     [r"has no test split", r"held out", r"Add the test folders"]),
    ("train-resume-data-moved", moved_data("train"), 2,
     [r"data root .*old_data \(stored in .*moved_run/last\.pt\) no longer exists",
      r"--data-root NEW_FOLDER --override data_root"]),
    ("ae-resume-data-moved", moved_data("train-autoencoder"), 2,
     [r"old_data .* no longer exists", r"--data-root NEW_FOLDER --override data_root"]),
]


CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
CASES += [
    # --init-from a file that cannot start the run: what differs, in one short line
    ("init-from-another-preset",
     lambda c: c.train("--init-from", str(CHECKPOINTS / "demo_cpu64_ema.safetensors")), 2,
     [r"demo_cpu64_ema\.safetensors does not fit the run's U-Net \(\d+ missing, \d+ "
      r"unexpected, \d+ of another shape of \d+ tensors", r"preset: file 'cpu', run 'tiny'",
      r"pass --preset cpu --image-size 64"]),
    ("init-from-conditional-without-condition",
     lambda c: c.train("--init-from", str(CHECKPOINTS / "demo_cond64_ema.safetensors"),
                       "--preset", "cpu", "--image-size", "64"), 2,
     [r"demo_cond64_ema\.safetensors is a conditional model \(condition 'mask\+slice'\)",
      r"add --condition mask\+slice"]),
]


def inpaint_region(painted: int):
    """inpaint the first demo slice with a 256x256 region of ``painted`` white pixels."""
    def build(ctx: Ctx) -> list[str]:
        import numpy as np
        from PIL import Image

        from oasis_lib.data import image_dir

        region = np.zeros((256, 256), np.uint8)
        region.flat[:painted] = 255
        Image.fromarray(region).save(ctx.tmp / "region.png")
        image = sorted(image_dir(ctx.demo, "train").glob("*.png"))[0]
        return ["inpaint", "--image", str(image), "--region", str(ctx.tmp / "region.png"),
                "--checkpoint", str(CHECKPOINTS / "demo_cpu64_ema.safetensors"),
                "--no-progress", "--out", str(ctx.tmp / "s.png")]
    return build


CASES += [
    # a model of the other kind where one kind is expected: which it is, where it belongs
    ("latent-autoencoder-is-a-diffusion-run",
     lambda c: c.train("--autoencoder", str(c.diffusion / "last.pt")), 1,
     [r"diffusion/last\.pt is not an autoencoder training checkpoint",
      r"diffusion run's \(made by `train`\); pass that as --init-from"]),
    ("init-from-an-autoencoder-run", lambda c: c.train("--init-from", str(c.ae / "last.pt")), 1,
     [r"ae/last\.pt is an autoencoder run's checkpoint", r"`train --autoencoder`"]),
    ("inpaint-empty-region", inpaint_region(0), 2,
     [r"--region .*region\.png is empty: all its 256x256 pixels are 0",
      r"paint the part to regenerate white \(255\)"]),
]


def assert_one_line(err: str, patterns: list[str]) -> str:
    from conftest import assert_error_line

    last = assert_error_line(err, patterns)
    assert "rerun with --debug" not in last  # not an "unexpected" error
    assert len(last) < 500, last  # a line, not a dump of keys
    return last


PARAMS = [pytest.param(*c, id=c[0]) for c in CASES]


@pytest.mark.parametrize(("case", "build", "code", "patterns"), PARAMS)
def test_cli_case(case, build, code, patterns, ctx, capsys, monkeypatch):
    import inspect

    argv = build(ctx, monkeypatch) if len(inspect.signature(build).parameters) > 1 else build(ctx)
    capsys.readouterr()
    before = {p: digest(p) for p in (ctx.diffusion / "last.pt", ctx.ae / "last.pt")}
    got = main(argv)
    err = capsys.readouterr().err
    assert got == code, err
    assert_one_line(err, patterns)
    assert not (ctx.tmp / "r0" / "last.pt").exists()  # refused before any training
    assert not (ctx.tmp / "s.png").exists()
    for path, d in before.items():
        assert digest(path) == d, f"{path} changed"


# ------------------------------------------------------------------ a full disk while saving
ZIP_WRITER_FULL = ("[enforce fail at inline_container.cc:672] . unexpected pos 2432 vs 2330")
SAFETENSORS_FULL = ('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                    'message: "No space left on device" })')


@pytest.mark.parametrize("error", [RuntimeError(ZIP_WRITER_FULL),
                                   OSError(28, "No space left on device")],
                         ids=["torch-zip-writer", "enospc"])
def test_a_full_disk_names_the_file_and_the_last_good_checkpoint(error, ctx, capsys,
                                                                 monkeypatch):
    import oasis_lib.checkpoint as ck

    saves, real_save = [], ck.torch.save

    def save(obj, f, *a, **k):  # the first checkpoint (step 2) fits; then the disk is full
        saves.append(obj.get("step"))
        if len(saves) > 1:
            f.write(b"partial")
            raise error
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ck.torch, "save", save)
    out = ctx.tmp / "full"
    code = main(ctx.train("--max-steps", "6", "--checkpoint-every", "2", out=out))
    err = capsys.readouterr().err
    assert code == 1, err
    line = assert_one_line(err, [
        rf"the disk is full: writing {re.escape(str(out / 'last.pt'))} failed",
        rf"last good checkpoint is {re.escape(str(out / 'last.pt'))} \(step 2\)",
        r"free some space, then continue the run with --resume"])
    assert "MiB free" in line
    monkeypatch.undo()
    from oasis_lib.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt")["step"] == 2  # the good one, intact
    assert not list(out.glob(".*.tmp"))  # no half-written file left


def test_a_full_disk_while_exporting_leaves_no_partial_file(ctx, capsys, monkeypatch):
    import oasis_lib.checkpoint as ck

    def save_file(tensors, path, metadata=None):
        Path(path).write_bytes(b"partial")
        raise RuntimeError(SAFETENSORS_FULL)  # (safetensors' SafetensorError is one)

    monkeypatch.setattr(ck, "save_file", save_file)
    out = ctx.tmp / "model.safetensors"
    code = main(["export", "--checkpoint", str(ctx.diffusion / "last.pt"), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert_one_line(err, [r"the disk is full: writing .*model\.safetensors failed",
                          r"free some space and run again"])
    assert not out.exists()
    assert not [p for p in ctx.tmp.iterdir() if p.name.startswith(".")]


def test_init_from_warns_once_about_another_recipe(ctx, capsys, caplog):
    out = ctx.tmp / "warm"
    assert main(ctx.train("--init-from", str(ctx.diffusion / "last.pt"), "--timesteps", "500",
                          out=out)) == 0
    warned = [r for r in caplog.records if "the diffusion recipe differs" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "timesteps 1000 -> 500" in warned[0].getMessage()


# ------------------------------------------------------------------ under torchrun
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
REPO = Path(__file__).resolve().parents[2]


def torchrun(ctx: Ctx, *extra: str, out: Path) -> subprocess.CompletedProcess:
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "oasis_lib", "train",
           "--data-root", str(ctx.demo), *TINY, "--max-steps", "1", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def assert_said_once_by_rank_0(proc: subprocess.CompletedProcess, patterns: list[str],
                               code: int) -> None:
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(ours) == 1, proc.stderr[-3000:]  # one line, not one per rank
    for pattern in patterns:
        assert re.search(pattern, ours[0]), (pattern, ours[0])
    assert "timeout" not in proc.stderr  # no rank waited for rank 0 until a timeout
    assert "--resume" not in proc.stderr  # (RankFailure's advice, wrong here)
    assert "File \"" not in proc.stderr.split("Traceback")[0]  # no traceback of ours
    # torchrun's own report: rank 0 is the root cause, with our exit code
    root = proc.stderr.split("Root Cause")[-1]
    assert re.search(r"rank\s*: 0 ", root), root
    assert re.search(rf"exitcode\s*: {code} ", root), root
    assert proc.returncode != 0


needs_torchrun = pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not installed")


@pytest.mark.slow
@needs_torchrun
def test_torchrun_batch_size_not_divisible_is_said_once(ctx):
    out = ctx.tmp / "ddp"
    proc = torchrun(ctx, "--batch-size", "5", out=out)
    assert_said_once_by_rank_0(proc, [r"--batch-size 5 must be a multiple of 2 = 2 torchrun "
                                      r"ranks x --grad-accum 1", r"--batch-size 4 or 6"], 2)
    assert not out.exists()  # refused before the run folder was made


@pytest.mark.slow
@needs_torchrun
def test_torchrun_into_a_locked_run_folder_is_said_once(ctx):
    ctx.diffusion.joinpath(".lock").write_text(
        f'{{"pid": {os.getpid()}, "host": "{socket.gethostname()}"}}')
    before = digest(ctx.diffusion / "last.pt")
    proc = torchrun(ctx, "--resume", "--max-steps", "3", out=ctx.diffusion)
    assert_said_once_by_rank_0(proc, [rf"in use by pid {os.getpid()}", r"\.lock",
                                      r"choose another --out"], 1)
    assert digest(ctx.diffusion / "last.pt") == before
    assert ctx.diffusion.joinpath(".lock").read_text().find(str(os.getpid())) > 0
