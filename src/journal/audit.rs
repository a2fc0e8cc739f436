//! The audit log: one JSON line per request, on every listener, written on a thread of its own
//! (the I/O tasks hand it the request's [`JobRecord`] through a channel; the main thread never
//! waits for the disk).
//!
//! A job that may change data gets a `"event": "start"` line written *before* it is queued
//! ([`Audit::start`] returns once the line is on disk — PostgreSQL's write-ahead rule), so a job
//! that crashes Blender is in the log; its `"event": "end"` line follows the answer. Reads and
//! requests answered at once get one `end` line, not waited for.
//!
//! Two Blenders may share one file: the file is opened `O_APPEND` and every batch of whole lines
//! is one write(2), so lines never mix; rotation (by size) takes an flock on `<file>.lock`, and a
//! writer whose path now names another file (rotated by someone else) reopens it.

use super::record::{Checkpoint, Effect, JobRecord, Listener, Protocol};
use super::state::{private_dir, state_dir};
use crate::defaults::{AUDIT_CODE_CAP, AUDIT_FILE_NAME, DEFAULT_AUDIT_KEEP, DEFAULT_AUDIT_MAX_BYTES};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread::Thread;
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// What a line keeps of the code a request ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeMode {
    /// The code (cut at [`AUDIT_CODE_CAP`] bytes) and its sha256.
    Full,
    /// Only its sha256 (`--audit-code hash`).
    Hash,
}

impl CodeMode {
    pub fn from_name(name: &str) -> Result<CodeMode, String> {
        match name {
            "full" => Ok(CodeMode::Full),
            "hash" => Ok(CodeMode::Hash),
            other => Err(format!(
                "must be \"full\" (the code and its sha256) or \"hash\" (only the sha256), got {other:?}"
            )),
        }
    }
}

/// Which line of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Before a job that may change data is queued (written and waited for).
    Start,
    /// After the answer (the only line of a read or of a request answered at once).
    End,
}

/// Where and how the log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub code: CodeMode,
    /// Past this size the file is rotated.
    pub max_bytes: u64,
    /// Rotated files kept (`<path>.1` newest .. `<path>.N`), at least 1.
    pub keep: usize,
}

impl AuditConfig {
    /// `journal::state_dir()/audit.jsonl`.
    pub fn default_path() -> PathBuf {
        state_dir().join(AUDIT_FILE_NAME)
    }

    /// The log at `path` with the default code mode, size and number of files kept.
    pub fn at(path: PathBuf) -> AuditConfig {
        AuditConfig {
            path,
            code: CodeMode::Full,
            max_bytes: DEFAULT_AUDIT_MAX_BYTES,
            keep: DEFAULT_AUDIT_KEEP,
        }
    }
}

type Ack = oneshot::Sender<Result<(), String>>;

enum Msg {
    Line(Entry, Option<Ack>),
    /// Answered once everything sent before it is written.
    Flush(mpsc::SyncSender<()>),
}

struct Entry {
    record: Arc<JobRecord>,
    event: Event,
    at: SystemTime,
    duration: Option<Duration>,
    outcome: Option<String>,
    /// The line carries the code (the start line of a job that changes data, or a request's only
    /// line); an end line after a start line names it by its sha256 only.
    with_code: bool,
}

/// How long the writer gathers lines nobody waits for (end lines) before it writes them: under
/// load one wake-up and one write(2) per window instead of per request (the machine's cores are
/// Blender's and the I/O thread's). A start line or a flush is written at once.
const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// The process's audit log: a handle to its writer thread (which ends when the handle goes).
pub struct Audit {
    /// Taken on drop, so that the writer sees the channel closed when it is woken.
    tx: Option<mpsc::Sender<Msg>>,
    path: PathBuf,
    writer: Thread,
    /// The writer sleeps until woken (nothing came in its last window): the next line wakes it.
    idle: Arc<AtomicBool>,
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.tx.take();
        self.writer.unpark();
    }
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit").field("path", &self.path).finish()
    }
}

impl Audit {
    /// Open (create, 0600) the log and start its writer; an unwritable path is an error now, not
    /// at the first request.
    pub fn open(config: AuditConfig) -> io::Result<Audit> {
        let path = config.path.clone();
        let log = LogFile::open(config)?;
        let (tx, rx) = mpsc::channel();
        let idle = Arc::new(AtomicBool::new(false));
        let writer_idle = idle.clone();
        let writer = std::thread::Builder::new()
            .name("blendwire-audit".into())
            .spawn(move || write_loop(log, rx, &writer_idle))?
            .thread()
            .clone();
        Ok(Audit {
            tx: Some(tx),
            path,
            writer,
            idle,
        })
    }

