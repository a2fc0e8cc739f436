//! The instance directory: where the files live (`$XDG_RUNTIME_DIR/blendwire`, else
//! `<temp>/blendwire-<uid>`; mode 0700, files 0600, written atomically), this process's
//! [`Announcement`] (its file, removed on drop), and reading the files back with stale ones
//! deleted: the pid is gone, the pid was reused (its process start time differs), or, where the
//! start time cannot be read, the port refuses connections.

use super::record::{Announce, Instance};
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a reader waits for a port it has to probe (no process start time to compare).
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Announcing failed (serving goes on without it).
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("cannot create the instance directory {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: io::Error },
    #[error("the instance directory {} is not safe to use: {why} (it must be a directory of yours, mode 0700)", dir.display())]
    UnsafeDir { dir: PathBuf, why: String },
    #[error("cannot write the instance file {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// `$XDG_RUNTIME_DIR/blendwire`, else `<temp dir>/blendwire-<uid>` (per user: the temp dir is shared).
pub fn dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(base) if base.is_absolute() => base.join("blendwire"),
        _ => std::env::temp_dir().join(format!("blendwire-{}", uid())),
    }
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

/// The directory must be ours and closed to others: an instance file decides where clients send
/// code (and their token), so a file planted by another user must never be read.
fn check_dir(dir: &Path) -> Result<(), InstanceError> {
    crate::journal::check_private(dir).map_err(|why| InstanceError::UnsafeDir {
        dir: dir.to_path_buf(),
        why,
    })
}

/// Create the directory (mode 0700) if needed; a directory of ours with a looser mode is tightened.
fn ensure_dir(dir: &Path) -> Result<(), InstanceError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| InstanceError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    if let Ok(meta) = fs::symlink_metadata(dir) {
        if meta.is_dir() && meta.uid() == uid() && meta.mode() & 0o077 != 0 {
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
    }
    check_dir(dir)
}

/// This process's instance file; dropping it removes the file.
#[derive(Debug)]
pub struct Announcement {
    path: PathBuf,
    instance: Instance,
}

/// Announce this process in [`dir()`].
pub fn announce(a: Announce) -> Result<Announcement, InstanceError> {
    Announcement::write_in(&dir(), Instance::this_process(a))
}

impl Announcement {
    /// Write `instance`'s file into `dir` (created if needed).
    pub fn write_in(dir: &Path, instance: Instance) -> Result<Announcement, InstanceError> {
        ensure_dir(dir)?;
        let announcement = Announcement {
            path: dir.join(instance.announcement_name()),
            instance,
        };
        announcement.write()?;
        Ok(announcement)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The open .blend file changed (saved as, loaded, new): rewrite the file. False if unchanged.
    pub fn set_blend_file(&mut self, file: Option<String>) -> Result<bool, InstanceError> {
        let file = file.filter(|f| !f.is_empty());
        if file == self.instance.service.blend_file {
            return Ok(false);
        }
        self.instance.service.blend_file = file;
        self.write()?;
        Ok(true)
    }

    /// Temp file + rename: a reader sees the old file or the new one, never half of one.
    fn write(&self) -> Result<(), InstanceError> {
        let error = |source| InstanceError::Write {
            path: self.path.clone(),
            source,
        };
        let name = self.instance.announcement_name();
        let tmp = self.path.with_file_name(format!(".{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut text = serde_json::to_string_pretty(&self.instance.record())
            .map_err(io::Error::from)
            .map_err(error)?;
        text.push('\n');
        let written = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(error(e));
        }
        Ok(())
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot remove the instance file {}: {e}", self.path.display()),
        }
    }
}

/// The live instances announced in [`dir()`], oldest first; stale files are deleted.
pub fn discover() -> Vec<Instance> {
    discover_in(&dir())
}

/// The live instances announced in `dir`, oldest first; stale files are deleted. A missing
/// directory has none; an unsafe one (see `check_dir`) is not read.
pub fn discover_in(dir: &Path) -> Vec<Instance> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return vec![],
        Err(e) => {
            log::warn!("cannot read the instance directory {}: {e}", dir.display());
            return vec![];
        }
    };
    if let Err(e) = check_dir(dir) {
        log::warn!("{e}; not reading it");
        return vec![];
    }
    let mut found = vec![];
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(pid) = pid_of_name(name) else { continue };
        if name.starts_with('.') {
            // A temp file left by a writer that died between write and rename.
            if !pid_alive(pid) {
                remove_stale(&path, "its writer is gone");
            }
            continue;
        }
        let parsed = fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| Instance::parse(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(instance) => match staleness(&instance) {
                None => found.push(instance),
                Some(why) => remove_stale(&path, why),
            },
            Err(_) if !pid_alive(pid) => remove_stale(&path, "its process is gone"),
            Err(why) => log::debug!("skipping the instance file {}: {why}", path.display()),
        }
    }
    found.sort_by(|a, b| {
        a.started_at
            .total_cmp(&b.started_at)
            .then(a.service.port.cmp(&b.service.port))
    });
    found
}

