"""Shared fixtures for the Python client compatibility suite.

Every test drives a real `sluice serve` process (the binary named by $SLUICE_BIN, default
`<repo>/target/debug/sluice`) on a free loopback port with its own data directory. The
`broker` fixture is a factory: `b = broker(overrides={...}, durability="fsync")` starts one
and waits until it accepts connections; everything it started is torn down after the test,
and a failing test gets the tail of every broker log attached to its report.
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLUICE_BIN = os.environ.get("SLUICE_BIN") or str(REPO / "target" / "debug" / "sluice")

START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond, timeout, what, interval=0.05):
    """Poll `cond()` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Broker:
    def __init__(self, data_dir, log_path, overrides=None, durability=None, node_id=1,
                 advertised=None, extra_args=None):
        if not os.access(SLUICE_BIN, os.X_OK):
            pytest.fail(f"sluice binary not found or not executable: {SLUICE_BIN} (set SLUICE_BIN)")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = Path(log_path)
        self.overrides = dict(overrides or {})
        self.durability = durability
        self.node_id = node_id
        # `host:port` the broker advertises instead of its listener (e.g. a proxy in front).
        self.advertised = advertised
        # More `serve` arguments (a cluster node's `--controller-listen` and `--voters`).
        self.extra_args = list(extra_args or [])
        self.port = free_port()
        self.host = "127.0.0.1"
        self.proc = None
        self._log = None
        self.starts = 0

    @property
    def bootstrap(self):
        return f"{self.host}:{self.port}"

    def argv(self):
        argv = [
            SLUICE_BIN, "serve",
            "--listen", self.bootstrap,
            "--data-dir", str(self.data_dir),
            "--node-id", str(self.node_id),
        ]
        if self.advertised:
            argv += ["--advertised-listener", self.advertised]
        if self.durability:
            argv += ["--durability", self.durability]
        for key, value in self.overrides.items():
            argv += ["--override", f"{key}={value}"]
        return argv + self.extra_args

    def start(self):
        self.spawn()
        self.wait_accepting()
        return self

    def spawn(self):
        """Starts the process without waiting for it to accept clients."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.starts += 1
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n===== start #{self.starts}: {' '.join(self.argv())}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )
        return self

    def _accepts(self):
        if self.proc.poll() is not None:
            raise AssertionError(
                f"broker exited with code {self.proc.returncode} during startup\n{self.log_tail()}"
            )
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def wait_accepting(self):
        try:
            wait_until(self._accepts, START_TIMEOUT, f"broker to accept on {self.bootstrap}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- broker log tail ---\n{self.log_tail()}") from None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self):
        """Graceful shutdown (SIGTERM); the broker must exit 0 within STOP_TIMEOUT."""
        assert self.running(), "broker not running"
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._close_log()
            raise AssertionError(
                f"broker did not exit within {STOP_TIMEOUT}s of SIGTERM\n{self.log_tail()}"
            )
        self._close_log()
        assert rc == 0, f"broker exited with code {rc} after SIGTERM\n{self.log_tail()}"

    def kill9(self):
        assert self.running(), "broker not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close_log()

    def restart(self):
        """Start again on the same port with the same data dir (stop()/kill9() first, or it is
        stopped gracefully here)."""
        if self.running():
            self.stop()
        return self.start()

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()

    def log_tail(self, lines=80):
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError as e:
            return f"<no broker log: {e}>"
        return "\n".join(text.splitlines()[-lines:])

    def topic_dirs(self, topic):
        """Partition directories `<data-dir>/<topic>-<n>` present on disk."""
        prefix = topic + "-"
        return sorted(
            p.name for p in self.data_dir.iterdir()
            if p.is_dir() and p.name.startswith(prefix) and p.name[len(prefix):].isdigit()
        )


def pytest_configure(config):
    # kafka-python 3.0 loads its protocol schemas through deprecated importlib.resources calls
    config.addinivalue_line(
        "filterwarnings", "ignore:(open_text|read_text) is deprecated:DeprecationWarning")


@pytest.fixture
def broker(request, tmp_path):
    """Factory: `broker(overrides=None, durability=None, advertised=None)` -> started Broker."""
    started = []
    request.node._sluice_brokers = started

    def make(overrides=None, durability=None, advertised=None):
        n = len(started)
        b = Broker(
            data_dir=tmp_path / f"data{n}",
            log_path=tmp_path / f"broker{n}.log",
            overrides=overrides,
            durability=durability,
            advertised=advertised,
        )
        started.append(b)
        return b.start()

    yield make
    for b in started:
        b.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    brokers = getattr(item, "_sluice_brokers", None)
    if rep.failed and brokers:
        for i, b in enumerate(brokers):
            rep.sections.append((f"sluice broker #{i} log tail ({b.log_path})", b.log_tail()))
