//! The run lock: two runs must not change the same cluster at once.
//!
//! An exclusive `flock` on `.ocfk8s.lock` in the cluster's PKI store folder
//! (the one place every run against a cluster shares). The kernel drops the
//! lock when the process ends, however it ends, so a crash never leaves a
//! stale lock; the file's text (pid, user, machine, command, start time) only
//! tells a refused run who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

pub(crate) const LOCK_FILE: &str = ".ocfk8s.lock";

/// Held for the whole run; released when dropped or when the process ends.
#[derive(Debug)]
pub(crate) struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Take the lock of the cluster whose store is `pki_dir`, or fail at once
/// naming the lock file and its holder.
pub(crate) fn acquire(pki_dir: &Path, command: &str) -> anyhow::Result<RunLock> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(pki_dir)
        .with_context(|| format!("creating the PKI store folder {}", pki_dir.display()))?;
    let path = pki_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("opening the run lock {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error).with_context(|| format!("locking {}", path.display()));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        bail!(
            "another ocfk8s run holds the lock {}: {}",
            path.display(),
            if holder.is_empty() {
                "holder unknown"
            } else {
                holder
            }
        );
    }
    let holder = format!(
        "pid {} ({}@{}), `ocfk8s {command}`, since {}\n",
        std::process::id(),
        std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        hostname(),
        time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    );
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(holder.as_bytes()))
        .and_then(|()| file.flush())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(RunLock { _file: file, path })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_until_the_first_is_released() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("pki/test");
        let first = acquire(&store, "bootstrap").expect("first lock");
        let error = acquire(&store, "bootstrap").expect_err("second lock");
        let message = error.to_string();
        assert!(message.contains(LOCK_FILE), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        assert!(message.contains("`ocfk8s bootstrap`"), "{message}");
        drop(first);
        acquire(&store, "bootstrap").expect("lock after release");
    }
}
