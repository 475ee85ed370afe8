//! Child processes whose output is drained into a log file, and signals.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How many log lines a panicking test prints per process.
const TAIL_LINES: usize = 60;
/// How many unread stdout lines are kept for [`Process::next_stdout_line`];
/// later ones only reach the log, so a chatty process cannot grow memory.
const STDOUT_BACKLOG: usize = 256;

/// A running child process.
///
/// stdout and stderr are read by two threads from the moment it starts, so
/// its pipes never fill; every line lands in a log file under
/// [`log_dir`], and stdout lines are also offered to
/// [`next_stdout_line`](Self::next_stdout_line).
///
/// Dropping it SIGKILLs the process and whatever processes it started (found
/// through `/proc`, by PID) and reaps it. When the drop happens while the test
/// panics, the tail of the log is printed and the log file kept; otherwise
/// the log file is removed, unless `HUBBUB_TEST_LOGS` names where to keep
/// logs.
pub struct Process {
    label: String,
    child: Child,
    log_path: PathBuf,
    log: Arc<Mutex<File>>,
    stdout_lines: Receiver<String>,
    drained: Receiver<()>,
    exit: Option<ExitStatus>,
}

impl Process {
    /// Starts `cmd` (its stdin is closed, its stdout and stderr captured).
    /// `label` names the log file and the process in messages.
    pub fn spawn(label: &str, mut cmd: Command) -> Process {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let log_path = log_dir().join(format!("{label}-{seq}.log"));
        let mut file = create_log(&log_path);
        let _ = writeln!(file, "$ {cmd:?}");
        let log = Arc::new(Mutex::new(file));

        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));

        let (line_tx, stdout_lines) = mpsc::sync_channel(STDOUT_BACKLOG);
        let (done_tx, drained) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        drain(stdout, "stdout| ", Arc::clone(&log), Some(line_tx), done_tx.clone());
        drain(stderr, "", Arc::clone(&log), None, done_tx);

        Process { label: label.to_owned(), child, log_path, log, stdout_lines, drained, exit: None }
    }

    /// The label given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file holding this process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Appends a line of the test's own to the log (e.g. "SIGSTOP sent"), so
    /// the log reads as one timeline.
    pub fn note(&self, line: &str) {
        if let Ok(mut file) = self.log.lock() {
            let _ = writeln!(file, "#### test: {line}");
        }
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The next stdout line, waiting until `deadline`.
    pub fn next_stdout_line(&self, deadline: Instant) -> Result<String, String> {
        let wait = deadline.saturating_duration_since(Instant::now());
        self.stdout_lines.recv_timeout(wait).map_err(|e| match e {
            RecvTimeoutError::Timeout => format!("{}: no stdout line in time", self.label),
            RecvTimeoutError::Disconnected => {
                format!("{}: stdout closed (did the process exit?)", self.label)
            }
        })
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`, `INT`, `KILL`) with
    /// `kill(1)`; panics if the process was already reaped or `kill` fails.
    pub fn signal(&self, signal: &str) {
        assert!(self.exit.is_none(), "{}: cannot send SIG{signal}, it already exited ({:?})", self.label, self.exit);
        self.note(&format!("sending SIG{signal}"));
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill(1): {e}"));
        assert!(status.success(), "{}: `kill -s {signal}` failed: {status}", self.label);
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        self.note("sending SIGKILL");
        let _ = self.child.kill();
        let status = self.child.wait().expect("a killed child can be reaped");
        self.exit = Some(status);
        status
    }

    /// Sends SIGSTOP (the process freezes, sockets stay open).
    ///
    /// Returns once every thread of the process is stopped: a signal is
    /// delivered asynchronously, and a thread running on another core can
    /// go on handling frames for a moment after kill(1) returns (a test
    /// that sent right away saw them answered).
    pub fn sigstop(&self) {
        self.signal("STOP");
        let pid = self.pid();
        crate::wait_until(Instant::now() + Duration::from_secs(10), Duration::from_millis(1), || {
            if all_threads_stopped(pid) { Ok(()) } else { Err("a thread still runs".to_owned()) }
        })
        .unwrap_or_else(|e| panic!("{}: not stopped after SIGSTOP: {e}", self.label));
    }

    /// Sends SIGCONT.
    pub fn sigcont(&self) {
        self.signal("CONT");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends SIGINT.
    pub fn sigint(&self) {
        self.signal("INT");
    }

    /// The exit status if the process has exited, reaping it.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait on our own child");
        }
        self.exit
    }

    /// Whether the process is still running (a stopped process is running).
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    /// Waits for the process to exit and returns its status; panics after
    /// `timeout` (the drop then kills it).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} (pid {}) did not exit within {timeout:?}", self.label, self.pid());
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_exit_status().is_none() {
            // Collect the descendants first: once the parent dies they are
            // re-parented and can no longer be found from its PID.
            let descendants = descendants(self.pid());
            let _ = self.child.kill();
            for pid in descendants {
                let _ = Command::new("kill").args(["-s", "KILL", &pid.to_string()]).stderr(Stdio::null()).status();
            }
            let _ = self.child.wait();
        }
        // Both drain threads end at EOF; bounded in case a stray process
        // still holds a pipe.
        for _ in 0..2 {
            let _ = self.drained.recv_timeout(Duration::from_secs(2));
        }
        if thread::panicking() {
            eprintln!(
                "----- {} (pid {}): last {TAIL_LINES} lines of {} -----\n{}\n----- end of {} -----",
                self.label,
                self.pid(),
                self.log_path.display(),
                self.log_tail(TAIL_LINES),
                self.label
            );
        } else if std::env::var_os(LOG_DIR_VAR).is_none() {
            let _ = fs::remove_file(&self.log_path);
            // Fails while other logs are in it, which is what we want.
            let _ = fs::remove_dir(log_dir());
        }
    }
}

/// Names a directory to keep process logs in instead of the default.
const LOG_DIR_VAR: &str = "HUBBUB_TEST_LOGS";

/// The directory for process logs: `HUBBUB_TEST_LOGS` if set (every log is
/// kept there), else `$TMPDIR/hubbub-tests-<pid>` (a log is kept only when
/// its test panics, and the directory is removed once empty).
fn log_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        std::env::var_os(LOG_DIR_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join(format!("hubbub-tests-{}", std::process::id())))
    })
}

/// Creates a log file, and the log directory if needed: the last process to
/// end removes our default directory, possibly between our create and open.
fn create_log(path: &Path) -> File {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let _ = fs::create_dir_all(log_dir());
        match File::create(path) {
            Ok(file) => return file,
            Err(e) if attempt < 5 && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot create log {}: {e}", path.display()),
        }
    }
}

/// Copies `from` line by line into `log` (each line after `prefix`) and,
/// for stdout, into `lines`; signals `done` at EOF.
fn drain(
    from: impl Read + Send + 'static,
    prefix: &'static str,
    log: Arc<Mutex<File>>,
    lines: Option<SyncSender<String>>,
    done: mpsc::Sender<()>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end_matches(['\n', '\r']);
            if let Ok(mut file) = log.lock() {
                let _ = writeln!(file, "{prefix}{line}");
            }
            if let Some(lines) = &lines {
                // Full means nobody reads stdout any more; the log has it.
                let _ = lines.try_send(line.to_owned());
            }
        }
        let _ = done.send(());
    });
}

/// All descendants of `pid`, children first (Linux `/proc`; empty elsewhere).
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// What a process that ran to its end left behind.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Runs `cmd` to its end (stdin closed) and returns its status and output.
/// After `timeout` the process is killed and the error carries what it wrote.
pub fn run_to_exit(mut cmd: Command, timeout: Duration) -> Result<Finished, String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let stdout = read_all(child.stdout.take().expect("stdout is piped"));
    let stderr = read_all(child.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Finished { status, stdout, stderr }),
        None => Err(format!("still running after {timeout:?}, killed; stdout: {stdout:?}; stderr: {stderr:?}")),
    }
}

fn read_all(mut from: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Whether every thread of process `pid` is stopped (state `T` or `t` in
/// `/proc/<pid>/task/<tid>/stat`; the state follows the parenthesised name).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            stat.rsplit_once(')').is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('T' | 't')))
        })
    })
}
