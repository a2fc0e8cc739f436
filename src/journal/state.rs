//! The user's state directory, where checkpoints and the audit log are kept by default:
//! `$XDG_STATE_HOME/blendwire`, else `~/.local/state/blendwire` (the XDG base directory rule).
//! Private: made 0700, and a folder that is not ours or open to others is refused.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// `$XDG_STATE_HOME/blendwire`, else `$HOME/.local/state/blendwire`, else (no home) the temp
/// dir's `blendwire-state-<uid>`.
pub fn state_dir() -> PathBuf {
    let absolute = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(base) = absolute("XDG_STATE_HOME") {
        return base.join("blendwire");
    }
    match absolute("HOME") {
        Some(home) => home.join(".local").join("state").join("blendwire"),
        None => std::env::temp_dir().join(format!("blendwire-state-{}", uid())),
    }
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

/// Make `dir` (and its parents) if missing, mode 0700, and check that it is a directory of ours
/// that nobody else can read: what is kept there is the user's scene and the code agents ran.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    check_private(dir).map_err(|why| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private folder of yours: {why}; chmod 700 it",
                dir.display()
            ),
        )
    })
}

/// Why `dir` is not a directory of this user's that only they can reach (None of that: Ok).
/// The one rule for every private folder (the state directory, the instance directory).
pub fn check_private(dir: &Path) -> Result<(), String> {
    let meta = fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if !meta.file_type().is_dir() {
        return Err("not a directory (or a symbolic link)".into());
    }
    if meta.uid() != uid() {
        return Err(format!("owned by uid {}, not {}", meta.uid(), uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!("mode {:o}", meta.mode() & 0o777));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_private_dir_is_made_0700_and_an_open_one_refused() {
        let base = std::env::temp_dir().join(format!("bw-state-test-{}", std::process::id()));
        let dir = base.join("a").join("blendwire");
        private_dir(&dir).expect("made");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = private_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("chmod 700"), "{err}");
        fs::remove_dir_all(&base).unwrap();
    }
}
