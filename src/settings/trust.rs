//! The settings of what is kept of agents' work (issue 22): the audit log and the checkpoints.
//! Their rules, worded once, like the service's and the router's in the parent module.

use super::MIN_REQUEST_BYTES;
use super::{count, Checker, Problem};
use crate::defaults::{
    CHECKPOINT_DIR_NAME, DEFAULT_AUDIT_MAX_BYTES, DEFAULT_CHECKPOINTS, DEFAULT_CHECKPOINT_BYTES, MIN_CHECKPOINT_BYTES,
};
use crate::journal::{Audit, AuditConfig, CodeMode};
use serde::Deserialize;
// ---- the audit log ----------------------------------------------------------------------------

/// The audit log's settings as given (`blendwire serve --audit-log PATH|off --audit-code full|hash
/// --audit-max-bytes N`); `None` means the default: on, in the state directory, the code kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// A file, or `off`.
    pub audit_log: Option<String>,
    /// `full` or `hash`.
    pub audit_code: Option<String>,
    pub audit_max_bytes: Option<i64>,
}

/// `audit_log` is a file path or `off` (None: no log).
pub fn audit_log(value: &str) -> Result<Option<std::path::PathBuf>, String> {
    match value.trim() {
        "off" => Ok(None),
        "" => Err("must be a file path or off, got an empty value".into()),
        path => std::path::absolute(path)
            .map(Some)
            .map_err(|e| format!("must be a file path or off: {path:?}: {e}")),
    }
}

impl AuditSettings {
    /// The log's config (None: off), or every problem.
    pub fn resolve(self) -> Result<Option<AuditConfig>, Vec<Problem>> {
        let mut c = Checker::default();
        let path = match self.audit_log.as_deref() {
            Some(value) => c.check("audit_log", audit_log(value), None),
            None => Some(AuditConfig::default_path()),
        };
        let code = match self.audit_code.as_deref() {
            Some(name) => c.check("audit_code", CodeMode::from_name(name), CodeMode::Full),
            None => CodeMode::Full,
        };
        let max_bytes = c.count(
            "audit_max_bytes",
            self.audit_max_bytes,
            MIN_REQUEST_BYTES,
            DEFAULT_AUDIT_MAX_BYTES as usize,
        ) as u64;
        c.finish(path.map(|path| AuditConfig {
            code,
            max_bytes,
            ..AuditConfig::at(path)
        }))
    }

    /// The log opened (None: off); a file that cannot be written is a problem of `audit_log`.
    pub fn open(self) -> Result<Option<Audit>, Vec<Problem>> {
        let Some(config) = self.resolve()? else {
            return Ok(None);
        };
        let path = config.path.display().to_string();
        Audit::open(config)
            .map(Some)
            .map_err(|e| vec![audit_unwritable(&path, e)])
    }

    /// The problems of these settings, the file tried too (created if missing, as the log would).
    pub fn check(self) -> Result<(), Vec<Problem>> {
        let Some(config) = self.resolve()? else {
            return Ok(());
        };
        let path = config.path.display().to_string();
        Audit::check(config).map_err(|e| vec![audit_unwritable(&path, e)])
    }
}

fn audit_unwritable(path: &str, e: std::io::Error) -> Problem {
    Problem {
        setting: "audit_log",
        rule: format!("cannot be written: {path}: {e}; name a file you can write, or off to keep no audit log"),
    }
}

#[cfg(test)]
mod audit_tests {
    use super::*;

