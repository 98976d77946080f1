"""Hostile inputs to the command line (issue 15): every case ends in one line that names its
cause, with exit code 2 (bad usage) or 1 (failure), and loses no data.

``CASES`` is the table: an id, a function that prepares the case in a :class:`Ctx` and returns
the argv, the expected exit code, regexes the one-line message must match, and a check run
afterwards (what must still be intact). Everything runs in-process on the tiny preset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oasis_lib.__main__ import main
from oasis_lib.checkpoint import load_checkpoint
from oasis_lib.data import image_dir, mask_dir

TINY = ["--preset", "tiny", "--no-progress"]
SEGMENTER = Path(__file__).resolve().parents[2] / "checkpoints" / "segmenter_demo64.safetensors"


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_root) -> Path:
    """A tiny run of 12 steps = 1 epoch of 3 (finished), its export, and the demo data."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", "--data-root", str(demo_root), *TINY, "--out", str(run),
                 "--max-steps", "12", "--epochs", "3", "--checkpoint-every", "4"]) == 0
    assert main(["export", "--checkpoint", str(run / "last.pt"),
                 "--out", str(run.parent / "run.safetensors")]) == 0
    return run


@dataclass
class Ctx:
    tmp: Path
    demo: Path
    run: Path  # a private copy of the trained run
    export: Path
    fake: Path | None = None  # a fake OASIS tree (write_fake_split), on demand
    protected: dict | None = None  # path -> digest that must not change

    def protect(self, *paths: Path) -> None:
        self.protected = {**(self.protected or {}), **{p: digest(p) for p in paths}}

    def train(self, *extra: str, out: Path | None = None) -> list[str]:
        return ["train", "--data-root", str(self.demo), *TINY, "--out", str(out or self.run),
                *extra]

    def sample(self, *extra: str) -> list[str]:
        return ["sample", "--checkpoint", str(self.export), "--steps", "2", "--n", "2",
                "--no-progress", "--out", str(self.tmp / "s.png"), *extra]


def _fake(ctx: Ctx, write_split) -> Path:
    root = ctx.tmp / "fake"
    for split, cases in (("train", {1: 3, 2: 3}), ("validate", {402: 3}), ("test", {441: 3})):
        write_split(root, split, cases)
    ctx.fake = root
    return root


def _summary(ctx: Ctx) -> list[str]:
    return ["summary", "--data-root", str(ctx.fake), "--out", str(ctx.tmp / "fig")]


# ------------------------------------------------------------------ case builders
def evil_checkpoint(ctx: Ctx) -> list[str]:
    path = ctx.tmp / "evil.pt"
    torch.save({"model": {}, "config": {}, "x": Path("/")}, path)  # a pickled class
    return ctx.sample("--checkpoint", str(path))


def empty_checkpoint(ctx: Ctx) -> list[str]:
    (ctx.tmp / "empty.pt").touch()
    return ctx.sample("--checkpoint", str(ctx.tmp / "empty.pt"))


def truncated_checkpoint(ctx: Ctx) -> list[str]:
    (ctx.tmp / "cut.pt").write_bytes((ctx.run / "last.pt").read_bytes()[:5000])
    return ctx.sample("--checkpoint", str(ctx.tmp / "cut.pt"))


def export_over_input(ctx: Ctx) -> list[str]:
    ctx.protect(ctx.run / "last.pt")
    return ["export", "--checkpoint", str(ctx.run / "last.pt"), "--out", str(ctx.run / "last.pt")]


def export_over_best(ctx: Ctx) -> list[str]:
    ctx.protect(ctx.run / "best.pt")
    return ["export", "--checkpoint", str(ctx.run / "last.pt"), "--out", str(ctx.run / "best.pt")]


def export_over_disguised_checkpoint(ctx: Ctx) -> list[str]:
    disguised = ctx.tmp / "weights.safetensors"
    shutil.copy(ctx.run / "last.pt", disguised)
    ctx.protect(disguised)
    return ["export", "--checkpoint", str(ctx.run / "last.pt"), "--out", str(disguised)]


def resume_changed(*flags: str):
    def build(ctx: Ctx) -> list[str]:
        ctx.protect(ctx.run / "last.pt")
        return ctx.train("--resume", "--max-steps", "14", *flags)
    return build


def held_lock(ctx: Ctx) -> list[str]:
    # A live process of this host holds the lock: our parent (pytest's own parent shell).
    (ctx.run / ".lock").write_text(f'{{"pid": {os.getppid()}, "host": "{os.uname().nodename}"}}')
    ctx.protect(ctx.run / "last.pt")
    return ctx.train("--resume", "--max-steps", "14")


