"""--resume on a damaged run folder: every file of a checkpoint is checked before anything changes;
a damaged checkpoint is named in one line and kept aside, and the run resumes, exactly, from the
newest intact one; with none intact, one clear error and nothing touched."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import grpo as G

SMALL = ["--preset", "demo", "--prompts-per-step", "4", "--group-size", "4",
         "--max-new-tokens", "48", "--save-every", "2", "--log-samples-every", "1",
         "--eval-every", "0", "--steps", "4", "--diag-every", "2", "--diag-prompts", "3"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """4 uninterrupted steps with checkpoints at steps 2 and 4."""
    run = tmp_path_factory.mktemp("damage") / "straight"
    G.main(SMALL + ["--out", str(run)])
    return run


@pytest.fixture
def run(straight, tmp_path) -> Path:
    """A copy of the straight run, to damage."""
    shutil.copytree(straight, tmp_path / "run")
    return tmp_path / "run"


def metrics(run: Path):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(G.TIMING_PREFIXES)} for r in rows]


def tree(folder: Path) -> dict:
    """Every file under folder -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def truncate(path: Path, keep: float = 0.5) -> str:
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:int(size * keep)])
    return f"truncated: {int(size * keep):,} bytes, {size:,} when saved"


def lower_rank(ckpt: Path, r: int, config_too: bool):
    """The adapter cut to rank r (what a checkpoint copied from a run of another --lora-rank
    holds), with a manifest that agrees, so that only the rank checks can tell."""
    tensors = {k: (v[:r] if ".lora_A." in k else v[:, :r]).contiguous()
               for k, v in load_file(ckpt / "adapter_model.safetensors").items()}
    save_file(tensors, ckpt / "adapter_model.safetensors", metadata={"format": "pt"})
    if config_too:
        config = json.loads((ckpt / "adapter_config.json").read_text())
        (ckpt / "adapter_config.json").write_text(json.dumps(config | {"r": r}))
    (ckpt / "manifest.json").unlink()
    G.write_manifest(ckpt)


def flip_a_bit(path: Path):
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # inside the last tensor's data: the header still fits the file
    path.write_bytes(bytes(data))


def old_format_truncated(ckpt: Path) -> str:
    """As written before checkpoints had a manifest: only the header can tell."""
    (ckpt / "manifest.json").unlink()
    size = (ckpt / "adapter_model.safetensors").stat().st_size
    truncate(ckpt / "adapter_model.safetensors")
    return rf"truncated: {size // 2:,} bytes, its header describes {size:,}"


