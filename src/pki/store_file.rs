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

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
    Ok(Some(bytes))
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