def foreign_lock(ctx: Ctx) -> list[str]:
    (ctx.run / ".lock").write_text('{"pid": 1, "host": "another-machine"}')
    ctx.protect(ctx.run / "last.pt")
    return ctx.train("--resume", "--max-steps", "14")


def bad_png(kind: str):
    """A fake tree with one bad file in the train images (or masks)."""
    def build(ctx: Ctx, write_split) -> list[str]:
        root = _fake(ctx, write_split)
        img = image_dir(root, "train") / "case_002_slice_1.nii.png"
        seg = mask_dir(root, "train") / "seg_002_slice_1.nii.png"
        if kind == "empty":
            img.write_bytes(b"")
        elif kind == "truncated":
            img.write_bytes(img.read_bytes()[:40])
        elif kind == "size":
            Image.new("L", (16, 16)).save(img)
            Image.new("L", (16, 16)).save(seg)
        elif kind == "first-size":  # the odd one is the first file: it must be the one named
            Image.new("L", (16, 16)).save(image_dir(root, "train") / "case_001_slice_0.nii.png")
        elif kind == "1bit-mask":
            Image.new("1", (8, 8)).save(seg)
        elif kind == "12bit":
            Image.fromarray(np.full((8, 8), 3000, np.uint16)).save(img)
        elif kind == "mask-values":
            Image.fromarray(np.full((8, 8), 84, np.uint8)).save(seg)
        elif kind == "jpeg":
            Image.new("L", (8, 8)).save(img, format="JPEG")
        return _summary(ctx)
    return build


