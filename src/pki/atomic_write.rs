//! Durable, atomic, recoverable writes of a batch of new store files.
//!
//! A batch (everything one `pki generate` or `pki import` adds) must reach
//! the disk whole or not at all, even if the run is killed or the machine
//! loses power at any instant. Under the exclusive run lock:
//!
//! 1. each file is written to a temporary beside its target
//!    (`.<name>.<16 hex digits>.tmp`, created 0600 or 0644 from the start,
//!    so a key is never readable by others, even briefly) and fsynced, and
//!    so is every folder holding one;
//! 2. the journal [`JOURNAL`] listing every (temporary, target) rename is
//!    written the same way and renamed into place: the batch is committed;
//! 3. every temporary is renamed over its target, the folders are fsynced,
//!    and the journal is removed.
//!
//! A run killed before step 2 leaves only temporaries: the next locked run
//! ([`recover`]) removes them, so the batch never happened. A run killed
//! after step 2 leaves a journal: the next locked run finishes its renames.
//! Either way the store is whole again before anything reads it, and no
//! temporary survives.
//!
//! # Reaching the disk
//!
//! Every folder is created once, outermost first, before any file. What is
//! flushed, and when, does not depend on how (see [`Durability`]): the
//! temporaries and their folders are on the disk before the journal is
//! written, the journal before the first rename, and the renames before
//! the journal is removed and the batch reported written; a power cut at
//! any instant leaves the old store or the new one. Two ways give that:
//!
//! - one `syncfs` on the store's filesystem for all the temporaries and
//!   folders (and one more after the renames). It costs one flush instead
//!   of one per file, but it also waits for everything else being written
//!   to that filesystem, so it is used only while little else is waiting
//!   to be written ([`SYNCFS_DIRTY_LIMIT`]);
//! - otherwise, an `fsync` of each temporary (many at once, so the
//!   filesystem commits them together) and of each folder, which waits for
//!   nothing but the batch.

use std::collections::BTreeSet;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use rayon::prelude::*;

use crate::error::bad_input;
use crate::lock::RunLock;

/// Mode of private keys and kubeconfigs.
pub const PRIVATE: u32 = 0o600;
/// Mode of certificates and public keys.
pub const PUBLIC: u32 = 0o644;
/// Mode of the store's folders.
pub const FOLDER: u32 = 0o700;

/// The committed batch whose renames are not known to be finished.
pub const JOURNAL: &str = ".ocfk8s-batch";
const JOURNAL_HEADER: &str = "ocfk8s batch 1";
/// A journal that also removes files (a CA rotation moving the second CA
/// away): older readers refuse it rather than half-apply it.
const JOURNAL_HEADER_REMOVING: &str = "ocfk8s batch 2";
/// The first field of a journal line removing its target.
const REMOVE: &str = "remove";
const JOURNAL_END: &str = "end";

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

/// What [`recover`] had to do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Renames of an interrupted, committed batch finished now.
    pub finished: usize,
    /// Temporaries of interrupted batches removed.
    pub removed: usize,
}

/// Whether `name` is one of our temporaries: `.<name>.<16 hex>.tmp`.
pub(crate) fn is_temporary(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".tmp") else {
        return false;
    };
    let Some((head, suffix)) = stem.rsplit_once('.') else {
        return false;
    };
    head.len() > 1
        && head.starts_with('.')
        && suffix.len() == 16
        && suffix
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

fn temporary_name(target: &str) -> String {
    let (folder, name) = match target.rsplit_once('/') {
        Some((folder, name)) => (Some(folder), name),
        None => (None, target),
    };
    let suffix: u64 = rand::random();
    let temporary = format!(".{name}.{suffix:016x}.tmp");
    match folder {
        Some(folder) => format!("{folder}/{temporary}"),
        None => temporary,
    }
}