/// The pid in an instance file's name (`<pid>-<port>.json`, or `.<pid>-<port>.json.tmp`).
fn pid_of_name(name: &str) -> Option<u32> {
    let stem = name
        .strip_suffix(".json")
        .or_else(|| name.strip_prefix('.')?.strip_suffix(".json.tmp"))?;
    let (pid, port) = stem.split_once('-')?;
    port.parse::<u16>().ok()?;
    pid.parse().ok()
}

fn remove_stale(path: &Path, why: &str) {
    log::debug!("removing the stale instance file {} ({why})", path.display());
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            log::warn!("cannot remove the stale instance file {}: {e}", path.display());
        }
    }
}

/// Why `instance` is stale, or None while it serves.
fn staleness(instance: &Instance) -> Option<&'static str> {
    let alive = pid_alive(instance.pid);
    let started = if alive { process_start(instance.pid) } else { None };
    let verdict = judge(alive, instance.process_start, started);
    if verdict != Verdict::Probe {
        return verdict.stale();
    }
    let addr = instance
        .connect_host()
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, instance.service.port));
    match addr.map(|a| TcpStream::connect_timeout(&a, PROBE_TIMEOUT)) {
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Some("its port is not answering"),
        _ => None,
    }
}

/// What the pid check says: the rule, apart from the system calls, for the unit tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Live,
    PidGone,
    PidReused,
    /// The start times cannot be compared: the port decides.
    Probe,
}

impl Verdict {
    fn stale(self) -> Option<&'static str> {
        match self {
            Verdict::Live | Verdict::Probe => None,
            Verdict::PidGone => Some("its process is gone"),
            Verdict::PidReused => Some("its pid belongs to a newer process"),
        }
    }
}

fn judge(alive: bool, recorded_start: Option<u64>, current_start: Option<u64>) -> Verdict {
    match (alive, recorded_start, current_start) {
        (false, _, _) => Verdict::PidGone,
        (true, Some(recorded), Some(current)) if recorded == current => Verdict::Live,
        (true, Some(_), Some(_)) => Verdict::PidReused,
        _ => Verdict::Probe,
    }
}

fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The process start time in clock ticks since boot (Linux; None elsewhere or when unreadable).
pub(super) fn process_start(pid: u32) -> Option<u64> {
    parse_start_time(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of `/proc/<pid>/stat`; the command name (field 2) may hold spaces and parentheses,
/// so count from the last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instances::record::tests::sample;
    use crate::instances::{Announce, Runtime};

    /// A fresh directory under the temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let path = std::env::temp_dir().join(format!(
                "blendwire-test-{tag}-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            fs::DirBuilder::new().mode(0o700).create(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_start_time_is_field_22_even_with_odd_command_names() {
        let stat = "1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time("garbage"), None);
        // This process's own, read from /proc.
        assert!(process_start(std::process::id()).is_some());
    }

    #[test]
    fn staleness_rules() {
        assert_eq!(judge(false, Some(1), None), Verdict::PidGone);
        assert_eq!(judge(true, Some(1), Some(1)), Verdict::Live);
        assert_eq!(judge(true, Some(1), Some(2)), Verdict::PidReused);
        assert_eq!(judge(true, None, Some(2)), Verdict::Probe);
        assert_eq!(judge(true, Some(1), None), Verdict::Probe);
        assert_eq!(Verdict::PidReused.stale(), Some("its pid belongs to a newer process"));
    }

    #[test]
    fn file_names() {
        assert_eq!(pid_of_name("123-6688.json"), Some(123));
        assert_eq!(pid_of_name(".123-6688.json.tmp"), Some(123));
        for name in ["x.json", "123.json", "123-99999.json", "123-6688.txt", "README"] {
            assert_eq!(pid_of_name(name), None, "{name}");
        }
    }

    /// A pid that was just in use and no longer is (a child that exited and was reaped).
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn announce_discover_and_withdraw() {
        let tmp = TempDir::new("announce");
        let dir = tmp.0.join("blendwire");
        let me = Instance::this_process(Announce {
            host: "127.0.0.1".into(),
            port: 6688,
            mcp_addon_port: None,
            token_required: false,
            blend_file: Some(String::new()),
            blender_version: "4.2.0".into(),
            runtime: Runtime::Bpy,
        });
        assert_eq!(me.service.blend_file, None, "an empty path is an unsaved file");
        let mut a = Announcement::write_in(&dir, me.clone()).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(fs::metadata(a.path()).unwrap().mode() & 0o777, 0o600);
        assert_eq!(discover_in(&dir), vec![me.clone()]);
        assert!(a.set_blend_file(Some("/x/shot.blend".into())).unwrap());
        assert!(!a.set_blend_file(Some("/x/shot.blend".into())).unwrap());
        assert_eq!(discover_in(&dir)[0].blend_name(), Some("shot.blend"));
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        assert!(discover_in(&dir).is_empty());
    }

    #[test]
    fn stale_files_are_skipped_and_removed() {
        let tmp = TempDir::new("stale");
        let dir = &tmp.0;
        let gone = sample(dead_pid(), 1234, None);
        let reused = Instance {
            process_start: process_start(std::process::id()).map(|t| t + 1),
            ..sample(std::process::id(), 1235, None)
        };
        let garbage = dir.join(format!("{}-1236.json", gone.pid));
        let temp = dir.join(format!(".{}-1237.json.tmp", gone.pid));
        let foreign = dir.join("notes.txt");
        for i in [&gone, &reused] {
            fs::write(dir.join(i.announcement_name()), i.to_json().to_string()).unwrap();
        }
        fs::write(&garbage, "{").unwrap();
        fs::write(&temp, "").unwrap();
        fs::write(&foreign, "").unwrap();
        assert!(discover_in(dir).is_empty());
        let left: Vec<_> = fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("notes.txt")],
            "only the foreign file stays"
        );
    }

    #[test]
    fn an_open_directory_is_not_trusted() {
        let tmp = TempDir::new("open");
        let me = Instance::this_process(Announce {
            host: "127.0.0.1".into(),
            port: 1,
            mcp_addon_port: None,
            token_required: false,
            blend_file: None,
            blender_version: "4.2.0".into(),
            runtime: Runtime::Bpy,
        });
        fs::write(tmp.0.join(me.announcement_name()), me.to_json().to_string()).unwrap();
        assert_eq!(discover_in(&tmp.0).len(), 1);
        fs::set_permissions(&tmp.0, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(discover_in(&tmp.0).is_empty());
        assert!(matches!(check_dir(&tmp.0), Err(InstanceError::UnsafeDir { .. })));
        // Announcing tightens a directory of ours.
        let a = Announcement::write_in(&tmp.0, me).unwrap();
        assert_eq!(fs::metadata(&tmp.0).unwrap().mode() & 0o777, 0o700);
        drop(a);
    }
}
