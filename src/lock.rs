//! The run lock: two runs must not change the same cluster at once, and no
//! run reads the PKI store while another is writing it.
//!
//! A `flock` on `.ocfk8s.lock` in the cluster's PKI store folder (the one
//! place every run against a cluster shares). Runs that write the store or
//! the hosts (`bootstrap`, `pki generate`, `pki import`) hold it exclusively;
//! runs that only read the store (`render`, `plan`, `kubeconfig`,
//! `certs check`) hold it shared while they read, so they never see a batch
//! half-written. The kernel drops the lock when the process ends, however it
//! ends, so a crash never leaves a stale lock; the file's text (pid, user,
//! machine, command, start time) only tells a waiting or refused run who
//! holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::error::bad_input;

pub(crate) const LOCK_FILE: &str = ".ocfk8s.lock";

/// How long a run that only needs the store waits for a writer to finish.
pub(crate) const STORE_WAIT: Duration = Duration::from_secs(120);

/// Held for the whole run; released when dropped or when the process ends.
#[derive(Debug)]
pub(crate) struct RunLock {
    file: File,
    path: PathBuf,
    exclusive: bool,
    /// This run created the store folder (to hold the lock).
    created_store: bool,
}

impl RunLock {
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    /// A run that created the store folder only to hold the lock and then
    /// failed leaves nothing behind: the folder is removed again when it
    /// holds nothing but the lock file.
    pub(crate) fn release_unused_store(self) {
        if !self.created_store {
            return;
        }
        let Some(folder) = self.path.parent().map(Path::to_path_buf) else {
            return;
        };
        let only_the_lock = std::fs::read_dir(&folder).is_ok_and(|entries| {
            entries
                .flatten()
                .all(|entry| entry.file_name() == LOCK_FILE)
        });
        if only_the_lock {
            // Runs waiting on this lock file notice it is gone (see
            // `still_current`) and start over.
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_dir(&folder);
        }
    }
}

/// Whether the lock file at `path` is still the one `file` has open: a
/// run that removed it (see [`RunLock::release_unused_store`]) makes the
/// lock just taken meaningless.
fn still_current(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

impl Drop for RunLock {
    /// An exclusive holder clears its name on the way out, so nobody is
    /// later told that a finished run holds the lock.
    fn drop(&mut self) {
        if self.exclusive {
            let _ = self.file.set_len(0);
        }
    }
}

/// The store folder must be a folder (or not exist yet): a regular file
/// there is bad input, named, before anything is created.
pub(crate) fn check_store_folder(pki_dir: &Path) -> anyhow::Result<bool> {
    match std::fs::metadata(pki_dir) {
        Ok(metadata) if metadata.is_dir() => Ok(true),
        Ok(metadata) => Err(bad_input(format!(
            "{}: pki_dir is {}, not a folder",
            pki_dir.display(),
            if metadata.is_file() {
                "a file"
            } else {
                crate::input_file::kind_of(metadata.file_type())
            }
        ))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(bad_input(format!("{}: {error}", pki_dir.display()))),
    }
}

/// Create the store folder unless it exists; `true` when created.
fn create_store_folder(pki_dir: &Path) -> anyhow::Result<bool> {
    if check_store_folder(pki_dir)? {
        return Ok(false);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(pki_dir)
        .map_err(|error| {
            // A parent that is a regular file is the operator's mistake.
            if error.raw_os_error() == Some(libc::ENOTDIR) {
                bad_input(format!(
                    "{}: cannot create the PKI store folder: {error}",
                    pki_dir.display()
                ))
            } else {
                anyhow::Error::new(error).context(format!(
                    "creating the PKI store folder {}",
                    pki_dir.display()
                ))
            }
        })?;
    Ok(true)
}

fn open_lock_file(pki_dir: &Path) -> anyhow::Result<(File, PathBuf)> {
    let path = pki_dir.join(LOCK_FILE);
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path);
    let file = match opened {
        Ok(file) => file,
        // A store this user may read but not write: a shared lock through
        // a read-only descriptor still keeps writers out.
        Err(error) if matches!(error.raw_os_error(), Some(libc::EACCES) | Some(libc::EROFS)) => {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .with_context(|| format!("opening the run lock {}", path.display()))?
        }
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
            return Err(bad_input(format!(
                "{}: a symlink; the PKI store holds no symlinks",
                path.display()
            )))
        }
        Err(error) => {
            return Err(error).with_context(|| format!("opening the run lock {}", path.display()))
        }
    };
    Ok((file, path))
}

/// Try `operation` (`LOCK_EX` or `LOCK_SH`) without blocking: `Ok(false)`
/// when another run holds a conflicting lock.
fn try_flock(file: &File, path: &Path, operation: i32) -> anyhow::Result<bool> {
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(error).with_context(|| format!("locking {}", path.display()))
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.take(4096).read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        "a run reading the store".to_string()
    } else {
        text.to_string()
    }
}

fn write_holder(file: &mut File, path: &Path, command: &str) -> anyhow::Result<()> {
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
        .with_context(|| format!("writing {}", path.display()))
}

