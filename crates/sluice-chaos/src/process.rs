//! A [`Node`]: one `sluice serve` child process, the state that survives its restarts (listen
//! port, data dir, log file, extra arguments) and the [`Proxy`] in front of it whose address the
//! node advertises, so clients that follow Metadata also go through the proxy.
//!
//! Process faults are signals: `kill9` (SIGKILL), `pause`/`resume` (SIGSTOP/SIGCONT),
//! `terminate` (SIGTERM with a bounded wait). Signals other than SIGKILL are sent with the
//! `kill` command, as the CLI's integration tests do, so the crate needs no `unsafe` or libc.
//!
//! Readiness is a real Kafka exchange, not a TCP connect ([`api_versions`]), because a paused process still completes TCP handshakes
//! (the kernel does them) but never answers.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::probe::{api_versions, ProbeError};
use crate::proxy::Proxy;

/// How long a start or restart may take before the node counts as failed.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one readiness probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(25);
/// Lines of the node's log quoted in errors.
const LOG_TAIL_LINES: usize = 60;

/// Why a node operation failed. Messages carry the node's log tail where it explains the failure.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no sluice binary: set SLUICE_BIN (looked for {0})")]
    NoBinary(PathBuf),
    #[error("node {node}: {what}: {source}")]
    Io {
        node: i32,
        what: &'static str,
        source: io::Error,
    },
    #[error("node {node} is already running")]
    AlreadyRunning { node: i32 },
    #[error("node {node} is not running")]
    NotRunning { node: i32 },
    #[error("node {node} exited with {status} while starting\n{log_tail}")]
    ExitedDuringStart {
        node: i32,
        status: ExitStatus,
        log_tail: String,
    },
    #[error("node {node} did not answer ApiVersions within {timeout:?}: {last}\n{log_tail}")]
    NotReady {
        node: i32,
        timeout: Duration,
        last: ProbeError,
        log_tail: String,
    },
    #[error("node {node} died on its own with {status}\n{log_tail}")]
    Died {
        node: i32,
        status: ExitStatus,
        log_tail: String,
    },
    #[error("node {node} did not exit within {timeout:?} of SIGTERM\n{log_tail}")]
    StopTimeout {
        node: i32,
        timeout: Duration,
        log_tail: String,
    },
    #[error("node {node}: `kill -{signal} {pid}` failed")]
    Signal {
        node: i32,
        signal: &'static str,
        pid: u32,
    },
}

