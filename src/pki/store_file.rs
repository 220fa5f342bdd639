//! Reading one file of the PKI store, trusting nothing about it.
//!
//! The store is a folder an operator (or an attacker with write access to
//! it) may have changed by hand. A file is read only when every component
//! of its path below the store is a real folder and the file itself is a
//! regular file, not a symlink: each component is opened with `openat` and
//! `O_NOFOLLOW`, so a symlink cannot smuggle `/etc/shadow` or another
//! store's key in, even if it is swapped in between a check and the read.
//! A FIFO cannot hang the run (`O_NONBLOCK`, then the type is checked), a
//! huge file is refused by size, and a private key or kubeconfig others may
//! read is refused with the `chmod` that fixes it.
//!
//! A run reads the store through one [`Snapshot`]: a single walk that lists
//! every folder once (through descriptors opened the same way) and reads
//! each certificate, key and kubeconfig in it once, with the same checks.
//! A file the walk did not list is known to be missing without another
//! `open`; anything the walk could not vouch for (a symlink, a FIFO, a
//! group-readable key, an unlisted folder) is left to [`read`], which
//! says exactly what is wrong with it.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rayon::prelude::*;

use crate::error::bad_input;
use crate::input_file::{kind_of, MAX_TEXT_FILE};

/// Whether a store file is private (a key or a kubeconfig: mode 0600).
pub(crate) fn is_private(relative: &str) -> bool {
    relative.ends_with(".key") || relative.ends_with(".conf")
}

/// The bytes of store file `relative` below `root`, `None` when it does not
/// exist. Anything else that is not a plain, private-enough regular file of
/// sane size is bad input naming the file.
pub(crate) fn read(root: &Path, relative: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let path = root.join(relative);
    let named = |why: String| bad_input(format!("{}: {why}", path.display()));
    let components: Vec<&str> = relative.split('/').collect();
    if components
        .iter()
        .any(|part| part.is_empty() || *part == "." || *part == "..")
    {
        return Err(named("not a path inside the PKI store".to_string()));
    }
    let Some((name, folders)) = components.split_last() else {
        return Err(named("not a path inside the PKI store".to_string()));
    };
    // The store folder itself may be reached through a symlink of the
    // operator's choosing (pki_dir); nothing below it may.
    let mut folder = match open_at(None, root, libc::O_DIRECTORY) {
        Ok(folder) => folder,
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(error) => {
            return Err(bad_input(format!(
                "{}: cannot open the PKI store: {error}",
                root.display()
            )))
        }
    };
    let mut so_far = root.to_path_buf();
    for part in folders {
        so_far.push(part);
        match open_at(
            Some(&folder),
            Path::new(part),
            libc::O_DIRECTORY | libc::O_NOFOLLOW,
        ) {
            Ok(next) => folder = next,
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(error) => {
                return Err(bad_input(format!(
                    "{}: {}",
                    so_far.display(),
                    describe(&so_far, &error, "folder")
                )))
            }
        }
    }
    let file = match open_at(
        Some(&folder),
        Path::new(name),
        libc::O_NOFOLLOW | libc::O_NONBLOCK,
    ) {
        Ok(file) => File::from(file),
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(error) => return Err(named(describe(&path, &error, "file"))),
    };
    read_opened(file, relative, &path).map(Some)
}