    #[test]
    fn the_audit_log_is_on_by_default_off_by_name_and_its_rules_are_named() {
        let on = AuditSettings::default().resolve().unwrap().expect("on by default");
        assert_eq!(on.path, AuditConfig::default_path());
        assert_eq!(on.code, CodeMode::Full);
        let off = AuditSettings {
            audit_log: Some("off".into()),
            ..AuditSettings::default()
        };
        assert_eq!(off.resolve().unwrap(), None);
        let bad = AuditSettings {
            audit_log: Some("".into()),
            audit_code: Some("some".into()),
            audit_max_bytes: Some(10),
        };
        let problems: Vec<&str> = bad.resolve().unwrap_err().iter().map(|p| p.setting).collect();
        assert_eq!(problems, ["audit_log", "audit_code", "audit_max_bytes"]);
        let unwritable = AuditSettings {
            audit_log: Some("/proc/blendwire-no-such/audit.jsonl".into()),
            ..AuditSettings::default()
        };
        let problem = &unwritable.check().unwrap_err()[0];
        assert_eq!(problem.setting, "audit_log");
        assert!(problem.rule.starts_with("cannot be written: /proc/"), "{problem}");
    }
}

// ---- checkpoints ----------------------------------------------------------------------------

/// The checkpoint settings as given (`blendwire serve --checkpoints N --checkpoint-bytes B
/// --checkpoint-dir DIR`, the add-on's preferences); `None` means the default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointSettings {
    pub checkpoints: Option<i64>,
    pub checkpoint_bytes: Option<i64>,
    pub checkpoint_dir: Option<String>,
}

/// What [`CheckpointSettings::resolve`] gives (serialized as the same three names).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoints {
    /// How many to keep; 0: off.
    pub checkpoints: usize,
    pub checkpoint_bytes: usize,
    /// An absolute folder (one folder per Blender process is made inside it).
    pub checkpoint_dir: String,
}

impl CheckpointSettings {
    /// The settings with defaults filled in (the folder: `state_dir`/checkpoints), or every problem.
    pub fn resolve(self, state_dir: &std::path::Path) -> Result<Checkpoints, Vec<Problem>> {
        let mut c = Checker::default();
        let checkpoints = match self.checkpoints {
            Some(v) => c.check(
                "checkpoints",
                count(v, 0, usize::MAX)
                    .map_err(|_| format!("must be 0 (off) or a number of checkpoints to keep, got {v}")),
                DEFAULT_CHECKPOINTS,
            ),
            None => DEFAULT_CHECKPOINTS,
        };
        let checkpoint_bytes = c.count(
            "checkpoint_bytes",
            self.checkpoint_bytes,
            MIN_CHECKPOINT_BYTES,
            DEFAULT_CHECKPOINT_BYTES,
        );
        let checkpoint_dir = match self.checkpoint_dir.filter(|d| !d.is_empty()) {
            Some(d) if std::path::Path::new(&d).is_absolute() => d,
            Some(d) => c.check(
                "checkpoint_dir",
                Err(format!("must be an absolute folder path, got {d:?}")),
                String::new(),
            ),
            None => state_dir.join(CHECKPOINT_DIR_NAME).to_string_lossy().into_owned(),
        };
        c.finish(Checkpoints {
            checkpoints,
            checkpoint_bytes,
            checkpoint_dir,
        })
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;

    #[test]
    fn checkpoint_settings_default_and_refuse_bad_values() {
        let state = std::path::Path::new("/state");
        let d = CheckpointSettings::default().resolve(state).unwrap();
        assert_eq!(d.checkpoints, DEFAULT_CHECKPOINTS);
        assert_eq!(d.checkpoint_bytes, DEFAULT_CHECKPOINT_BYTES);
        assert_eq!(d.checkpoint_dir, "/state/checkpoints");
        let off = CheckpointSettings {
            checkpoints: Some(0),
            ..Default::default()
        };
        assert_eq!(off.resolve(state).unwrap().checkpoints, 0);
        let bad = CheckpointSettings {
            checkpoints: Some(-1),
            checkpoint_bytes: Some(10),
            checkpoint_dir: Some("rel/dir".into()),
        };
        let problems = bad.resolve(state).unwrap_err();
        let names: Vec<_> = problems.iter().map(|p| p.setting).collect();
        assert_eq!(names, ["checkpoints", "checkpoint_bytes", "checkpoint_dir"]);
        assert!(problems[0].rule.contains("0 (off)"), "{}", problems[0].rule);
    }
}
