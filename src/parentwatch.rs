//! Ask the main thread to stop when another process exits: a `blendwire serve` killed with SIGKILL
//! leaves nobody else to stop its Blender. The wait is a pidfd registered with the service's I/O
//! runtime, so it costs no thread of its own and no polling.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A pidfd for `pid` (Linux ≥ 5.3); fails if the process is already gone.
pub fn open(pid: u32) -> io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Resolves when the process behind `fd` exits (a pidfd becomes readable then).
pub async fn exited(fd: OwnedFd) -> io::Result<()> {
    // SAFETY: the AsyncFd owns the descriptor, so it stays open for as long as it is registered.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
    let _ready = fd.readable().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn resolves_when_the_child_exits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().unwrap();
        let fd = open(child.id()).unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), exited(fd))
                .await
                .expect("pidfd never became readable")
                .unwrap()
        });
        child.wait().unwrap();
    }

    #[test]
    fn a_missing_process_is_an_error() {
        assert!(open(i32::MAX as u32).is_err());
    }
}