/// Folders fsyncs and renames touch, deepest first never mattering.
fn folders_of<'a>(root: &Path, relatives: impl Iterator<Item = &'a str>) -> BTreeSet<PathBuf> {
    let mut folders = BTreeSet::new();
    folders.insert(root.to_path_buf());
    for relative in relatives {
        if let Some(parent) = root.join(relative).parent() {
            folders.insert(parent.to_path_buf());
        }
    }
    folders
}

/// Write `files` below `root` as one batch (see the module docs), creating
/// folders 0700 as needed. The caller holds the exclusive run lock.
pub fn write_batch(lock: &RunLock, root: &Path, files: &[NewFile]) -> anyhow::Result<()> {
    write_batch_removing(lock, root, files, &[])
}

/// [`write_batch`], also removing the store files `removals` (relative) in
/// the same batch: once the journal is committed, the renames and then the
/// removals are finished even by the next run; before, nothing changed.
pub fn write_batch_removing(
    lock: &RunLock,
    root: &Path,
    files: &[NewFile],
    removals: &[String],
) -> anyhow::Result<()> {
    write_batch_until(lock, root, files, removals, Interrupt::Never)
}

/// How a batch's files and folders are made durable (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// One `syncfs` of the store's filesystem per step.
    SyncFilesystem,
    /// An `fsync` of every temporary and every folder.
    SyncEach,
}

/// Above this much data waiting to be written on the machine (dirty or
/// under writeback, as `/proc/meminfo` says), a `syncfs` could wait for
/// far more than the batch: the batch fsyncs its own files instead. About
/// a tenth of a second of writing on a disk that takes 1.5 GB/s (one
/// shared virtual disk measured 0.17 s to flush 256 MiB); a machine where
/// builds keep tens of MiB dirty still gets the cheap way.
pub(crate) const SYNCFS_DIRTY_LIMIT: u64 = 128 * 1024 * 1024;

/// Lets a benchmark or a test choose the [`Durability`]: `syncfs` or
/// `fsync`; anything else (or nothing) chooses by the dirty data.
const DURABILITY_VARIABLE: &str = "OCFK8S_STORE_SYNC";

impl Durability {
    /// The cheaper way now: `syncfs` when little else is waiting to be
    /// written, else an fsync per file.
    fn now() -> Durability {
        match std::env::var(DURABILITY_VARIABLE).as_deref() {
            Ok("syncfs") => return Durability::SyncFilesystem,
            Ok("fsync") => return Durability::SyncEach,
            _ => {}
        }
        match std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| waiting_to_be_written(&text))
        {
            Some(bytes) if bytes <= SYNCFS_DIRTY_LIMIT => Durability::SyncFilesystem,
            _ => Durability::SyncEach,
        }
    }
}

/// Bytes dirty or under writeback, from `/proc/meminfo`'s text.
fn waiting_to_be_written(meminfo: &str) -> Option<u64> {
    let mut total = 0;
    let mut found = 0;
    for line in meminfo.lines() {
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        if field == "Dirty" || field == "Writeback" {
            let kilobytes: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
            total += kilobytes * 1024;
            found += 1;
        }
    }
    (found == 2).then_some(total)
}

/// Where a test interrupts a batch, as a kill would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interrupt {
    Never,
    #[cfg(test)]
    BeforeCommit,
    #[cfg(test)]
    AfterCommit,
}

pub(crate) fn write_batch_until(
    lock: &RunLock,
    root: &Path,
    files: &[NewFile],
    removals: &[String],
    interrupt: Interrupt,
) -> anyhow::Result<()> {
    write_batch_with(lock, root, files, removals, interrupt, Durability::now())
}