/// Take the lock of the cluster whose store is `pki_dir` exclusively, or
/// fail at once naming the lock file and its holder.
pub(crate) fn acquire(pki_dir: &Path, command: &str) -> anyhow::Result<RunLock> {
    let created_store = create_store_folder(pki_dir)?;
    loop {
        let (mut file, path) = open_lock_file(pki_dir)?;
        if !try_flock(&file, &path, libc::LOCK_EX)? {
            bail!(
                "another ocfk8s run holds the lock {}: {}",
                path.display(),
                holder(&mut file)
            );
        }
        if !still_current(&file, &path) {
            create_store_folder(pki_dir)?;
            continue;
        }
        write_holder(&mut file, &path, command)?;
        return Ok(RunLock {
            file,
            path,
            exclusive: true,
            created_store,
        });
    }
}

/// Take the lock exclusively, waiting up to `wait` for the run holding it
/// (`waiting` is told once who that is); then fail naming the holder.
pub(crate) fn acquire_waiting(
    pki_dir: &Path,
    command: &str,
    wait: Duration,
    waiting: &dyn Fn(&str),
) -> anyhow::Result<RunLock> {
    let start = Instant::now();
    let mut created_store = create_store_folder(pki_dir)?;
    loop {
        let (mut file, path) = open_lock_file(pki_dir)?;
        let left = wait.saturating_sub(start.elapsed());
        wait_for(&mut file, &path, libc::LOCK_EX, left, wait, waiting)?;
        if !still_current(&file, &path) {
            created_store |= create_store_folder(pki_dir)?;
            continue;
        }
        write_holder(&mut file, &path, command)?;
        return Ok(RunLock {
            file,
            path,
            exclusive: true,
            created_store,
        });
    }
}

/// Take the lock shared (for reading the store), waiting up to `wait` for
/// a writer. `None` when there is no store folder; a regular file in its
/// place is bad input.
pub(crate) fn acquire_shared(
    pki_dir: &Path,
    wait: Duration,
    waiting: &dyn Fn(&str),
) -> anyhow::Result<Option<RunLock>> {
    let start = Instant::now();
    loop {
        if !check_store_folder(pki_dir)? {
            return Ok(None);
        }
        let (mut file, path) = open_lock_file(pki_dir)?;
        let left = wait.saturating_sub(start.elapsed());
        wait_for(&mut file, &path, libc::LOCK_SH, left, wait, waiting)?;
        if !still_current(&file, &path) {
            continue;
        }
        return Ok(Some(RunLock {
            file,
            path,
            exclusive: false,
            created_store: false,
        }));
    }
}

fn wait_for(
    file: &mut File,
    path: &Path,
    operation: i32,
    left: Duration,
    wait: Duration,
    waiting: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut told = false;
    let mut pause = Duration::from_millis(5);
    loop {
        if try_flock(file, path, operation)? {
            return Ok(());
        }
        if !told {
            waiting(&format!(
                "waiting up to {}s for the run lock {}, held by {}",
                wait.as_secs(),
                path.display(),
                holder(file)
            ));
            told = true;
        }
        if start.elapsed() >= left {
            bail!(
                "gave up after {}s waiting for the run lock {}, held by {}",
                wait.as_secs(),
                path.display(),
                holder(file)
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
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
        // Other tests in this process spawn programs: a child forked while
        // the lock was open shares it until its exec closes the copy.
        let started = std::time::Instant::now();
        loop {
            match acquire(&store, "bootstrap") {
                Ok(_) => break,
                Err(error) if started.elapsed() < Duration::from_secs(5) => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(error) => panic!("lock after release: {error:#}"),
            }
        }
    }

    #[test]
    fn a_waiting_writer_names_the_holder_and_gives_up_after_its_wait() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("pki/test");
        let first = acquire(&store, "pki generate").expect("first lock");
        let told = std::cell::RefCell::new(Vec::new());
        let error = acquire_waiting(&store, "pki generate", Duration::from_millis(50), &|text| {
            told.borrow_mut().push(text.to_string())
        })
        .expect_err("held");
        assert!(
            error.to_string().contains("`ocfk8s pki generate`"),
            "{error}"
        );
        assert_eq!(told.borrow().len(), 1);
        assert!(
            told.borrow()[0].contains("waiting up to"),
            "{:?}",
            told.borrow()
        );
        // Readers wait for the writer too.
        assert!(acquire_shared(&store, Duration::from_millis(20), &|_| {}).is_err());
        drop(first);
        let reader = acquire_shared(&store, Duration::from_millis(20), &|_| {})
            .expect("shared")
            .expect("store exists");
        let second_reader = acquire_shared(&store, Duration::from_millis(20), &|_| {})
            .expect("two readers at once");
        assert!(second_reader.is_some());
        assert!(
            acquire_waiting(&store, "pki generate", Duration::from_millis(20), &|_| {}).is_err()
        );
        drop(reader);
        drop(second_reader);
        acquire_waiting(&store, "pki generate", Duration::from_millis(20), &|_| {})
            .expect("free again");
    }

    #[test]
    fn a_regular_file_as_the_store_is_bad_input_and_no_store_is_none() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("pki");
        std::fs::write(&file, "x").expect("write");
        let error = acquire(&file, "pki generate").expect_err("a file");
        assert_eq!(crate::error::exit_code(&error), 2, "{error}");
        assert!(error.to_string().contains("not a folder"), "{error}");
        let error = acquire(&file.join("k8s"), "pki generate").expect_err("below a file");
        assert_eq!(crate::error::exit_code(&error), 2, "{error}");
        assert!(
            acquire_shared(&dir.path().join("none"), Duration::ZERO, &|_| {})
                .expect("no store")
                .is_none()
        );
    }
}
