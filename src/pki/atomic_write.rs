//! Durable, atomic writes of a batch of new store files.
//!
//! Each file is written to a temporary file in its own folder (created 0600
//! or 0644 from the start, so a key is never readable by others, even
//! briefly). Once every temporary file is written, one `syncfs` flushes them
//! all; only then is each renamed into place, and a final `syncfs` makes the
//! renames durable. A crash therefore leaves either the old state or whole,
//! synced files, never a torn one; syncing once per batch instead of once
//! per file keeps thousands of small writes fast.

use std::collections::BTreeSet;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;

/// Mode of private keys and kubeconfigs.
pub const PRIVATE: u32 = 0o600;
/// Mode of certificates and public keys.
pub const PUBLIC: u32 = 0o644;
/// Mode of the store's folders.
pub const FOLDER: u32 = 0o700;

/// One file of a batch. Its `Debug` form shows the size of the contents,
/// never the bytes: most batches hold private keys.
#[derive(Clone)]
pub struct NewFile {
    /// Path relative to the store.
    pub relative: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl std::fmt::Debug for NewFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("NewFile")
            .field("relative", &self.relative)
            .field("contents", &format_args!("<{} bytes>", self.contents.len()))
            .field("mode", &format_args!("{:#o}", self.mode))
            .finish()
    }
}

/// Write `files` below `root`, creating folders 0700 as needed.
pub fn write_batch(root: &Path, files: &[NewFile]) -> anyhow::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let mut folders = BTreeSet::new();
    folders.insert(root.to_path_buf());
    for file in files {
        if let Some(parent) = root.join(&file.relative).parent() {
            folders.insert(parent.to_path_buf());
        }
    }
    for folder in &folders {
        if !folder.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(FOLDER)
                .create(folder)
                .with_context(|| format!("creating folder {}", folder.display()))?;
        }
    }

    let temporaries: Vec<anyhow::Result<PathBuf>> = files
        .par_iter()
        .map(|file| write_temporary(root, file))
        .collect();
    let mut written = Vec::with_capacity(temporaries.len());
    let mut failure = None;
    for result in temporaries {
        match result {
            Ok(path) => written.push(path),
            Err(error) => failure = failure.or(Some(error)),
        }
    }
    let result = match failure {
        Some(error) => Err(error),
        None => sync_filesystem(root),
    };
    if let Err(error) = result {
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
        return Err(error);
    }

    for (index, (temporary, file)) in written.iter().zip(files).enumerate() {
        let target = root.join(&file.relative);
        if let Err(error) = std::fs::rename(temporary, &target) {
            for leftover in &written[index..] {
                let _ = std::fs::remove_file(leftover);
            }
            return Err(error).with_context(|| format!("renaming {} into place", target.display()));
        }
    }
    sync_filesystem(root)
}

fn write_temporary(root: &Path, file: &NewFile) -> anyhow::Result<PathBuf> {
    let target = root.join(&file.relative);
    let parent = target.parent().unwrap_or(root);
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: u64 = rand::random();
    let temporary = parent.join(format!(".{name}.{suffix:016x}.tmp"));
    let mut handle = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(file.mode)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    let result = handle.write_all(&file.contents).and_then(|()| {
        handle.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(file.mode))
    });
    if let Err(error) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("writing {}", temporary.display()));
    }
    Ok(temporary)
}

/// Flush every dirty page of the filesystem holding `root`.
fn sync_filesystem(root: &Path) -> anyhow::Result<()> {
    let handle = File::open(root).with_context(|| format!("opening {}", root.display()))?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open.
    let status = unsafe { libc::syncfs(handle.as_raw_fd()) };
    if status != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("syncing the filesystem of {}", root.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_contents() {
        let key = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n".to_vec();
        let file = NewFile {
            relative: "ca.key".to_string(),
            contents: key.clone(),
            mode: PRIVATE,
        };
        let shown = format!("{file:?}");
        assert!(shown.contains("ca.key"), "{shown}");
        assert!(shown.contains("0o600"), "{shown}");
        assert!(!shown.contains(&format!("{key:?}")), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(!shown.contains("45, 45, 45"), "{shown}");
    }
}