# id, build, exit code, message regexes, expect no file at
CASES = [
    ("sample-n-0", lambda c: c.sample("--n", "0"), 2, [r"--n must be >= 1"]),
    ("sample-unknown-ext", lambda c: c.sample("--out", str(c.tmp / "s.xyz")), 2,
     [r"s\.xyz", r"unknown extension '\.xyz'", r"\.png"]),
    ("sample-out-is-folder", lambda c: c.sample("--out", str(c.tmp)), 2, [r"is a folder"]),
    ("sample-ddpm-steps", lambda c: c.sample("--sampler", "ddpm"), 2,
     [r"ddpm always runs all T steps", r"--steps 2 would be ignored"]),
    ("sample-eta-dpm", lambda c: c.sample("--sampler", "dpm++2m", "--eta", "0.5"), 2,
     [r"--eta is only read by --sampler ddim", r"dpm\+\+2m"]),
    ("sample-eta-range", lambda c: c.sample("--eta", "2"), 2, [r"--eta must be in \[0, 1\]"]),
    ("sample-steps-over-T", lambda c: c.sample("--steps", "5000"), 2, [r"more than .*T=1000"]),
    ("sample-huge-n", lambda c: c.sample("--n", "100000000"), 2, [r"GiB", r"--n \d+ or less"]),
    ("sample-missing-ckpt", lambda c: c.sample("--checkpoint", str(c.tmp / "no.pt")), 2,
     [r"no\.pt does not exist"]),
    ("sample-ckpt-ext", lambda c: c.sample("--checkpoint", str(c.tmp / "w.bin")), 2,
     [r"w\.bin: unknown extension"]),
    ("sample-evil-ckpt", evil_checkpoint, 1, [r"evil\.pt", r"pickled Python objects"]),
    ("sample-empty-ckpt", empty_checkpoint, 1, [r"empty\.pt", r"empty \(0 bytes\)"]),
    ("sample-truncated-ckpt", truncated_checkpoint, 1, [r"cut\.pt", r"truncated"]),
    ("export-over-input", export_over_input, 2, [r"last\.pt is the input file itself"]),
    ("export-over-best", export_over_best, 2, [r"best\.pt is a training checkpoint"]),
    ("export-over-disguised", export_over_disguised_checkpoint, 2,
     [r"weights\.safetensors is a training checkpoint"]),
    ("export-pt-out", lambda c: ["export", "--checkpoint", str(c.run / "last.pt"), "--out",
                                 str(c.tmp / "model.pt")], 2, [r"model\.pt: unknown extension"]),
    ("export-from-export", lambda c: ["export", "--checkpoint", str(c.export), "--out",
                                      str(c.tmp / "x.safetensors")], 2,
     [r"already a \.safetensors export"]),
    ("train-max-steps-0", lambda c: c.train("--max-steps", "0", out=c.tmp / "r0"), 2,
     [r"--max-steps must be >= 1, got 0"]),
    ("train-epochs-0", lambda c: c.train("--epochs", "0", out=c.tmp / "r0"), 2,
     [r"--epochs must be >= 1"]),
    ("train-lr-inf", lambda c: c.train("--lr", "inf", out=c.tmp / "r0"), 2,
     [r"--lr must be a finite number > 0, got inf"]),
    ("train-lr-negative", lambda c: c.train("--lr", "-1", out=c.tmp / "r0"), 2, [r"--lr must"]),
    ("train-ema-1", lambda c: c.train("--ema-decay", "1", out=c.tmp / "r0"), 2,
     [r"--ema-decay must be in \[0, 1\)"]),
    ("train-out-is-file", lambda c: c.train(out=c.export), 2, [r"run\.safetensors is a file"]),
    ("train-batch-over-split",  # the train split only (test held out): 2 cases x 32
     lambda c: c.train("--batch-size", "500", "--max-steps", "2", out=c.tmp / "r0"), 2,
     [r"batch_size 500 is larger than the training set \(64 slices\)"]),
    ("train-batch-over-memory", lambda c: c.train("--batch-size", "10000000", out=c.tmp / "r0"),
     2, [r"--batch-size 10000000 at 32x32 needs at least .* GiB"]),
    ("train-image-size-odd", lambda c: c.train("--image-size", "30", out=c.tmp / "r0"), 2,
     [r"30"]),
    ("train-existing-run", lambda c: c.train("--max-steps", "14"), 2,
     [r"already holds a run", r"--resume"]),
    ("train-resume-nothing", lambda c: c.train("--resume", out=c.tmp / "r0"), 2,
     [r"no checkpoint at .*r0/last\.pt"]),
    ("train-resume-lr", resume_changed("--lr", "0.01"), 2,
     [r"lr: checkpoint 0\.0002, now 0\.01", r"last\.pt"]),
    ("train-resume-batch-and-size", resume_changed("--batch-size", "4", "--image-size", "16"), 2,
     [r"batch_size: checkpoint 8, now 4", r"image_size: checkpoint 32, now 16"]),
    ("train-resume-schedule", resume_changed("--schedule", "linear"), 2,
     [r"diffusion\.schedule: checkpoint 'cosine', now 'linear'"]),
    ("train-resume-data-root", resume_changed("--data-root", "/elsewhere"), 2,
     [r"data_root: checkpoint .*, now '/elsewhere'", r"--override data_root"]),
    ("train-resume-preset", resume_changed("--preset", "cpu"), 2,
     [r"preset: checkpoint 'tiny', now 'cpu'"]),
    ("train-resume-grad-accum", resume_changed("--grad-accum", "2"), 2,  # (once silently
     [r"grad_accum: checkpoint 1, now 2"]),                              # dropped)
    ("train-resume-adam-betas", resume_changed("--adam-betas", "0.95", "0.999"), 2,
     [r"adam_betas: checkpoint \(0\.9, 0\.999\), now \(0\.95, 0\.999\)"]),
    ("train-override-unsafe", lambda c: c.train("--resume", "--override", "lr"), 2,
     [r"cannot override \['lr'\]"]),
    ("train-locked", held_lock, 1, [r"in use by pid \d+", r"\.lock", r"another --out"]),
    ("train-locked-elsewhere", foreign_lock, 1, [r"another-machine", r"delete .*\.lock"]),
    ("summary-missing-root", lambda c: ["summary", "--data-root", str(c.tmp / "nope")], 1,
     [r"data root .*nope .*does not exist"]),
    ("summary-root-is-a-split", lambda c: ["summary", "--data-root",
                                           str(image_dir(c.demo, "train"))], 1,
     [r"keras_png_slices_train is itself a split folder", r"the folder that holds it"]),
    ("sample-segmenter-ckpt", lambda c: c.sample("--checkpoint", str(SEGMENTER)), 1,
     [r"segmenter_demo64\.safetensors holds a tissue_segmenter, not a diffusion model"]),
    pytest.param("sample-device-cuda", lambda c: c.sample("--device", "cuda"), 2,
                 [r"--device cuda: .*is_available\(\) is False"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA"),
                 id="sample-device-cuda"),
    ("make-demo-zero-cases", lambda c: ["make-demo", "--out", str(c.tmp / "d"), "--cases", "0",
                                        "1", "1"], 2, [r"--cases needs at least 1 case"]),
    ("evaluate-n-1", lambda c: ["evaluate", "--n", "1"], 2, [r"--n must be >= 2"]),
    ("segmenter-out-pt", lambda c: ["train-segmenter", "--out", str(c.run / "last.pt")], 2,
     [r"last\.pt is a training checkpoint"]),
]

DATA_CASES = [
    ("empty", 1, [r"case_002_slice_1\.nii\.png is empty \(0 bytes\)"]),
    ("truncated", 1, [r"case_002_slice_1\.nii\.png is (truncated|not a valid PNG)"]),
    ("size", 1, [r"most \(5\) are 8x8, but case_002_slice_1\.nii\.png is 16x16"]),
    ("first-size", 1, [r"case_001_slice_0\.nii\.png is 16x16"]),
    ("1bit-mask", 1, [r"seg_002_slice_1\.nii\.png is a 1-bit"]),
    ("12bit", 1, [r"case_002_slice_1\.nii\.png .* reach only 3000 of 65535"]),
    ("mask-values", 1, [r"seg_002_slice_1\.nii\.png: mask pixel values 84"]),
    ("jpeg", 1, [r"case_002_slice_1\.nii\.png is a JPEG file"]),
]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


def _assert_one_line(err: str, code: int, patterns: list[str]) -> str:
    from conftest import assert_error_line

    return assert_error_line(err, patterns)


@pytest.fixture
def ctx(tmp_path, trained, demo_root) -> Ctx:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    return Ctx(tmp=tmp_path, demo=demo_root, run=run, export=trained.parent / "run.safetensors")


PARAMS = [c if hasattr(c, "marks") else pytest.param(*c, id=c[0]) for c in CASES]


@pytest.mark.parametrize(("case", "build", "code", "patterns"), PARAMS)
def test_cli_case(case, build, code, patterns, ctx, capsys):
    before = load_checkpoint(ctx.run / "last.pt")["step"]
    got, err = _run(build(ctx), capsys)
    assert got == code, err
    _assert_one_line(err, code, patterns)
    for path, d in (ctx.protected or {}).items():
        assert digest(path) == d, f"{path} changed"
    assert load_checkpoint(ctx.run / "last.pt")["step"] == before
    assert not (ctx.tmp / "s.png").exists()  # nothing sampled before the refusal
    assert not (ctx.tmp / "r0" / "last.pt").exists()  # no untrained checkpoint written


@pytest.mark.parametrize(("kind", "code", "patterns"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_summary_refuses_what_the_loader_refuses(kind, code, patterns, ctx, write_split, capsys):
    got, err = _run(bad_png(kind)(ctx, write_split), capsys)
    assert got == code, err
    _assert_one_line(err, code, patterns)


# ------------------------------------------------------------------ behaving correctly
def test_bad_flags_fail_before_any_compute_and_debug_shows_the_traceback(ctx, capsys):
    code, err = _run([*ctx.sample("--n", "0"), "--debug"], capsys)
    assert code == 2
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("error: --n")


def test_a_finished_run_says_so_and_trains_no_further(ctx, capsys):
    before = digest(ctx.run / "last.pt")
    assert main(ctx.train("--resume")) == 0  # length (max_steps 4) stored with the run
    assert "is already finished: it reached max_steps=12 (step 12)" in capsys.readouterr().out
    assert digest(ctx.run / "last.pt") == before


def test_resume_takes_length_from_flags_and_override_allows_a_moved_data_root(ctx, capsys):
    moved = ctx.tmp / "moved"
    shutil.copytree(ctx.demo, moved)
    assert main(ctx.train("--resume", "--max-steps", "14", "--data-root", str(moved),
                          "--override", "data_root")) == 0
    ckpt = load_checkpoint(ctx.run / "last.pt")
    assert ckpt["step"] == 14
    assert ckpt["config"]["data_root"] == str(moved)


def test_export_writes_only_what_sample_reads(ctx, capsys):
    out = ctx.tmp / "shared.safetensors"
    assert main(["export", "--checkpoint", str(ctx.run / "best.pt"), "--out", str(out)]) == 0
    assert main([*ctx.sample("--checkpoint", str(out))]) == 0
    assert (ctx.tmp / "s.png").is_file()
    assert not list(ctx.tmp.glob(".*export*"))  # no temporary file left


def test_summary_checks_every_file_and_reads_16_bit_and_colour_variants(ctx, write_split,
                                                                         capsys):
    root = _fake(ctx, write_split)
    img = image_dir(root, "train") / "case_002_slice_1.nii.png"
    eight = np.array(Image.open(img))
    Image.fromarray(eight.astype(np.uint16)).save(img)  # 8-bit values in a 16-bit file
    rgb = image_dir(root, "train") / "case_001_slice_2.nii.png"
    grey = np.array(Image.open(rgb))
    Image.fromarray(np.dstack([grey] * 3)).save(rgb)
    with pytest.warns(UserWarning, match="not 8-bit grey"):
        assert main(_summary(ctx)) == 0
    from oasis_lib.data import load_split

    with pytest.warns(UserWarning, match="not 8-bit grey"):
        ds = load_split("train", root, image_size=None, augment=False)
    assert torch.equal(ds.images[4], torch.from_numpy(eight))  # read as 8-bit, not black
    assert torch.equal(ds.images[2], torch.from_numpy(grey))


def test_a_stale_lock_and_a_torn_log_do_not_confuse_the_next_run(ctx, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (ctx.run / ".lock").write_text(f'{{"pid": {dead}, "host": "{os.uname().nodename}"}}')
    with open(ctx.run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "loss": 0.')  # killed mid-write
    (ctx.run / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match=rf"left by pid {dead} .* no longer running"):
        assert main(ctx.train("--resume", "--max-steps", "14")) == 0
    assert load_checkpoint(ctx.run / "last.pt")["step"] == 14
    assert not (ctx.run / ".lock").exists()  # released at the end
    assert not (ctx.run / ".last.pt.abc123.tmp").exists()
    from oasis_lib.training.run_dir import read_jsonl

    steps = [r["step"] for r in read_jsonl(ctx.run / "metrics.jsonl") if "loss" in r]
    assert steps == sorted(set(steps))  # no torn or repeated record


def test_a_crash_before_the_first_checkpoint_is_moved_aside(ctx, capsys):
    fresh = ctx.tmp / "fresh"
    fresh.mkdir()
    (fresh / "metrics.jsonl").write_text('{"step": 10, "loss": 1.0}\n')
    with pytest.warns(UserWarning, match="moved them to"):
        assert main(ctx.train("--max-steps", "2", out=fresh)) == 0
    (orphans,) = fresh.glob("orphaned-*")
    assert (orphans / "metrics.jsonl").read_text() == '{"step": 10, "loss": 1.0}\n'
    from oasis_lib.training.run_dir import read_jsonl

    assert all(r["step"] <= 2 for r in read_jsonl(fresh / "metrics.jsonl"))


def test_a_diverging_run_stops_and_best_is_never_diverged(ctx, capsys):
    out = ctx.tmp / "hot"
    code, err = _run(ctx.train("--lr", "1e9", "--max-steps", "40", "--checkpoint-every", "2",
                               out=out), capsys)
    assert code == 1, err
    line = _assert_one_line(err, code, [r"diverged at step \d+|NaN|non-finite"])
    good = load_checkpoint(out / "last.pt") if (out / "last.pt").exists() else None
    if good is not None:
        assert str(out / "last.pt") in line
        for t in good["model"].values():
            assert torch.isfinite(t).all()
    if (out / "best.pt").exists():
        best = load_checkpoint(out / "best.pt")
        assert best["best_val_loss"] < 10
        assert all(torch.isfinite(t).all() for t in best["ema"]["model"].values())


SIGTERM_RUN = textwrap.dedent("""
    import sys, time
    import oasis_lib.training.trainer as tr
    from oasis_lib.__main__ import main
    step = tr.Trainer.train_step
    def slow_step(self, x0):
        if self.step == 3:
            print("at step 3", flush=True)
            time.sleep(3)  # the test sends the signal now; the step then completes
        return step(self, x0)
    tr.Trainer.train_step = slow_step
    sys.exit(main({argv!r}))
""")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_save_at_the_next_step_and_say_where(ctx, signum):
    out = ctx.tmp / "killed"
    code = SIGTERM_RUN.format(argv=ctx.train("--max-steps", "50", "--checkpoint-every", "100",
                                             out=out))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    while (line := proc.stdout.readline()) and line.strip() != "at step 3":
        pass  # (train first prints its precision line)
    assert line.strip() == "at step 3"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped: "), err
    assert signal.Signals(signum).name in last
    assert str(out / "last.pt") in last
    assert "--resume" in last
    assert "Traceback" not in err
    assert load_checkpoint(out / "last.pt")["step"] == 4  # the step in flight completed
    assert not (out / ".lock").exists()
