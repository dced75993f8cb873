"""Data parallel (torchrun, gloo on the CPU): equal to one process,
resume across process counts, faults."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import grpo as G

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--preset", "demo", "--prompts-per-step", "4", "--group-size", "4",
         "--max-new-tokens", "40", "--steps", "4", "--save-every", "2",
         "--log-samples-every", "2", "--eval-every", "0", "--normalize", "batch"]
SGD = ["--optimizer", "sgd", "--lr", "0.125", "--grad-clip", "0"]
# Tolerance between N processes and one. The samples are the same (per-row streams, same tokens) and
# so are the metrics to float rounding; the summed gradient differs by rounding only (another
# summation order, other padding widths per rank). Under SGD the update is linear in it: the two
# runs' updates (final minus initial LoRA weights) agree to UPDATE_RTOL = 1e-5 relative. AdamW
# divides by sqrt(v): a weight whose gradient is at rounding level moves by +-lr either way, so
# there the updates agree to ADAM_RTOL = 1e-3 relative (measured 1.6e-4 on the B matrices).
UPDATE_RTOL, ADAM_RTOL, RTOL, ATOL = 1e-5, 1e-3, 1e-4, 1e-6


def torchrun(args: list[str], n: int = 2, script: str = "grpo.py", timeout: float = 120):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(n), script, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def adapter(ckpt: Path):
    from safetensors.torch import load_file
    return load_file(ckpt / "adapter_model.safetensors")


def metrics(run: Path):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(G.TIMING_PREFIXES)} for r in rows]


def update_of(run: Path) -> torch.Tensor:
    """The run's LoRA weights at its last checkpoint minus the seeded initial ones,
    as one vector."""
    import lora as L
    cfg = G.Config(**json.loads((run / "config.json").read_text()))
    start = L.adapter_state_dict(G.setup(cfg)[0])
    end = adapter(G.latest_checkpoint(run))
    assert start.keys() == end.keys()
    return torch.cat([(end[k] - start[k]).flatten() for k in sorted(end)])


def assert_same_run(a: Path, b: Path, rtol: float = UPDATE_RTOL):
    da, db = update_of(a), update_of(b)
    assert float((da - db).norm()) <= rtol * float(da.norm()), float((da - db).norm() / da.norm())
    ma, mb = metrics(a), metrics(b)
    assert [m["step"] for m in ma] == [m["step"] for m in mb]
    for x, y in zip(ma, mb):
        assert ((x["accuracy"], x["accuracy/hard"], x["completion_len"])
                == (y["accuracy"], y["accuracy/hard"], y["completion_len"]))  # same samples
        for key in ("loss", "grad_norm_preclip", "adv_abs_mean", "entropy"):
            assert x[key] == pytest.approx(y[key], rel=RTOL, abs=ATOL)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    G.main(FLAGS + SGD + ["--out", str(root / "one")])
    done = torchrun(FLAGS + SGD + ["--out", str(root / "two")])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return root, done.stdout


def test_two_processes_draw_the_same_samples_and_end_with_the_same_adapter(runs):
    root, out = runs
    assert "2 processes" in out and out.count("step 4/4") == 1  # rank 0 alone prints and logs
    assert_same_run(root / "one", root / "two")
    samples = lambda run: [json.loads(x)  # noqa: E731
                           for x in (run / "samples.jsonl").read_text().splitlines()]
    # every rank's completions, in global order
    assert samples(root / "one") == samples(root / "two")
    state = json.loads((G.latest_checkpoint(root / "two") / "trainer_state.json").read_text())
    assert state["world_size"] == 2


def test_under_adamw_too(tmp_path):
    flags = FLAGS + ["--steps", "2", "--save-every", "2"]
    G.main(flags + ["--out", str(tmp_path / "one")])
    done = torchrun(flags + ["--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(tmp_path / "one", tmp_path / "two", rtol=ADAM_RTOL)


def test_resume_exactly_on_the_same_number_of_processes(runs, tmp_path):
    root, _ = runs
    run = tmp_path / "two"
    shutil.copytree(root / "two", run)
    shutil.rmtree(run / "checkpoints" / "step_000004")
    done = torchrun(["--resume", str(run)])
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = adapter(G.latest_checkpoint(root / "two")), adapter(G.latest_checkpoint(run))
    differ = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not differ, differ  # the same partition: bit for bit
    assert metrics(root / "two") == metrics(run)


def test_a_checkpoint_of_two_processes_resumes_on_one(runs, tmp_path, capsys):
    """The stated behaviour: any process count resumes any checkpoint, equal within the float
    tolerance, since prompts and sampler streams are defined by the global row."""
    root, _ = runs
    run = tmp_path / "two"
    shutil.copytree(root / "two", run)
    shutil.rmtree(run / "checkpoints" / "step_000004")
    G.main(["--resume", str(run)])
    assert "written by 2 processes, now 1" in capsys.readouterr().out
    assert_same_run(root / "two", run)


def test_a_damaged_checkpoint_is_set_aside_once_and_every_rank_resumes_from_the_same(
        runs, tmp_path):
    """Rank 0 checks the checkpoints and renames the damaged one; every rank loads the one it
    chose (a rank on another checkpoint would pull the summed gradient away: not bit for bit)."""
    root, _ = runs
    run = tmp_path / "two"
    shutil.copytree(root / "two", run)
    weights = run / "checkpoints" / "step_000004" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    done = torchrun(["--resume", str(run)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("damaged checkpoint") == 1, done.stdout
    assert f"resuming from {run}/checkpoints/step_000002" in done.stdout
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "damaged-step_000004", "step_000002", "step_000004"]
    a, b = adapter(G.latest_checkpoint(root / "two")), adapter(G.latest_checkpoint(run))
    differ = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not differ, differ
    assert metrics(root / "two") == metrics(run)


def test_no_intact_checkpoint_stops_every_rank_with_one_message(runs, tmp_path):
    root, _ = runs
    run = tmp_path / "two"
    shutil.copytree(root / "two", run)
    for ckpt in (run / "checkpoints").iterdir():
        (ckpt / "trainer_state.json").unlink()
    t0 = time.time()
    done = torchrun(["--resume", str(run)])
    assert done.returncode != 0 and time.time() - t0 < 60
    out = done.stdout + done.stderr
    assert out.count("error: no intact checkpoint") == 1, out[-3000:]
    assert not list((run / "checkpoints").glob("damaged-*"))


FAILING = '''
import os, sys, time
sys.path.insert(0, os.getcwd())
import grpo as G
real, calls = G.rollout, [0]
def rollout(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 3 and os.environ["RANK"] == "1":
        {action}
    return real(*args, **kwargs)
G.rollout = rollout
G.main(sys.argv[1:])
'''


@pytest.mark.parametrize("action, message", [
    ("raise RuntimeError('rank 1 broke')",
     "error (rank 1): this process failed: RuntimeError: rank 1 broke"),
    ("time.sleep(600)",
     "error (rank 0): another process of this data-parallel run failed or stopped answering "
     "within --dist-timeout-s 5"),
])
def test_a_failing_or_hanging_rank_stops_every_rank_with_the_checkpoint_intact(
        tmp_path, action, message):
    """The failing rank reports its own error (with its traceback), not another's; a rank whose
    peer failed or hung says so."""
    script = tmp_path / "failing.py"
    script.write_text(FAILING.replace("{action}", action))
    run = tmp_path / "run"
    t0 = time.time()
    done = torchrun(FLAGS + ["--out", str(run), "--save-every", "1", "--dist-timeout-s", "5"],
                    script=str(script))
    output = done.stdout + done.stderr
    assert done.returncode != 0 and time.time() - t0 < 100
    assert message in output
    assert "error (rank 1): another process" not in output
    if "raise" in action:
        assert "Traceback" in output and "rank 1 broke" in output
    last = G.latest_checkpoint(run)
    assert last.name == "step_000002"  # steps 1 and 2 finished; the third never did
    json.loads((last / "trainer_state.json").read_text())
    assert adapter(last)


def test_prompts_per_step_not_divisible_by_the_processes_is_refused_before_any_work(
        monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit):
        G.parse_args(["--preset", "demo", "--prompts-per-step", "16"])
    assert "--prompts-per-step 16 is not divisible by the 3 processes" in capsys.readouterr().err


def test_a_dry_run_under_torchrun(tmp_path):
    """--dry-run's temporary folder is broadcast from rank 0; on CUDA each rank must be on its own
    GPU before that first collective (World.from_env, below)."""
    done = torchrun(["--preset", "demo", "--dry-run", "--prompts-per-step", "2", "--group-size",
                     "2", "--max-new-tokens", "16", "--eval-every", "0"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("dry run ok") == 1 and "2 processes" in done.stdout


def test_each_process_takes_its_gpu_before_the_group_and_any_collective(monkeypatch):
    """torchrun with NCCL, faked on the CPU: LOCAL_RANK 1 sets cuda:1 as the current device
    before init_process_group (NCCL's collectives, the dry run's broadcast included, run on the
    current device, otherwise GPU 0 for every process)."""
    import parallel as P
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(P.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(P.dist, "init_process_group",
                        lambda backend, **kw: calls.append(("init", backend)))
    monkeypatch.setattr(P.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(P.dist, "get_world_size", lambda: 2)
    world = P.World.from_env("cuda", 60)
    assert calls == [("set_device", 1), ("init", "nccl")]
    assert (world.rank, world.size, world.local_rank) == (1, 2, 1)


def test_a_failed_collective_is_a_peer_failure(monkeypatch):
    import parallel as P

    def broken(*args, **kwargs):
        raise RuntimeError("Connection closed by peer [127.0.0.1]:1234")

    monkeypatch.setattr(P.dist, "all_reduce", broken)
    monkeypatch.setattr(P.dist, "all_gather_object", broken)
    world = P.World(rank=0, size=2)
    with pytest.raises(P.PeerFailed, match="sum_tensor across 2 processes failed: Connection closed"):
        world.sum_tensor(torch.zeros(3))
    with pytest.raises(P.PeerFailed, match="gather"):
        world.gather({"x": 1})