# kind -> damage to a checkpoint, returning (a regex of) what the message must say after FILE:
DAMAGE = {
    "truncated adapter": lambda c: "adapter_model.safetensors: " + truncate(
        c / "adapter_model.safetensors"),
    "truncated optimizer state": lambda c: "trainer_state.safetensors: " + truncate(
        c / "trainer_state.safetensors", 0.9),
    "missing file": lambda c: (c / "trainer_state.json").unlink() or "trainer_state.json: missing",
    "adapter of another rank": lambda c: lower_rank(c, 8, config_too=True) or (
        "adapter_config.json: r=8, the run's --lora-rank is 16"),
    "adapter tensors of another rank": lambda c: lower_rank(c, 8, config_too=False) or (
        r"adapter_model.safetensors: base_model\.model\.\S+\.lora_[AB]\.weight has shape "
        r"\[(8, \d+|\d+, 8)\], not of rank 16"),
    "a flipped bit": lambda c: flip_a_bit(c / "trainer_state.safetensors") or (
        "trainer_state.safetensors: sha256 differs from the one recorded at save time"),
    "truncated, written before manifests": lambda c: "adapter_model.safetensors: "
        + old_format_truncated(c),
    "trainer_state.json cut short": lambda c: "trainer_state.json: " + truncate(
        c / "trainer_state.json"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_checkpoint_is_named_kept_aside_and_the_run_resumes_from_the_previous(
        run, kind, capsys):
    ckpt = run / "checkpoints" / "step_000004"
    message = DAMAGE[kind](ckpt)
    damaged = tree(ckpt)
    G.main(["--resume", str(run), "--steps", "2"])  # resume, and stop at once: nothing to redo
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("damaged checkpoint"))
    assert re.fullmatch(rf"damaged checkpoint {re.escape(str(ckpt))}/{message}.*; kept as "
                        + re.escape(f"{run}/checkpoints/damaged-step_000004"), line), line
    assert f"resuming from {run}/checkpoints/step_000002, the newest intact checkpoint" in out
    assert f"resumed {run} at step 2 from step_000002" in out
    assert tree(run / "checkpoints" / "damaged-step_000004") == damaged  # kept byte for byte
    assert G.latest_checkpoint(run).name == "step_000002"
    for log in G.PER_STEP_LOGS:  # every log cut back to step 2, the rest kept aside
        steps = [json.loads(x)["step"] for x in (run / log).read_text().splitlines()]
        aside = [json.loads(x)["step"]
                 for x in (run / log.replace(".jsonl", ".after-step-2.jsonl")).read_text()
                 .splitlines()]
        assert steps and max(steps) <= 2 and aside and min(aside) > 2, log


def test_resuming_from_the_fallback_checkpoint_is_exact(straight, run, capsys):
    """Step 4's adapter truncated: the run resumes from step 2 and redoes steps 3 and 4 exactly
    as the uninterrupted run did (bitwise equal adapter and metrics)."""
    truncate(run / "checkpoints" / "step_000004" / "adapter_model.safetensors")
    G.main(["--resume", str(run)])
    assert "resuming from" in capsys.readouterr().out
    a, b = (load_file(straight / "checkpoints/step_000004/adapter_model.safetensors"),
            load_file(run / "checkpoints/step_000004/adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(straight) == metrics(run)
    for log in ("diagnostics.jsonl", "samples.jsonl"):
        assert (straight / log).read_text() == (run / log).read_text()
    before = load_file(straight / "checkpoints/step_000002/adapter_model.safetensors")
    assert any(not torch.equal(before[k], a[k]) for k in a)  # steps 3-4 did move the adapter
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "damaged-step_000004", "step_000002", "step_000004"]
    cfg = G.Config(**json.loads((run / "config.json").read_text()))
    G.check_checkpoint(run / "checkpoints" / "step_000004", cfg)  # the new one is intact


def test_a_checkpoint_damaged_again_at_the_same_step_is_kept_beside_the_first(straight, run):
    cfg = G.Config(**json.loads((run / "config.json").read_text()))
    ckpts = run / "checkpoints"
    for again in (False, True):
        if again:  # the resumed run wrote step 4 anew, and it was damaged again
            shutil.copytree(straight / "checkpoints" / "step_000004", ckpts / "step_000004")
        truncate(ckpts / "step_000004" / "trainer_state.safetensors")
        assert G.choose_checkpoint(run, cfg)[0] == ckpts / "step_000002"
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "damaged-step_000004", "damaged-step_000004-2", "step_000002"]


def test_a_checkpoint_written_before_manifests_still_resumes_and_says_so(run, capsys):
    (run / "checkpoints" / "step_000004" / "manifest.json").unlink()
    G.main(["--resume", str(run), "--steps", "4"])
    out = capsys.readouterr().out
    assert (f"{run}/checkpoints/step_000004 has no manifest.json (written before checkpoints had "
            "checksums): its files were checked for completeness, not for altered bytes") in out
    assert f"resumed {run} at step 4 from step_000004" in out and "damaged" not in out


def test_any_change_of_bytes_is_caught_and_only_as_damage(straight, tmp_path):
    """Random bytes overwritten, zeroed or cut off in any file of a checkpoint with a manifest:
    each is reported as DamagedCheckpoint (never another exception, never passed as intact)."""
    import random
    cfg = G.Config(**json.loads((straight / "config.json").read_text()))
    source, rng = straight / "checkpoints" / "step_000004", random.Random(0)
    for case in range(60):
        ckpt = tmp_path / str(case) / "step_000004"
        shutil.copytree(source, ckpt)
        path = ckpt / rng.choice([*G.CHECKPOINT_FILES, G.MANIFEST])
        data = bytearray(path.read_bytes())
        at = rng.randrange(len(data))
        if case % 3 == 0:
            data = data[:at]
        else:
            data[at:at + 8] = bytes(len(data[at:at + 8])) if case % 3 == 1 else rng.randbytes(8)
        if bytes(data) == path.read_bytes():
            continue
        path.write_bytes(bytes(data))
        with pytest.raises(G.DamagedCheckpoint, match=re.escape(str(ckpt))):
            G.check_checkpoint(ckpt, cfg)


def test_no_intact_checkpoint_is_one_error_after_which_nothing_has_changed(run, capsys):
    truncate(run / "checkpoints" / "step_000004" / "adapter_model.safetensors")
    (run / "checkpoints" / "step_000002" / "adapter_config.json").unlink()
    before = tree(run)
    with pytest.raises(SystemExit) as e:
        G.main(["--resume", str(run)])
    assert str(e.value.code).startswith(f"error: no intact checkpoint in {run}/checkpoints "
                                        "(nothing was renamed or deleted): ")
    assert "step_000004/adapter_model.safetensors: truncated" in str(e.value.code)
    assert "step_000002/adapter_config.json: missing" in str(e.value.code)
    assert "\n" not in str(e.value.code)
    assert capsys.readouterr().out == ""  # no configuration dump: the error is the last line
    assert tree(run) == before


def test_a_torn_last_log_line_is_moved_aside(run, capsys):
    """A full disk can cut the last line of a log short: it is past every checkpoint, so resuming
    moves it aside with the other lines past the checkpoint."""
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "accur')
    G.main(["--resume", str(run), "--steps", "4"])
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4]
    assert (run / "metrics.after-step-4.jsonl").read_text() == '{"step": 5, "accur\n'