/// The bytes of the store file `relative` (at `path`), opened without
/// following symlinks: it must be a regular file of sane size, private
/// enough when it holds a key.
fn read_opened(file: File, relative: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let named = |why: String| bad_input(format!("{}: {why}", path.display()));
    let metadata = file
        .metadata()
        .map_err(|error| named(format!("cannot read: {error}")))?;
    if !metadata.file_type().is_file() {
        return Err(named(format!(
            "{}, not a regular file",
            kind_of(metadata.file_type())
        )));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if is_private(relative) && mode & 0o077 != 0 {
        return Err(named(format!(
            "mode {mode:04o} lets other users read this private file; \
             run `chmod 600 {}`",
            path.display()
        )));
    }
    if metadata.len() > MAX_TEXT_FILE {
        return Err(named(format!(
            "larger than the {} KiB limit",
            MAX_TEXT_FILE / 1024
        )));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_TEXT_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| named(format!("cannot read: {error}")))?;
    if bytes.len() as u64 > MAX_TEXT_FILE {
        return Err(named(format!(
            "larger than the {} KiB limit",
            MAX_TEXT_FILE / 1024
        )));
    }
    Ok(bytes)
}

/// The folder below the store whose contents a walk lists but does not
/// read: departed hosts' material and rotated-out CAs, which no check
/// needs.
const NOT_READ: &str = "archive";

/// What one walk of the store found (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The store folder does not exist: every file is missing.
    missing_store: bool,
    /// Every folder listed in full (store-relative, `""` for the store
    /// itself), with the names of everything in it.
    listed: HashMap<String, HashSet<String>>,
    /// The store files read during the walk, each passing [`read`]'s checks.
    files: HashMap<String, Vec<u8>>,
}

/// What a [`Snapshot`] knows of one store file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    /// Read during the walk.
    Read(&'a [u8]),
    /// Not in the store: some folder on its path was listed without it.
    Missing,
    /// The walk cannot vouch for it: [`read`] it.
    Unknown,
}

impl Snapshot {
    /// Walk the store below `root` once. A store that cannot be opened
    /// yields an empty snapshot that knows nothing (so [`read`] reports
    /// why); one that does not exist, a snapshot where everything is
    /// missing.
    pub(crate) fn take(root: &Path) -> Snapshot {
        match open_at(None, root, libc::O_DIRECTORY) {
            Ok(folder) => walk(&folder, String::new()),
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Snapshot {
                missing_store: true,
                ..Snapshot::default()
            },
            Err(_) => Snapshot::default(),
        }
    }

    pub(crate) fn lookup(&self, relative: &str) -> Lookup<'_> {
        if let Some(bytes) = self.files.get(relative) {
            return Lookup::Read(bytes);
        }
        let parts: Vec<&str> = relative.split('/').collect();
        if parts
            .iter()
            .any(|part| part.is_empty() || *part == "." || *part == "..")
        {
            return Lookup::Unknown;
        }
        if self.missing_store {
            return Lookup::Missing;
        }
        let mut folder = String::new();
        for part in parts {
            let Some(names) = self.listed.get(&folder) else {
                return Lookup::Unknown;
            };
            if !names.contains(part) {
                return Lookup::Missing;
            }
            if !folder.is_empty() {
                folder.push('/');
            }
            folder.push_str(part);
        }
        Lookup::Unknown
    }

    fn merge(&mut self, other: Snapshot) {
        self.listed.extend(other.listed);
        self.files.extend(other.files);
    }
}

