"""bench/run_gpu.py, the harness of the GPU loan, with fake steps: a failure or a timeout makes the exit status 1,
a step's lines are kept and echoed as they come (a timeout keeps the headline already printed), a timed-out step's
whole process group is stopped, a single-GPU machine skips the multi-GPU step and says so, and the real step list
fits its budget and its 8 files."""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import run_gpu as R  # noqa: E402

PY = sys.executable


def step(name, code: str, limit=20, gpus=1):
    return R.Step(name, limit, [PY, "-c", code], gpus=gpus)


def test_a_failed_or_timed_out_step_makes_the_run_fail_and_keeps_what_it_printed(tmp_path, capsys):
    pid_file = tmp_path / "child.pid"
    sleeper = (f"import os, subprocess, sys, time; print('headline: 1.23 ms/step', flush=True); "
               f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
               f"open({str(pid_file)!r}, 'w').write(str(child.pid)); time.sleep(60)")
    steps = [step("good", "print('PASS  all fine')"),
             step("broken", "import sys; print('FAIL  a check'); sys.exit(3)"),
             step("hangs", sleeper, limit=3),
             step("two_gpus", "print('never')", gpus=2),
             step("after", "print('still runs')")]
    t0 = time.monotonic()
    assert R.run_steps(steps, tmp_path, budget_s=120, gpus=1) == 1
    assert time.monotonic() - t0 < 30
    out = capsys.readouterr().out
    # echoed as they came, and kept in the step's file
    assert "  headline: 1.23 ms/step" in out and "headline: 1.23" in (tmp_path / "hangs.txt").read_text()
    assert "=== broken: FAILED (exit 3)" in out and "=== hangs: TIMED OUT after 3 s" in out
    assert "=== two_gpus: skipped: needs 2 GPUs, this machine has 1" in out and "never" not in out
    assert "=== after: ok" in out
    summary = (tmp_path / "summary.txt").read_text()
    assert "2 of 5 steps failed, timed out or did not run: ['broken', 'hangs']" in summary
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["good.txt", "broken.txt", "hangs.txt", "after.txt", "summary.txt", "child.pid"])
    # the timed-out step's own child was stopped with it (its process group)
    child = int(pid_file.read_text())
    time.sleep(0.5)
    try:
        os.kill(child, 0)
        alive = Path(f"/proc/{child}/stat").read_text().split()[2] != "Z"
    except ProcessLookupError:
        alive = False
    assert not alive


def test_every_step_ok_is_exit_status_0_and_a_spent_budget_is_not(tmp_path, capsys):
    assert R.run_steps([step("a", "print(1)"), step("b", "print(2)")], tmp_path, budget_s=60, gpus=1) == 0
    slow = [step("slow", "import time; time.sleep(3)", limit=30), step("late", "print(3)")]
    assert R.run_steps(slow, tmp_path / "budget", budget_s=R.MIN_STEP_S + 2, gpus=1) == 1
    assert "=== late: NOT RUN: the 17 s budget is spent" in capsys.readouterr().out


def test_the_gpu_step_list_fits_one_loan():
    """Under 6 minutes with every step at its limit on one GPU, at most 8 files on any machine, the most
    important first, every script there; a single GPU skips the data-parallel step."""
    root = Path(R.__file__).resolve().parent.parent
    for gpus in (1, 8):
        steps = R.gpu_steps("cuda", gpus)
        assert len(steps) + 2 <= 8  # + machine.txt and summary.txt
        assert [s.name for s in steps][:3] == ["checks_bf16", "paper_step", "decode"]
        for s in steps:
            scripts = [a for a in s.command if a.endswith(".py")] or [
                w for w in s.command[-1].split() if w.endswith(".py")]
            assert scripts and all((root / p).is_file() for p in scripts), s
    single = [s for s in R.gpu_steps("cuda", 1) if s.gpus <= 1]
    assert sum(s.limit_s for s in single) <= R.BUDGET_S < 360
    assert [s.name for s in R.gpu_steps("cuda", 1) if s.gpus > 1] == ["data_parallel"]


def test_the_shell_script_passes_on_the_exit_status(tmp_path):
    """bash bench/run_gpu.sh is the harness itself (exec): on a machine without a CUDA GPU it stops with one
    clear line and exit status 1, writing only machine.txt."""
    import subprocess
    root = Path(R.__file__).resolve().parent.parent
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU, even on a machine that has one
    done = subprocess.run(["bash", str(root / "bench" / "run_gpu.sh"), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: no CUDA GPU here")
    assert [p.name for p in tmp_path.iterdir()] == ["machine.txt"]


def test_the_cpu_smoke_run_skips_nothing():
    """--device cpu runs its steps (a smoke run that skipped them all would exit 0 having checked nothing)."""
    steps = R.gpu_steps("cpu", 0)
    assert steps and all(s.gpus == 0 for s in steps)