fn write_batch_with(
    lock: &RunLock,
    root: &Path,
    files: &[NewFile],
    removals: &[String],
    interrupt: Interrupt,
    durability: Durability,
) -> anyhow::Result<()> {
    if !lock.is_exclusive() {
        anyhow::bail!("writing the PKI store needs the exclusive run lock");
    }
    if files.is_empty() && removals.is_empty() {
        return Ok(());
    }
    for removal in removals {
        if !sane_relative(removal) || files.iter().any(|file| &file.relative == removal) {
            anyhow::bail!("cannot remove {removal:?} from the PKI store in this batch");
        }
    }
    let folders = folders_of(
        root,
        files
            .iter()
            .map(|file| file.relative.as_str())
            .chain(removals.iter().map(String::as_str)),
    );
    let renames: Vec<(String, &NewFile)> = files
        .iter()
        .map(|file| (temporary_name(&file.relative), file))
        .collect();
    let mut created = Vec::new();
    let timer = crate::timings::step("pki temporaries");
    let prepared = create_folders(root, &folders, &mut created)
        .and_then(|()| write_temporaries(root, &renames, &folders, durability));
    drop(timer);
    if let Err(error) = prepared {
        // Nothing was committed: take back what this batch added (a full
        // disk must leave the store as it was, not merely recoverable).
        undo_uncommitted(&renames, &created, root);
        return Err(error);
    }

    #[cfg(test)]
    if interrupt == Interrupt::BeforeCommit {
        return Ok(());
    }

    // Commit: once the journal is in place, the batch will be finished.
    let header = if removals.is_empty() {
        JOURNAL_HEADER
    } else {
        JOURNAL_HEADER_REMOVING
    };
    let mut journal = format!("{header}\n");
    for (temporary, file) in &renames {
        journal.push_str(&format!("{temporary}\t{}\n", file.relative));
    }
    for removal in removals {
        journal.push_str(&format!("{REMOVE}\t{removal}\n"));
    }
    journal.push_str(JOURNAL_END);
    journal.push('\n');
    let journal_temporary = root.join(temporary_name(JOURNAL));
    if let Err(error) = write_synced(&journal_temporary, journal.as_bytes(), PRIVATE) {
        undo_uncommitted(&renames, &created, root);
        return Err(error);
    }
    if let Err(error) = std::fs::rename(&journal_temporary, root.join(JOURNAL)) {
        let _ = std::fs::remove_file(&journal_temporary);
        undo_uncommitted(&renames, &created, root);
        return Err(error).with_context(|| {
            format!(
                "committing the batch journal {}",
                root.join(JOURNAL).display()
            )
        });
    }
    sync_folder(root)?;
    #[cfg(test)]
    if interrupt == Interrupt::AfterCommit {
        return Ok(());
    }
    let _ = interrupt;

    let _timer = crate::timings::step("pki renames");
    let mut operations = renames_of(&renames);
    operations.extend(
        removals
            .iter()
            .map(|removal| (REMOVE.to_string(), removal.clone())),
    );
    apply(root, &operations)?;
    match durability {
        Durability::SyncFilesystem => sync_filesystem(root)?,
        Durability::SyncEach => sync_folders(&folders)?,
    }
    finish_journal(root)
}

/// Create the batch's missing folders (0700) once each, outermost first,
/// before any file: one `mkdir` a folder, an existing one answering
/// `EEXIST` (something else in its place fails the first write into it).
/// Records each folder created.
fn create_folders(
    root: &Path,
    folders: &BTreeSet<PathBuf>,
    created: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    // A folder sorts before everything below it.
    let mut needed = BTreeSet::new();
    for folder in folders {
        let mut ancestor = folder.as_path();
        while ancestor != root && ancestor.starts_with(root) {
            needed.insert(ancestor);
            match ancestor.parent() {
                Some(parent) => ancestor = parent,
                None => break,
            }
        }
    }
    if !root.is_dir() {
        needed.insert(root);
    }
    for path in needed {
        match DirBuilder::new().mode(FOLDER).create(path) {
            Ok(()) => created.push(path.to_path_buf()),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(error).with_context(|| format!("creating folder {}", path.display()))
            }
        }
    }
    Ok(())
}