/// Whether a walk reads a file of this name: the store's certificates,
/// keys and kubeconfigs, nothing else (not the lock, not temporaries).
fn is_store_material(name: &str) -> bool {
    !name.starts_with('.')
        && [".crt", ".key", ".pub", ".conf"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// List `folder` (store-relative `relative`), read its store files and walk
/// its subfolders, these in parallel. What cannot be listed or read is left
/// out, for [`read`] to explain if anything asks for it.
fn walk(folder: &OwnedFd, relative: String) -> Snapshot {
    let mut snapshot = Snapshot::default();
    let Ok(entries) = list(folder) else {
        return snapshot;
    };
    let below = |name: &str| {
        if relative.is_empty() {
            name.to_string()
        } else {
            format!("{relative}/{name}")
        }
    };
    let mut subfolders = Vec::new();
    for (name, kind) in &entries {
        match *kind {
            // Not a folder of the store's: an uncommitted batch's new
            // folder (`.w9.<16 hex>.tmp`) among them.
            libc::DT_DIR if name.starts_with('.') => {}
            libc::DT_DIR if !(relative.is_empty() && name == NOT_READ) => {
                if let Ok(subfolder) = open_at(
                    Some(folder),
                    Path::new(name),
                    libc::O_DIRECTORY | libc::O_NOFOLLOW,
                ) {
                    subfolders.push((subfolder, below(name)));
                }
            }
            libc::DT_REG if is_store_material(name) => {
                let file_relative = below(name);
                let opened = open_at(
                    Some(folder),
                    Path::new(name),
                    libc::O_NOFOLLOW | libc::O_NONBLOCK,
                );
                if let Ok(file) = opened {
                    if let Ok(bytes) =
                        read_opened(File::from(file), &file_relative, Path::new(&file_relative))
                    {
                        snapshot.files.insert(file_relative, bytes);
                    }
                }
            }
            _ => {}
        }
    }
    snapshot.listed.insert(
        relative,
        entries.into_iter().map(|(name, _)| name).collect(),
    );
    let walked: Vec<Snapshot> = subfolders
        .into_par_iter()
        .map(|(subfolder, subfolder_relative)| walk(&subfolder, subfolder_relative))
        .collect();
    for below in walked {
        snapshot.merge(below);
    }
    snapshot
}

/// The entries of an open folder (without `.` and `..`) with their types
/// as the folder records them (`DT_*`; `DT_UNKNOWN` where the filesystem
/// does not say). Names that are not UTF-8 are left out: no store path has
/// one.
fn list(folder: &OwnedFd) -> std::io::Result<Vec<(String, u8)>> {
    // SAFETY: F_DUPFD_CLOEXEC only reads the descriptor `folder` keeps open.
    let duplicate = unsafe { libc::fcntl(folder.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if duplicate < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `duplicate` is a new descriptor of a folder; on success the
    // stream owns it and `closedir` below closes it.
    let stream = unsafe { libc::fdopendir(duplicate) };
    if stream.is_null() {
        let error = std::io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `duplicate` is still ours to close.
        unsafe { libc::close(duplicate) };
        return Err(error);
    }
    let mut entries = Vec::new();
    let result = loop {
        // SAFETY: readdir reports errors only through errno, so clear it
        // first; the thread's errno location is always valid.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `stream` is an open directory stream used by this thread
        // only.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            let error = std::io::Error::last_os_error();
            break match error.raw_os_error() {
                Some(0) | None => Ok(()),
                Some(_) => Err(error),
            };
        }
        // SAFETY: a non-null entry points to a dirent whose d_name is
        // NUL-terminated and valid until the next readdir on `stream`.
        let (name, kind) = unsafe { (CStr::from_ptr((*entry).d_name.as_ptr()), (*entry).d_type) };
        let Ok(name) = name.to_str() else {
            continue;
        };
        if name != "." && name != ".." {
            entries.push((name.to_string(), kind));
        }
    };
    // SAFETY: `stream` is open and not used after this.
    unsafe { libc::closedir(stream) };
    result.map(|()| entries)
}

/// Why opening `path` without following symlinks failed, in words.
fn describe(path: &Path, error: &std::io::Error, expected: &str) -> String {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            "a symlink; the PKI store holds no symlinks (replace it with the real file)".to_string()
        }
        Ok(metadata) if expected == "folder" && !metadata.is_dir() => format!(
            "{}, where the PKI store needs a folder",
            kind_of(metadata.file_type())
        ),
        _ => format!("cannot open: {error}"),
    }
}

/// `openat(folder, path, O_RDONLY | O_CLOEXEC | flags)`; `folder` `None`
/// means relative to the working directory.
fn open_at(folder: Option<&OwnedFd>, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let name = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let base = folder.map_or(libc::AT_FDCWD, |folder| folder.as_raw_fd());
    // SAFETY: `name` is NUL-terminated and outlives the call; `base` is
    // either AT_FDCWD or a descriptor `folder` keeps open.
    let descriptor = unsafe {
        libc::openat(
            base,
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | flags,
        )
    };
    if descriptor < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(descriptor) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    fn write(path: &Path, mode: u32) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("folders");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .expect("create");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("mode");
    }

    #[test]
    fn symlinks_anywhere_below_the_store_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        let outside = dir.path().join("outside");
        write(&outside.join("ca.key"), 0o600);
        std::fs::create_dir_all(&store).expect("store");
        std::os::unix::fs::symlink(outside.join("ca.key"), store.join("ca.key")).expect("link");
        std::os::unix::fs::symlink(&outside, store.join("nodes")).expect("link");
        let error = read(&store, "ca.key").expect_err("file symlink");
        assert!(error.to_string().contains("a symlink"), "{error}");
        let error = read(&store, "nodes/ca.key").expect_err("folder symlink");
        assert!(
            error.to_string().contains("store/nodes: a symlink"),
            "{error}"
        );
        // Even when the file would not exist behind the link.
        assert!(read(&store, "nodes/none.crt").is_err());
        // A store reached through a symlink of the operator's is fine.
        std::os::unix::fs::symlink(&outside, dir.path().join("via")).expect("link");
        assert!(read(&dir.path().join("via"), "ca.key")
            .expect("read")
            .is_some());
    }

    #[test]
    fn one_walk_reads_sound_files_and_leaves_the_rest_to_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        let outside = dir.path().join("outside");
        write(&store.join("ca.crt"), 0o644);
        std::fs::write(store.join("ca.crt"), "ca").expect("write");
        write(&store.join("nodes/m1/etcd/server.key"), 0o600);
        write(&store.join("nodes/m1/kubelet.key"), 0o640);
        write(&outside.join("kubelet.crt"), 0o644);
        std::os::unix::fs::symlink(&outside, store.join("nodes/w1")).expect("link");
        std::os::unix::fs::symlink(outside.join("kubelet.crt"), store.join("sa.pub"))
            .expect("link");
        write(&store.join("archive/old/ca.crt"), 0o644);

        let snapshot = Snapshot::take(&store);
        assert_eq!(snapshot.lookup("ca.crt"), Lookup::Read(b"ca"));
        assert_eq!(
            snapshot.lookup("nodes/m1/etcd/server.key"),
            Lookup::Read(b"")
        );
        for missing in [
            "ca.key",
            "etcd/ca.crt",
            "nodes/m2/kubelet.crt",
            "nodes/m1/a.crt",
        ] {
            assert_eq!(snapshot.lookup(missing), Lookup::Missing, "{missing}");
        }
        // What the walk cannot vouch for, `read` explains.
        for unknown in [
            "nodes/m1/kubelet.key",
            "nodes/w1/kubelet.crt",
            "sa.pub",
            "archive/old/ca.crt",
            "../ca.crt",
        ] {
            assert_eq!(snapshot.lookup(unknown), Lookup::Unknown, "{unknown}");
            if unknown != "archive/old/ca.crt" {
                assert!(read(&store, unknown).is_err(), "{unknown}");
            }
        }
        assert_eq!(
            Snapshot::take(&dir.path().join("none")).lookup("ca.crt"),
            Lookup::Missing
        );
    }

    #[test]
    fn private_files_others_may_read_and_special_files_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        write(&dir.path().join("ca.key"), 0o640);
        let error = read(dir.path(), "ca.key").expect_err("group-readable key");
        assert!(error.to_string().contains("chmod 600"), "{error}");
        write(&dir.path().join("ca.crt"), 0o644);
        assert_eq!(
            read(dir.path(), "ca.crt").expect("public"),
            Some(Vec::new())
        );
        assert!(read(dir.path(), "missing.crt").expect("missing").is_none());
        assert!(read(dir.path(), "no/such/folder.crt")
            .expect("missing")
            .is_none());
        std::fs::create_dir(dir.path().join("sa.pub")).expect("folder");
        let error = read(dir.path(), "sa.pub").expect_err("folder");
        assert!(
            error.to_string().contains("a folder, not a regular file"),
            "{error}"
        );
        assert!(read(dir.path(), "../ca.crt").is_err());
    }
}
