"""The local gang runner (issue 11, points 2 and 4) with small real processes: recovery lines
joined into one, SIGTERM/SIGHUP forwarded to the pods within the grace period, and the
parent-death signal that takes a SIGKILLed launcher's children (and grandchildren) along."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from kubetune.contract import names as kn
from kubetune.contract.recovery import resumed_line, worker_failed_line
from kubetune.launch.local.gang import RecoveryRelay

REPO = Path(__file__).resolve().parents[3]


def test_a_recovery_is_one_line_naming_the_pod_its_exit_code_and_the_step(capsys):
    relay = RecoveryRelay()
    relay.feed("demo-train-0", resumed_line(0, 0) + "\n")  # a fresh start: no recovery
    relay.feed("demo-train-1", worker_failed_line("demo-train-1", 0, -9) + "\n")
    relay.feed("demo-train-0", worker_failed_line("demo-train-0", 0, 1) + "\n")  # a consequence
    relay.feed("demo-train-0", resumed_line(8, 1) + "\n")
    assert relay.recoveries == [
        "kubetune: recovery 1: demo-train-1 (local rank 0) exited with code 137 (SIGKILL); the gang restarted from step 8"
    ]
    assert capsys.readouterr().err.strip() == relay.recoveries[0]


# A launcher stand-in: runs the gang runner on two "pods" that trap SIGTERM, save, exit 75.
LAUNCHER = textwrap.dedent("""
    import sys
    from kubetune.launch.local.gang import LocalProcess, run_processes
    pod = (
        "import signal, sys, time, pathlib\\n"
        "def stop(*_):\\n"
        "    time.sleep(0.5); pathlib.Path(sys.argv[1]).write_text('saved'); sys.exit(75)\\n"
        "signal.signal(signal.SIGTERM, stop)\\n"
        "print('ready', flush=True)\\n"
        "time.sleep(600)\\n"
    )
    procs = [LocalProcess(f"p{i}", [sys.executable, "-c", pod, f"{sys.argv[1]}/p{i}"], {}, ".") for i in range(2)]
    sys.exit(run_processes(procs, grace_s=float(sys.argv[2])))
""")


def _start_launcher(tmp_path: Path, grace: float) -> subprocess.Popen[str]:
    # SIGINT as a terminal delivers it: a pytest started in the background by a
    # non-interactive shell has SIGINT ignored, and Python then installs no Ctrl-C handler.
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path), str(grace)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    ready = 0
    while ready < 2:
        line = proc.stdout.readline()
        assert line, "the launcher ended early"
        ready += "ready" in line
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])  # SIGINT: Ctrl-C
def test_sigterm_and_sighup_are_forwarded_and_waited_for(tmp_path, sig):
    launcher = _start_launcher(tmp_path, grace=30)
    children = psutil.Process(launcher.pid).children(recursive=True)
    assert len(children) == 2
    launcher.send_signal(sig)
    out, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 75, out  # the pods committed their checkpoints
    assert f"{signal.Signals(sig).name}: stopping the pods" in out
    assert [(tmp_path / f"p{i}").read_text() for i in range(2)] == ["saved", "saved"]
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_pods_that_ignore_sigterm_are_killed_after_the_grace_period(tmp_path):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"
    script = LAUNCHER.replace("[sys.executable, \"-c\", pod,", "[sys.executable, \"-c\", " + repr(stubborn) + ",")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    while "ready" not in proc.stdout.readline():
        pass
    children = psutil.Process(proc.pid).children(recursive=True)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert time.monotonic() - start < 15
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_the_whole_tree_dies_with_a_sigkilled_launcher(tmp_path):
    """Launcher -> pod (an entrypoint-like child) -> worker (a grandchild, in its own session as
    torchrun starts them): each asks for the parent-death signal, passing its pid down."""
    child = textwrap.dedent(f"""
        import os, subprocess, sys, time
        from kubetune.contract.recovery import die_with_parent
        die_with_parent(expected_parent=int(os.environ[{kn.ENV_DIE_WITH_PARENT!r}]))
        if sys.argv[1] == "pod":
            os.environ[{kn.ENV_DIE_WITH_PARENT!r}] = str(os.getpid())
            subprocess.Popen([sys.executable, __file__, "worker"], start_new_session=True)
        print(sys.argv[1], os.getpid(), flush=True)
        time.sleep(600)
    """)
    script = tmp_path / "child.py"
    script.write_text(child)
    launcher = subprocess.Popen(
        [sys.executable, "-c",
         f"import os, subprocess, sys, time; os.environ[{kn.ENV_DIE_WITH_PARENT!r}] = str(os.getpid()); "
         f"subprocess.Popen([sys.executable, {str(script)!r}, 'pod'], start_new_session=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert launcher.stdout is not None
    pids = {launcher.stdout.readline().split()[0]: None for _ in range(2)}
    assert set(pids) == {"pod", "worker"}
    tree = psutil.Process(launcher.pid).children(recursive=True)
    assert len(tree) == 2
    launcher.kill()
    launcher.wait(10)
    gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