    /// Whether the log can be opened (and written) with `config`, without starting a writer.
    pub fn check(config: AuditConfig) -> io::Result<()> {
        LogFile::open(config).map(drop)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hand `msg` to the writer; wake it at once when someone waits (`urgent`), else only if it
    /// sleeps (it then gathers for [`BATCH_WINDOW`]). The hot path: a channel send, and now and
    /// then an unpark.
    fn send(&self, msg: Msg, urgent: bool) -> bool {
        // The writer only ends when the handle is gone; a send cannot fail while we hold it.
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if urgent || self.idle.swap(false, SeqCst) {
            self.writer.unpark();
        }
        sent
    }

    /// The `start` line of a job that may change data; returns once it is written (`Err`: why it
    /// could not be). Awaited by the I/O task before the job is queued.
    pub async fn start(&self, record: &Arc<JobRecord>) -> Result<(), String> {
        let (ack, written) = oneshot::channel();
        let entry = Entry {
            record: record.clone(),
            event: Event::Start,
            at: SystemTime::now(),
            duration: None,
            outcome: None,
            with_code: true,
        };
        self.send(Msg::Line(entry, Some(ack)), true);
        written
            .await
            .unwrap_or_else(|_| Err("the audit log's writer is gone".into()))
    }

    /// The `end` line of a job (its answer's `outcome`: `ok` or the error code); the code is on
    /// the job's start line when it may change data, else on this line.
    pub fn end(&self, record: &Arc<JobRecord>, outcome: &str) {
        self.finish(record, outcome, !record.changes());
    }

    /// The one line of a request answered without a job (`get_status`, `unauthorized`, `busy`, ...).
    pub fn answered(&self, record: &Arc<JobRecord>, outcome: &str) {
        self.finish(record, outcome, true);
    }

    fn finish(&self, record: &Arc<JobRecord>, outcome: &str, with_code: bool) {
        let entry = Entry {
            record: record.clone(),
            event: Event::End,
            at: SystemTime::now(),
            duration: Some(record.received.elapsed()),
            outcome: Some(outcome.to_string()),
            with_code,
        };
        self.send(Msg::Line(entry, None), false);
    }

    /// Wait (blocking) until every line sent before is written: for tests and a clean exit.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.send(Msg::Flush(tx), true) {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

/// The outcome an answer stands for: `ok`, or its `error_code` (`error` when it has none, as
/// blender-mcp's and Blender Lab's error answers).
pub fn outcome_of(answer: &Value) -> &str {
    match answer.get("status").and_then(Value::as_str) {
        Some("error") => answer.get("error_code").and_then(Value::as_str).unwrap_or("error"),
        _ => "ok",
    }
}

// ---- the line ----------------------------------------------------------------------------------

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    pid: u32,
    seq: u64,
    event: Event,
    listener: Listener,
    dialect: Protocol,
    peer: Option<&'a str>,
    token_label: Option<&'a str>,
    request_id: Option<&'a Value>,
    command: &'a str,
    effect: Effect,
    code_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    code_truncated: bool,
    duration_ms: Option<f64>,
    outcome: Option<&'a str>,
    checkpoint: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_error: Option<&'a str>,
}

fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// `text` cut to at most `cap` bytes on a character boundary; whether it was cut.
fn capped(text: &str, cap: usize) -> (&str, bool) {
    if text.len() <= cap {
        return (text, false);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// The JSON line of `entry`, newline included, appended to `out`.
fn encode(entry: &Entry, mode: CodeMode, out: &mut Vec<u8>) {
    let r = &entry.record;
    let code = r.code.as_deref();
    let shown = code
        .filter(|_| entry.with_code && mode == CodeMode::Full)
        .map(|c| capped(c, AUDIT_CODE_CAP));
    let (checkpoint, checkpoint_error) = match r.checkpoint() {
        Some(Checkpoint::Kept { id }) => (Some(id.as_str()), None),
        Some(Checkpoint::Failed { error }) => (None, Some(error.as_str())),
        Some(Checkpoint::Off) | None => (None, None),
    };
    let line = Line {
        ts: chrono::DateTime::<chrono::Utc>::from(entry.at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        pid: std::process::id(),
        seq: r.seq,
        event: entry.event,
        listener: r.listener,
        dialect: r.dialect,
        peer: r.peer.as_deref(),
        token_label: r.token_label.as_deref(),
        request_id: r.request_id.as_ref(),
        command: &r.command,
        effect: r.effect,
        code_sha256: code.map(sha256_hex),
        code: shown.map(|(c, _)| c),
        code_truncated: shown.is_some_and(|(_, cut)| cut),
        duration_ms: entry.duration.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
        outcome: entry.outcome.as_deref(),
        checkpoint,
        checkpoint_error,
    };
    // Plain data with string keys: serialising it cannot fail.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

// ---- the file ----------------------------------------------------------------------------------

/// The open log file, and the rules of its rotation.
struct LogFile {
    config: AuditConfig,
    file: File,
    /// (device, inode) of the open file: another writer's rotation gives the path a new one.
    id: (u64, u64),
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

impl LogFile {
    fn open(config: AuditConfig) -> io::Result<LogFile> {
        let dir = config.path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            // The state directory (and a folder we make) is private; a folder the user named and
            // that exists is left as it is (the file itself is 0600).
            if dir == state_dir() || !dir.exists() {
                private_dir(dir)?;
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&config.path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "{} is not a regular file",
                config.path.display()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        Ok(LogFile {
            id: (meta.dev(), meta.ino()),
            file,
            config,
        })
    }

    fn reopen(&mut self) -> io::Result<()> {
        let fresh = LogFile::open(self.config.clone())?;
        *self = fresh;
        Ok(())
    }

    /// The path names another file than ours (rotated by another process, or removed).
    fn moved(&self) -> bool {
        fs::metadata(&self.config.path).map_or(true, |m| (m.dev(), m.ino()) != self.id)
    }

    /// Append whole lines in one write(2) (O_APPEND: another process's lines never cut in).
    fn append(&mut self, lines: &[u8]) -> io::Result<()> {
        if self.moved() {
            self.reopen()?;
        }
        (&self.file).write_all(lines)?;
        if self.file.metadata()?.len() >= self.config.max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// `<path>` → `<path>.1` → ... → `<path>.<keep>` (the oldest dropped), under the lock file's
    /// flock; a file another writer rotated meanwhile is only reopened.
    fn rotate(&mut self) -> io::Result<()> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(with_suffix(&self.config.path, ".lock"))?;
        // SAFETY: flock on a descriptor we own; it is released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let path = &self.config.path;
        let still_ours = !self.moved() && fs::metadata(path).is_ok_and(|m| m.len() >= self.config.max_bytes);
        if still_ours {
            let keep = self.config.keep.max(1);
            for i in (1..keep).rev() {
                match fs::rename(
                    with_suffix(path, &format!(".{i}")),
                    with_suffix(path, &format!(".{}", i + 1)),
                ) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(path, with_suffix(path, ".1"))?;
        }
        self.reopen()
    }
}

/// The writer thread: what has arrived is written in one go (one write(2)), then acknowledged;
/// then it gathers for [`BATCH_WINDOW`] (cut short by a start line or a flush), or, when nothing
/// came, sleeps until a sender wakes it (`idle`). Ends when the handle is gone.
fn write_loop(mut log: LogFile, rx: mpsc::Receiver<Msg>, idle: &AtomicBool) {
    let mode = log.config.code;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut acks: Vec<Ack> = Vec::new();
    let mut flushes = Vec::new();
    let mut failing = false;
    // A message taken by the last look before sleeping, handled first on the next turn.
    let mut held: Option<Msg> = None;
    loop {
        let mut closed = false;
        let mut got = 0usize;
        while buf.len() < 1024 * 1024 {
            let next = match held.take() {
                Some(msg) => Ok(msg),
                None => rx.try_recv(),
            };
            match next {
                Ok(Msg::Line(entry, ack)) => {
                    encode(&entry, mode, &mut buf);
                    acks.extend(ack);
                    got += 1;
                }
                Ok(Msg::Flush(done)) => {
                    flushes.push(done);
                    got += 1;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if got > 0 {
            let result = if buf.is_empty() { Ok(()) } else { log.append(&buf) };
            buf.clear();
            let answer = match result {
                Ok(()) => {
                    failing = false;
                    Ok(())
                }
                Err(e) => {
                    // Said once per failing stretch, not per line (a full disk).
                    if !failing {
                        log::warn!("cannot write the audit log {}: {e}", log.config.path.display());
                    }
                    failing = true;
                    Err(format!("cannot write the audit log {}: {e}", log.config.path.display()))
                }
            };
            for ack in acks.drain(..) {
                let _ = ack.send(answer.clone());
            }
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
        }
        if closed {
            return;
        }
        if got > 0 {
            std::thread::park_timeout(BATCH_WINDOW);
            continue;
        }
        // Nothing came in a whole window: sleep until woken. A line sent after the last look saw
        // `idle` false and woke nobody, so look once more after saying we sleep.
        idle.store(true, SeqCst);
        match rx.try_recv() {
            Err(mpsc::TryRecvError::Empty) => std::thread::park(),
            Ok(msg) => held = Some(msg),
            // The handle went: the next turn sees the channel closed.
            Err(mpsc::TryRecvError::Disconnected) => {}
        }
        idle.store(false, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bw-audit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn lines(path: &Path) -> Vec<Value> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    fn record(command: &str, code: Option<&str>) -> Arc<JobRecord> {
        let mut params = serde_json::Map::new();
        if let Some(code) = code {
            params.insert("code".into(), json!(code));
        }
        Arc::new(
            JobRecord::new(Listener::Service, Protocol::BldRemote, command)
                .peer(Some("127.0.0.1:4000".into()))
                .token_label(Some("token".into()))
                .request_id(Some(json!("r-1")))
                .code_of(&params),
        )
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_changing_job_has_a_start_and_an_end_line_a_read_one_line() {
        let dir = temp("shape");
        let path = dir.join("sub").join("audit.jsonl");
        let audit = Audit::open(AuditConfig::at(path.clone())).expect("opened");
        let job = record("execute_code", Some("import bpy"));
        block_on(audit.start(&job)).expect("written");
        assert_eq!(lines(&path).len(), 1, "the start line is on disk when start returns");
        job.set_checkpoint(Checkpoint::Kept { id: "cp-1".into() });
        audit.end(&job, "ok");
        let read = record("get_scene_info", None);
        audit.end(&read, "ok");
        audit.flush();
        let got = lines(&path);
        assert_eq!(got.len(), 3);
        let (start, end, read_line) = (&got[0], &got[1], &got[2]);
        assert_eq!(start["event"], "start");
        assert_eq!(start["seq"], end["seq"]);
        assert_eq!(start["pid"], std::process::id());
        assert_eq!(start["listener"], "service");
        assert_eq!(start["dialect"], "bld_remote");
        assert_eq!(start["peer"], "127.0.0.1:4000");
        assert_eq!(start["token_label"], "token");
        assert_eq!(start["request_id"], "r-1");
        assert_eq!(start["command"], "execute_code");
        assert_eq!(start["code"], "import bpy");
        assert_eq!(start["code_sha256"], sha256_hex("import bpy"));
        assert_eq!(start["outcome"], Value::Null);
        let ts = start["ts"].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z') && ts.len() == 24,
            "{ts}"
        );
        assert_eq!(end["event"], "end");
        assert_eq!(end["outcome"], "ok");
        assert_eq!(end["checkpoint"], "cp-1");
        assert!(end["duration_ms"].as_f64().is_some());
        assert!(end.get("code").is_none(), "the code is on the start line");
        assert_eq!(end["code_sha256"], start["code_sha256"]);
        assert_eq!(read_line["event"], "end");
        assert_eq!(read_line["effect"], "reads");
        assert_eq!(read_line["checkpoint"], Value::Null);
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777, 0o700);
        drop(audit);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn code_is_capped_or_only_hashed_and_a_failed_checkpoint_says_why() {
        let dir = temp("code");
        let long = "x".repeat(AUDIT_CODE_CAP + 10);
        let full = Audit::open(AuditConfig::at(dir.join("full.jsonl"))).unwrap();
        let job = record("execute_code", Some(&long));
        job.set_checkpoint(Checkpoint::Failed {
            error: "disk full".into(),
        });
        full.answered(&job, "busy");
        full.flush();
        let line = &lines(&dir.join("full.jsonl"))[0];
        assert_eq!(line["code"].as_str().unwrap().len(), AUDIT_CODE_CAP);
        assert_eq!(line["code_truncated"], true);
        assert_eq!(line["code_sha256"], sha256_hex(&long));
        assert_eq!(line["outcome"], "busy");
        assert_eq!(line["checkpoint"], Value::Null);
        assert_eq!(line["checkpoint_error"], "disk full");

        let hashed = Audit::open(AuditConfig {
            code: CodeMode::Hash,
            ..AuditConfig::at(dir.join("hash.jsonl"))
        })
        .unwrap();
        hashed.answered(&record("execute_code", Some("secret_scene_code()")), "ok");
        hashed.flush();
        let text = fs::read_to_string(dir.join("hash.jsonl")).unwrap();
        assert!(!text.contains("secret_scene_code"), "{text}");
        assert_eq!(
            lines(&dir.join("hash.jsonl"))[0]["code_sha256"],
            sha256_hex("secret_scene_code()")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_so_many_files() {
        let dir = temp("rotate");
        let path = dir.join("audit.jsonl");
        let audit = Audit::open(AuditConfig {
            max_bytes: 1000,
            keep: 2,
            ..AuditConfig::at(path.clone())
        })
        .unwrap();
        for _ in 0..40 {
            audit.answered(&record("get_status", None), "ok");
            audit.flush();
        }
        let one = with_suffix(&path, ".1");
        let two = with_suffix(&path, ".2");
        assert!(one.exists() && two.exists());
        assert!(!with_suffix(&path, ".3").exists(), "only 2 old files are kept");
        for p in [&path, &one, &two] {
            assert!(
                fs::metadata(p).unwrap().len() < 1000 + 600,
                "{} is rotated by size",
                p.display()
            );
            assert_eq!(fs::metadata(p).unwrap().mode() & 0o777, 0o600);
            for line in lines(p) {
                assert_eq!(line["command"], "get_status", "whole lines only");
            }
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn two_writers_sharing_a_file_and_its_rotation_never_mix_or_lose_lines() {
        let dir = temp("shared");
        let path = dir.join("audit.jsonl");
        let config = AuditConfig {
            max_bytes: 4000,
            keep: 100,
            ..AuditConfig::at(path.clone())
        };
        let writers = [Audit::open(config.clone()).unwrap(), Audit::open(config).unwrap()];
        std::thread::scope(|s| {
            for (w, audit) in writers.iter().enumerate() {
                s.spawn(move || {
                    for i in 0..300 {
                        audit.answered(&record(&format!("writer{w}-{i}"), Some(&"y".repeat(i % 50))), "ok");
                    }
                    audit.flush();
                });
            }
        });
        let mut seen = Vec::new();
        for n in (1..=100).rev() {
            seen.extend(lines(&with_suffix(&path, &format!(".{n}"))));
        }
        seen.extend(lines(&path));
        let mut commands: Vec<String> = seen
            .iter()
            .map(|l| l["command"].as_str().unwrap().to_string())
            .collect();
        commands.sort();
        let mut expected: Vec<String> = (0..2)
            .flat_map(|w| (0..300).map(move |i| format!("writer{w}-{i}")))
            .collect();
        expected.sort();
        assert_eq!(commands, expected, "every line once, whole");
        assert!(with_suffix(&path, ".1").exists(), "it rotated");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lines_nobody_waits_for_are_written_soon_also_after_the_writer_went_idle() {
        let dir = temp("idle");
        let path = dir.join("audit.jsonl");
        let audit = Audit::open(AuditConfig::at(path.clone())).unwrap();
        for n in 1..=3 {
            audit.answered(&record("get_status", None), "ok");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while lines(&path).len() < n {
                assert!(
                    std::time::Instant::now() < deadline,
                    "line {n} was not written without a flush"
                );
                std::thread::yield_now();
            }
            // Let the writer's window pass with nothing in it, so that it sleeps until woken.
            while !audit.idle.load(SeqCst) {
                assert!(std::time::Instant::now() < deadline, "the writer never went idle");
                std::thread::yield_now();
            }
        }
        drop(audit);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_writer_follows_the_path_when_another_rotated_it() {
        let dir = temp("moved");
        let path = dir.join("audit.jsonl");
        let audit = Audit::open(AuditConfig::at(path.clone())).unwrap();
        audit.answered(&record("get_status", None), "ok");
        audit.flush();
        fs::rename(&path, dir.join("elsewhere.jsonl")).unwrap();
        audit.answered(&record("get_scene_info", None), "ok");
        audit.flush();
        let got = lines(&path);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["command"], "get_scene_info");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_refused_when_opened() {
        let dir = temp("unwritable");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o500)).unwrap();
        let result = Audit::open(AuditConfig::at(dir.join("audit.jsonl")));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        // root may write anyway; the directory case holds for everyone.
        assert!(
            Audit::open(AuditConfig::at(dir.clone())).is_err(),
            "a directory is no log file"
        );
        if unsafe { libc::geteuid() } != 0 {
            assert!(result.is_err());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outcomes_are_ok_or_the_error_code() {
        assert_eq!(outcome_of(&json!({"status": "success", "result": 1})), "ok");
        assert_eq!(
            outcome_of(&json!({"status": "error", "error_code": "interrupted", "message": "m"})),
            "interrupted"
        );
        assert_eq!(outcome_of(&json!({"status": "error", "message": "m"})), "error");
        assert_eq!(outcome_of(&json!({"executed": true})), "ok");
    }
}