/// Write every temporary of the batch and make them and their folders
/// durable (see [`Durability`]).
fn write_temporaries(
    root: &Path,
    renames: &[(String, &NewFile)],
    folders: &BTreeSet<PathBuf>,
    durability: Durability,
) -> anyhow::Result<()> {
    let failed = |error: anyhow::Error| {
        error.context(format!(
            "writing {} new file(s) into the PKI store {}; nothing was changed",
            renames.len(),
            root.display()
        ))
    };
    match durability {
        Durability::SyncFilesystem => {
            // One thread: creating files in parallel only contends for the
            // same folders, and nothing here waits for the disk.
            for (temporary, file) in renames {
                write_new(&root.join(temporary), &file.contents, file.mode, false)
                    .map_err(failed)?;
            }
            sync_filesystem(root).map_err(failed)
        }
        Durability::SyncEach => {
            let written = io_pool()?.install(|| {
                renames
                    .par_iter()
                    .map(|(temporary, file)| {
                        write_new(&root.join(temporary), &file.contents, file.mode, true)
                    })
                    .collect::<Vec<_>>()
            });
            if let Some(error) = written.into_iter().find_map(Result::err) {
                return Err(failed(error));
            }
            sync_folders(folders)
        }
    }
}

/// Remove the temporaries and the folders of a batch that failed before
/// its commit (innermost folders first; a folder something else filled
/// meanwhile stays).
fn undo_uncommitted(renames: &[(String, &NewFile)], created: &[PathBuf], root: &Path) {
    for (temporary, _) in renames {
        let _ = std::fs::remove_file(root.join(temporary));
    }
    for folder in created.iter().rev() {
        let _ = std::fs::remove_dir(folder);
    }
}

fn renames_of(renames: &[(String, &NewFile)]) -> Vec<(String, String)> {
    renames
        .iter()
        .map(|(temporary, file)| (temporary.clone(), file.relative.clone()))
        .collect()
}

/// Rename every temporary still present over its target; remove the
/// targets of `remove` lines.
fn apply(root: &Path, renames: &[(String, String)]) -> anyhow::Result<usize> {
    let mut done = 0;
    for (temporary, target) in renames {
        if temporary == REMOVE {
            match std::fs::remove_file(root.join(target)) {
                Ok(()) => done += 1,
                // Removed before the interruption.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("removing {} from the store", root.join(target).display())
                    })
                }
            }
            continue;
        }
        let from = root.join(temporary);
        match std::fs::rename(&from, root.join(target)) {
            Ok(()) => done += 1,
            // Renamed before the interruption.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("renaming {} into place", root.join(target).display())
                })
            }
        }
    }
    Ok(done)
}

fn finish_journal(root: &Path) -> anyhow::Result<()> {
    let journal = root.join(JOURNAL);
    std::fs::remove_file(&journal)
        .with_context(|| format!("removing the batch journal {}", journal.display()))?;
    sync_folder(root)
}

/// Make the store whole after an interrupted run: finish the committed
/// batch, if any, then remove every temporary of ours. The caller holds the
/// exclusive run lock.
pub fn recover(lock: &RunLock, root: &Path) -> anyhow::Result<Recovered> {
    if !lock.is_exclusive() {
        anyhow::bail!("recovering the PKI store needs the exclusive run lock");
    }
    let mut recovered = Recovered::default();
    if let Some(renames) = read_journal(root)? {
        let folders = folders_of(root, renames.iter().map(|(_, target)| target.as_str()));
        recovered.finished = apply(root, &renames)?;
        sync_folders(&folders)?;
        finish_journal(root)?;
    }
    recovered.removed = sweep(root)?;
    Ok(recovered)
}

/// Whether a committed batch awaits [`recover`].
pub fn has_journal(root: &Path) -> bool {
    std::fs::symlink_metadata(root.join(JOURNAL)).is_ok()
}