/// The `sluice` binary to run: `$SLUICE_BIN`, else `sluice` in the cargo target directory this
/// test binary was built into (`<target>/<profile>/deps/<test>` -> `<target>/<profile>/sluice`).
pub fn sluice_bin() -> Result<PathBuf, NodeError> {
    if let Some(p) = std::env::var_os("SLUICE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let guess = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("sluice")))
        .unwrap_or_else(|| PathBuf::from("sluice"));
    if guess.is_file() {
        Ok(guess)
    } else {
        Err(NodeError::NoBinary(guess))
    }
}

/// Asks the OS for a free loopback port. The listener is dropped before the node binds, so
/// another process could take it in between; rare enough on a test machine.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One `sluice serve` process and what survives its restarts.
pub struct Node {
    id: i32,
    bin: PathBuf,
    /// The port `sluice` binds; kept across restarts so the proxy's target stays valid.
    listen: SocketAddr,
    /// In front of `listen`; its address is the advertised listener.
    proxy: Proxy,
    /// Kept across restarts: recovery must find the same files.
    data_dir: tempfile::TempDir,
    /// Holds the node's stdout/stderr, outside the data dir so it cannot confuse recovery.
    log_dir: tempfile::TempDir,
    /// Per-node arguments after the common ones (cluster flags, `--override`, `--durability`);
    /// replayed on every start.
    extra_args: Vec<String>,
    /// `None` before the first start and between a stop/kill and the next start.
    child: Option<Child>,
    /// How many times the process has been started (labels the log sections).
    starts: u32,
}

impl Node {
    /// Allocates ports, the data dir and the proxy, without starting the process (so a cluster
    /// can learn every node's addresses before building any node's arguments).
    pub async fn prepare(id: i32, extra_args: Vec<String>) -> Result<Node, NodeError> {
        let io = |what| {
            move |source| NodeError::Io {
                node: id,
                what,
                source,
            }
        };
        let bin = sluice_bin()?;
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port().map_err(io("free port"))?));
        let proxy = Proxy::start(listen).await.map_err(io("start proxy"))?;
        let dir = |prefix: &str| {
            tempfile::Builder::new()
                .prefix(&format!("sluice-chaos-{prefix}-{id}-"))
                .tempdir()
        };
        Ok(Node {
            id,
            bin,
            listen,
            proxy,
            data_dir: dir("data").map_err(io("create data dir"))?,
            log_dir: dir("log").map_err(io("create log dir"))?,
            extra_args,
            child: None,
            starts: 0,
        })
    }

    /// [`Node::prepare`] then [`Node::start`].
    pub async fn launch(id: i32, extra_args: Vec<String>) -> Result<Node, NodeError> {
        let mut node = Node::prepare(id, extra_args).await?;
        node.start().await?;
        Ok(node)
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    /// The address `sluice` listens on (bypasses the proxy).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The advertised address: the proxy's. Use this as the bootstrap address.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    /// The proxy on the client link, to inject network faults.
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("node.log")
    }

    /// Replaces the per-node arguments used from the next start on.
    pub fn set_extra_args(&mut self, extra_args: Vec<String>) {
        self.extra_args = extra_args;
    }

    /// The process id, if a process was started and not yet reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while a started process has not exited (a paused process is running).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Starts the process (same ports, data dir and arguments every time) and waits until it
    /// answers ApiVersions on its listen port.
    pub async fn start(&mut self) -> Result<(), NodeError> {
        self.spawn()?;
        self.wait_ready(START_TIMEOUT).await
    }

    /// Same as [`Node::start`]; reads better after a kill or terminate.
    pub async fn restart(&mut self) -> Result<(), NodeError> {
        self.start().await
    }

    /// Starts the process without waiting for it to answer (a cluster starts every node before
    /// waiting for any, since a node may only answer once a quorum is up).
    pub fn spawn(&mut self) -> Result<(), NodeError> {
        let node = self.id;
        let io = |what| move |source| NodeError::Io { node, what, source };
        if self.is_running() {
            return Err(NodeError::AlreadyRunning { node });
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io("open log"))?;
        writeln!(
            log,
            "===== sluice-chaos: node {node} start #{} =====",
            self.starts
        )
        .map_err(io("write log"))?;
        let stderr = log.try_clone().map_err(io("clone log handle"))?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--advertised-listener")
            .arg(self.proxy.addr().to_string())
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--node-id")
            .arg(node.to_string())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(io("spawn sluice"))?;
        tracing::info!(node, pid = child.id(), start = self.starts, "node started");
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the node answers ApiVersions on its listen port (not through the proxy, which
    /// may be faulted), failing fast if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), NodeError> {
        let node = self.id;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.reap()? {
                return Err(NodeError::ExitedDuringStart {
                    node,
                    status,
                    log_tail: self.log_tail(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let last = match api_versions(self.listen, PROBE_TIMEOUT.min(left)).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(NodeError::NotReady {
                    node,
                    timeout,
                    last,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `Ok` while the process runs (paused counts); [`NodeError::Died`] if it exited without
    /// being told to, which a chaos run treats as a failure of its own.
    pub fn check_alive(&mut self) -> Result<(), NodeError> {
        match self.reap()? {
            None => Ok(()),
            Some(status) => Err(NodeError::Died {
                node: self.id,
                status,
                log_tail: self.log_tail(),
            }),
        }
    }

    /// SIGKILL and reap: no chance to flush or clean up.
    pub fn kill9(&mut self) -> Result<ExitStatus, NodeError> {
        let node = self.id;
        let mut child = self.child.take().ok_or(NodeError::NotRunning { node })?;
        let io = |what| move |source| NodeError::Io { node, what, source };
        child.kill().map_err(io("SIGKILL"))?;
        let status = child.wait().map_err(io("reap"))?;
        tracing::info!(node, %status, "node killed");
        Ok(status)
    }

    /// SIGSTOP: the process freezes; the kernel still accepts TCP connections for it.
    pub fn pause(&self) -> Result<(), NodeError> {
        self.signal("STOP")
    }

    /// SIGCONT after [`Node::pause`].
    pub fn resume(&self) -> Result<(), NodeError> {
        self.signal("CONT")
    }

    fn signal(&self, signal: &'static str) -> Result<(), NodeError> {
        let node = self.id;
        let pid = self.pid().ok_or(NodeError::NotRunning { node })?;
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .map_err(|source| NodeError::Io {
                node,
                what: "run kill",
                source,
            })?;
        if !ok.success() {
            return Err(NodeError::Signal { node, signal, pid });
        }
        tracing::info!(node, pid, signal, "node signalled");
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for the exit and returns its status (the caller
    /// decides whether non-zero is a failure). On timeout the process is left running.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, NodeError> {
        let node = self.id;
        self.signal("TERM")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.reap()? {
                tracing::info!(node, %status, "node terminated");
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(NodeError::StopTimeout {
                    node,
                    timeout,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The exit status if the process has exited (and is now reaped), `None` while it runs.
    fn reap(&mut self) -> Result<Option<ExitStatus>, NodeError> {
        let node = self.id;
        let child = self.child.as_mut().ok_or(NodeError::NotRunning { node })?;
        let status = child.try_wait().map_err(|source| NodeError::Io {
            node,
            what: "try_wait",
            source,
        })?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// The last lines of the node's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            text = String::from_utf8_lossy(&buf).into_owned();
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        format!(
            "----- node {} log tail ({}) -----\n{tail}\n----- end of node {} log -----",
            self.id,
            self.log_path().display(),
            self.id
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        // SIGKILL also ends a paused process.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