def test_a_broken_line_before_the_last_is_an_error_naming_file_and_line(run, capsys):
    lines = (run / "samples.jsonl").read_text().splitlines(keepends=True)
    lines[3] = lines[3][:20] + "\n"
    (run / "samples.jsonl").write_text("".join(lines))
    before = tree(run)
    with pytest.raises(SystemExit, match=rf"error: {run}/samples.jsonl:4: not a JSON record"):
        G.main(["--resume", str(run)])
    assert capsys.readouterr().out == ""
    assert tree(run) == before


@pytest.mark.parametrize("text, message", [
    ('{\n  "model": "x",\n  "lora_rank": 16\n  "seed": 0\n}\n',
     r"config\.json:4: not valid JSON \(Expecting ',' delimiter, column 3\)"),
    ('{\n  "model": "x",\n  "lora_ra', r"config\.json:3: not valid JSON \(Unterminated string"),
    ("", r"config\.json:1: not valid JSON \(Expecting value"),
    ('["a list"]', r"config\.json: not a JSON object"),
    ('{"lora_rank": "16"}', r"config\.json: values of the wrong type: lora_rank='16'"),
    ('{"lora_rank": true}', r"config\.json: values of the wrong type: lora_rank=True"),
    ('{"no_such_flag": 1}', r"config\.json: unknown fields \['no_such_flag'\]"),
])
def test_a_broken_config_json_is_one_message_naming_file_and_line(tmp_path, text, message,
                                                                  capsys):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(SystemExit) as e:
        G.main(["--resume", str(tmp_path)])
    assert re.fullmatch(rf"error: --resume {re.escape(str(tmp_path))}: "
                        rf"{re.escape(str(tmp_path))}/{message}.*", e.value.code), e.value.code
    assert "\n" not in e.value.code
    assert capsys.readouterr().out == ""  # nothing else on the screen


# --- the safetensors header check, against the safetensors library -----------------------------

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.uint8, torch.bool]


@st.composite
def tensor_dicts(draw):
    n = draw(st.integers(1, 4))
    return {f"t{i}": torch.zeros(draw(st.lists(st.integers(0, 5), max_size=3)),
                                 dtype=draw(st.sampled_from(DTYPES))) for i in range(n)}


@settings(max_examples=40, deadline=None)
@given(tensors=tensor_dicts(), cut=st.floats(0, 1, exclude_max=True))
def test_the_header_check_reads_what_safetensors_reads_and_rejects_every_truncation(
        tmp_path_factory, tensors, cut):
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    save_file(tensors, path)
    with safe_open(path, "pt") as f:  # the oracle: the library's own reading of the header
        expected = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                    for k in f.keys()}
    got = G.safetensors_header(path)
    assert {k: (shape, dtype) for k, (dtype, shape) in got.items()} == expected
    data = path.read_bytes()
    path.write_bytes(data[:int(cut * len(data))])
    with pytest.raises(G.DamagedCheckpoint):
        G.safetensors_header(path)
    with pytest.raises(Exception):  # noqa: B017 - the library rejects the same file
        load_file(path)