/// The renames of a committed batch. A journal that is not exactly what
/// [`write_batch`] writes is bad input, and nothing is renamed.
fn read_journal(root: &Path) -> anyhow::Result<Option<Vec<(String, String)>>> {
    let path = root.join(JOURNAL);
    let Some(bytes) = super::store_file::read(root, JOURNAL)? else {
        return Ok(None);
    };
    let malformed = || {
        bad_input(format!(
            "{}: not a batch journal written by ocfk8s; nothing was renamed \
             (move it away if you know where it came from)",
            path.display()
        ))
    };
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let mut lines = text.lines();
    let removing = match lines.next() {
        Some(JOURNAL_HEADER) => false,
        Some(JOURNAL_HEADER_REMOVING) => true,
        _ => return Err(malformed()),
    };
    let mut renames = Vec::new();
    let mut ended = false;
    for line in lines {
        if ended {
            return Err(malformed());
        }
        if line == JOURNAL_END {
            ended = true;
            continue;
        }
        let (temporary, target) = line.split_once('\t').ok_or_else(malformed)?;
        let folder = |relative: &str| {
            relative
                .rsplit_once('/')
                .map(|(folder, _)| folder.to_string())
        };
        let sane = sane_relative;
        if temporary == REMOVE {
            if !removing || !sane(target) {
                return Err(malformed());
            }
            renames.push((temporary.to_string(), target.to_string()));
            continue;
        }
        let temporary_name = temporary.rsplit('/').next().unwrap_or_default();
        if !sane(temporary)
            || !sane(target)
            || !is_temporary(temporary_name)
            || folder(temporary) != folder(target)
        {
            return Err(malformed());
        }
        renames.push((temporary.to_string(), target.to_string()));
    }
    if !ended {
        return Err(malformed());
    }
    Ok(Some(renames))
}

