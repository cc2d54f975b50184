"""`kubetune run --local`'s live progress (issue 15): the pod's progress lines (made by the
contract's own formatter, as the workload prints them) through the real `ProgressView` and the
real local gang runner: throttled plain lines when stdout is not a terminal, a tqdm bar redrawn
in place under a real pseudo-terminal (stdlib `pty`)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import textwrap

import pytest

from kubetune.contract.names import ENV_PROGRESS_INTERVAL
from kubetune.contract.progress import format_progress, parse_progress
from kubetune.launch.local.progress_view import ProgressView


def _line(step: int, total: int = 40) -> str:
    record = {"step": step, "epoch": step / 20, "loss": 1.0 / step, "learning_rate": 1e-4,
              "samples_per_second": 48.0, "eta_seconds": (total - step) * 2}
    return format_progress(record, total) + "\n"


# A "pod": prints a start line, 40 progress lines as the workload formats them, an evaluation
# line in the middle, and a last line; DELAY seconds between steps.
POD = textwrap.dedent("""
    import sys, time
    from kubetune.contract.progress import format_progress
    delay = float(sys.argv[1])
    print("kubetune: starting", flush=True)
    for step in range(1, 41):
        record = {"step": step, "epoch": step / 20, "loss": 1.0 / step, "samples_per_second": 48.0,
                  "eta_seconds": (40 - step) * 2}
        print(format_progress(record, 40), flush=True)
        if step == 20:
            print("kubetune: checkpoint committed: step-000020", flush=True)
        time.sleep(delay)
    print("kubetune: model committed", flush=True)
""")


def test_the_progress_line_parses_back_to_the_pods_numbers():
    p = parse_progress(_line(12))
    assert p == {"step": 12, "max_steps": 40, "epoch": 0.6, "loss": round(1 / 12, 4), "samples_per_second": 48.0,
                 "eta_seconds": 56}
    assert parse_progress("kubetune: checkpoint committed: step-000012") is None
    assert parse_progress(format_progress({"step": 3, "epoch": 0.1}, 9))["loss"] is None  # an eval-only line


def test_plain_output_is_throttled_and_keeps_first_last_and_context():
    out, now = io.StringIO(), [0.0]
    view = ProgressView("job-train", out=out, tty=False, interval_s=5.0, clock=lambda: now[0])
    for step in range(1, 41):  # one step every 0.5 s: 20 s of training
        now[0] = (step - 1) * 0.5
        view.feed(_line(step))
        if step == 23:
            view.feed("kubetune: checkpoint committed: step-000023\n")
    view.close()
    printed = [parse_progress(line)["step"] for line in out.getvalue().splitlines() if parse_progress(line)]
    assert printed == [1, 11, 21, 24, 34, 40]  # every 5 s, the first after another line, the last
    assert "kubetune: checkpoint committed: step-000023\n" in out.getvalue()  # other lines: at once


def test_plain_output_prints_the_held_back_line_when_the_stage_ends():
    out = io.StringIO()
    view = ProgressView("job-train", out=out, tty=False, interval_s=5.0, clock=lambda: 0.0)
    for step in (1, 2, 3):
        view.feed("[job-train-0] " + _line(step))  # a gang's prefixed lines
    view.close()
    lines = out.getvalue().splitlines()
    assert [parse_progress(x.split("] ", 1)[1])["step"] for x in lines] == [1, 3]
    assert all(x.startswith("[job-train-0] kubetune: step ") for x in lines)


# The launcher's side: run_processes over one local "pod" running POD.
RUNNER = textwrap.dedent("""
    import os, sys
    from kubetune.launch.local.gang import LocalProcess, run_processes
    pod = LocalProcess("demo-train-0", [sys.executable, "-c", sys.argv[1], sys.argv[2]], dict(os.environ), os.getcwd())
    sys.exit(run_processes([pod]))
""")


def _runner(delay: float) -> list[str]:
    return [sys.executable, "-c", RUNNER, POD, str(delay)]


def test_a_pod_piped_to_a_non_terminal_prints_throttled_plain_lines():
    result = subprocess.run(_runner(0.0), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    steps = [parse_progress(x)["step"] for x in lines if parse_progress(x)]
    assert steps[0] == 1 and steps[-1] == 40 and 21 in steps  # first, last, first after the checkpoint line
    assert len(steps) <= 5, lines  # 40 steps within a second: not one line per step
    assert lines[0] == "kubetune: starting" and lines[-1] == "kubetune: model committed"
    assert "\r" not in result.stdout and "\x1b" not in result.stdout  # no terminal drawing in a log


def test_a_pod_on_a_terminal_draws_one_live_bar():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 120 columns
    proc = subprocess.Popen(_runner(0.02), stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer closed it
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(30) == 0
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert "demo-train: 100%|" in screen and "40/40" in screen
    assert "40/40 | epoch 2.00 | loss 0.0250 | 48.0 samples/s | eta 0:00:00" in screen
    assert screen.count("\r") >= 10  # redrawn in place, not a line per step
    assert sum(1 for line in screen.splitlines() if "kubetune: step " in line) == 0  # the raw lines became the bar
    assert "kubetune: checkpoint committed: step-000020" in screen and "kubetune: model committed" in screen


@pytest.mark.parametrize("setting, every_line", [("0", True), ("", False), ("nan", False), ("-1", False), ("soon", False)])
def test_the_user_can_ask_for_every_plain_line(monkeypatch, setting, every_line):
    """KUBETUNE_PROGRESS_INTERVAL=0 keeps every progress line (log collectors); anything that is
    not a number >= 0 leaves the default throttle."""
    monkeypatch.setenv(ENV_PROGRESS_INTERVAL, setting)
    out = io.StringIO()
    view = ProgressView("job-train", out=out, tty=False, clock=lambda: 0.0)  # no time passes
    for step in range(1, 11):
        view.feed(f"kubetune: step {step}/10 | epoch 0.10 | loss 0.5000 | lr 1.00e-04\n")
    steps = [parse_progress(line)["step"] for line in out.getvalue().splitlines() if parse_progress(line)]
    assert steps == (list(range(1, 11)) if every_line else [1, 10])


def test_a_resumed_stages_bar_starts_at_its_step_with_the_loss():
    """Resumed at step 20 of 40, the pod's first line is its resume line (step and last loss,
    `workload.trainer.callbacks.resumed_progress`): the bar's very first frame is 20/40 with the
    loss, never 0/40 then a jump (issue 28)."""
    out = io.StringIO()
    view = ProgressView("job-train", out=out, tty=True)
    view.feed("kubetune: resuming from /store/runs/job/checkpoints/step-000020\n")
    view.feed(format_progress({"step": 20, "epoch": 1.0, "loss": 0.5}, 40) + "\n")
    first_frame = out.getvalue()
    view.feed(_line(21))
    view.close()
    assert "20/40 | epoch 1.00 | loss 0.5000 | eta ?" in first_frame, first_frame
    assert " 0/40" not in out.getvalue() and "21/40 | epoch 1.05 | loss 0.0476" in out.getvalue()