/// A store-relative path without `.`, `..` or empty parts.
fn sane_relative(relative: &str) -> bool {
    !relative.is_empty()
        && !relative.starts_with('/')
        && relative
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Remove every temporary of ours below `root` (never following symlinks);
/// returns how many.
fn sweep(root: &Path) -> anyhow::Result<usize> {
    let mut removed = 0;
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", folder.display()))
            }
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", folder.display()))?;
            let file_type = entry
                .file_type()
                .with_context(|| format!("reading {}", entry.path().display()))?;
            let name = entry.file_name();
            if file_type.is_dir() {
                folders.push(entry.path());
            } else if file_type.is_file() && is_temporary(&name.to_string_lossy()) {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

fn write_synced(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    write_new(path, contents, mode, true)
}

/// Create `path` (never an existing file, never through a symlink) with
/// `mode` from the start, write `contents`, and fsync it when `sync`. A
/// failed write removes the file.
fn write_new(path: &Path, contents: &[u8], mode: u32, sync: bool) -> anyhow::Result<()> {
    let mut handle = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let result = handle
        .write_all(contents)
        .and_then(|()| {
            // The umask may have taken bits `mode` asks for (a certificate
            // must be readable by others).
            if umask().is_some_and(|umask| mode & umask == 0) {
                Ok(())
            } else {
                handle.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
            }
        })
        .and_then(|()| if sync { handle.sync_all() } else { Ok(()) });
    if let Err(error) = result {
        let _ = std::fs::remove_file(path);
        return Err(error).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// The process's umask, from `/proc/self/status` (read once: setting it to
/// read it would race with other threads creating files).
fn umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status
            .lines()
            .find_map(|line| line.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// Flush the filesystem holding `root`: every file and folder of the batch
/// (and whatever else waits to be written there) reaches the disk.
fn sync_filesystem(root: &Path) -> anyhow::Result<()> {
    let handle = File::open(root).with_context(|| format!("opening {}", root.display()))?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("flushing the filesystem of {} to disk", root.display()));
    }
    Ok(())
}

fn sync_folders(folders: &BTreeSet<PathBuf>) -> anyhow::Result<()> {
    io_pool()?.install(|| {
        folders
            .par_iter()
            .try_for_each(|folder| sync_folder(folder))
    })
}

fn sync_folder(folder: &Path) -> anyhow::Result<()> {
    File::open(folder)
        .and_then(|handle| handle.sync_all())
        .with_context(|| format!("syncing folder {}", folder.display()))
}

/// Threads for many small fsyncs at once: they wait on the disk, not the
/// CPU, and concurrent fsyncs share the filesystem's journal commits.
fn io_pool() -> anyhow::Result<&'static rayon::ThreadPool> {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    if let Some(pool) = POOL.get() {
        return Ok(pool);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(32)
        .thread_name(|index| format!("ocfk8s-io-{index}"))
        .build()
        .context("starting threads for writing the PKI store")?;
    Ok(POOL.get_or_init(|| pool))
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

    #[test]
    fn temporaries_are_recognised_by_their_exact_pattern() {
        assert!(is_temporary(".ca.key.0123456789abcdef.tmp"));
        assert!(is_temporary(&temporary_name("ca.key")));
        assert!(is_temporary(
            temporary_name("nodes/m1/kubelet.conf")
                .rsplit('/')
                .next()
                .expect("name")
        ));
        assert!(!is_temporary("ca.key.0123456789abcdef.tmp"));
        assert!(!is_temporary(".ca.key.0123456789ABCDEF.tmp"));
        assert!(!is_temporary(".ca.key.0123456789abcde.tmp"));
        assert!(!is_temporary("..0123456789abcdef.tmp"));
        assert!(!is_temporary(".notes.tmp"));
    }

    fn file(relative: &str, contents: &str) -> NewFile {
        NewFile {
            relative: relative.to_string(),
            contents: contents.as_bytes().to_vec(),
            mode: PRIVATE,
        }
    }

    #[test]
    fn a_committed_batch_is_finished_and_an_uncommitted_one_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("store");
        let lock = crate::lock::acquire(&root, "test").expect("lock");
        write_batch(
            &lock,
            &root,
            &[file("a.key", "a"), file("nodes/n/b.key", "b")],
        )
        .expect("batch");
        assert_eq!(
            std::fs::read_to_string(root.join("nodes/n/b.key")).expect("b"),
            "b"
        );
        assert!(!has_journal(&root));

        // Committed, one rename done, one not: finished.
        std::fs::write(root.join(".c.key.00000000000000aa.tmp"), "c").expect("write");
        std::fs::write(root.join("d.key"), "d").expect("write");
        std::fs::write(
            root.join(JOURNAL),
            format!(
                "{JOURNAL_HEADER}\n.c.key.00000000000000aa.tmp\tc.key\n\
                 .d.key.00000000000000bb.tmp\td.key\n{JOURNAL_END}\n"
            ),
        )
        .expect("journal");
        // Not committed: removed, also deeper down.
        std::fs::write(root.join("nodes/n/.e.key.00000000000000cc.tmp"), "e").expect("write");
        std::fs::write(root.join("nodes/n/.notes.tmp"), "mine").expect("write");
        let recovered = recover(&lock, &root).expect("recover");
        assert_eq!(
            recovered,
            Recovered {
                finished: 1,
                removed: 1
            }
        );
        assert_eq!(std::fs::read_to_string(root.join("c.key")).expect("c"), "c");
        assert_eq!(std::fs::read_to_string(root.join("d.key")).expect("d"), "d");
        assert!(!has_journal(&root));
        assert!(!root.join("nodes/n/.e.key.00000000000000cc.tmp").exists());
        assert!(root.join("nodes/n/.notes.tmp").exists(), "not ours");
    }

    #[test]
    fn a_batch_failing_before_its_commit_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("store");
        let lock = crate::lock::acquire(&root, "test").expect("lock");
        // A regular file where the batch needs a folder: its write fails
        // after the others' temporaries and folders were made.
        std::fs::write(root.join("z"), "not a folder").expect("write");
        let error = write_batch(
            &lock,
            &root,
            &[
                file("a.key", "a"),
                file("nodes/n/b.key", "b"),
                file("z/c.key", "c"),
            ],
        )
        .expect_err("a file in a folder's place");
        assert!(
            format!("{error:#}").contains("nothing was changed"),
            "{error:#}"
        );
        assert_eq!(
            crate::test_support::listing(&root),
            [crate::lock::LOCK_FILE, "z"]
        );
    }

    #[test]
    fn both_ways_of_reaching_the_disk_write_the_same_batch() {
        use std::os::unix::fs::PermissionsExt;
        for durability in [Durability::SyncFilesystem, Durability::SyncEach] {
            let dir = tempfile::tempdir().expect("temp dir");
            let root = dir.path().join("store");
            let lock = crate::lock::acquire(&root, "test").expect("lock");
            let public = NewFile {
                relative: "nodes/n/etcd/b.crt".to_string(),
                contents: b"b".to_vec(),
                mode: PUBLIC,
            };
            write_batch_with(
                &lock,
                &root,
                &[file("a.key", "a"), public, file("nodes/m/c.key", "c")],
                &[],
                Interrupt::Never,
                durability,
            )
            .expect("batch");
            let mode = |relative: &str| {
                std::fs::metadata(root.join(relative))
                    .expect("metadata")
                    .permissions()
                    .mode()
                    & 0o7777
            };
            assert_eq!(mode("a.key"), PRIVATE, "{durability:?}");
            assert_eq!(mode("nodes/n/etcd/b.crt"), PUBLIC, "{durability:?}");
            assert_eq!(mode("nodes/m/c.key"), PRIVATE, "{durability:?}");
            for folder in ["nodes", "nodes/n", "nodes/n/etcd", "nodes/m"] {
                assert_eq!(mode(folder), FOLDER, "{folder} {durability:?}");
            }
            assert_eq!(
                std::fs::read_to_string(root.join("nodes/n/etcd/b.crt")).expect("b"),
                "b"
            );
            assert!(!has_journal(&root));
            assert_eq!(sweep(&root).expect("sweep"), 0, "no temporary left");
        }
    }

    #[test]
    fn dirty_data_is_read_from_meminfo() {
        let meminfo = "MemTotal:       24000000 kB\nDirty:             32372 kB\n\
                       Writeback:           100 kB\nAnonPages:   1 kB\n";
        assert_eq!(waiting_to_be_written(meminfo), Some(32472 * 1024));
        assert_eq!(waiting_to_be_written("Dirty: 1 kB\n"), None);
        assert_eq!(
            waiting_to_be_written("Dirty: many\nWriteback: 0 kB\n"),
            None
        );
    }

    #[test]
    fn a_journal_not_of_ours_is_refused_and_nothing_renamed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("store");
        let lock = crate::lock::acquire(&root, "test").expect("lock");
        std::fs::write(root.join(".x.00000000000000aa.tmp"), "x").expect("write");
        for journal in [
            format!("{JOURNAL_HEADER}\n.x.00000000000000aa.tmp\t../x\n{JOURNAL_END}\n"),
            format!("{JOURNAL_HEADER}\n.x.00000000000000aa.tmp\tnodes/x\n{JOURNAL_END}\n"),
            format!("{JOURNAL_HEADER}\n.x.00000000000000aa.tmp\tx\n"),
            "something else\n".to_string(),
        ] {
            std::fs::write(root.join(JOURNAL), &journal).expect("journal");
            let error = recover(&lock, &root).expect_err(&journal);
            assert_eq!(crate::error::exit_code(&error), 2);
            assert!(root.join(".x.00000000000000aa.tmp").exists());
        }
    }
}
