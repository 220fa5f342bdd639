//! Durable, atomic, recoverable writes of a batch of new store files.
//!
//! A batch (everything one `pki generate` or `pki import` adds) must reach
//! the disk whole or not at all, even if the run is killed or the machine
//! loses power at any instant. Under the exclusive run lock:
//!
//! 1. each file is created under a temporary name, 0600 or 0644 from the
//!    start, so a key is never readable by others, even briefly: beside
//!    its target (`.<name>.<16 hex digits>.tmp`), or, when its folder does
//!    not exist yet, under its own name inside a temporary of the
//!    outermost missing folder (`nodes/.w9.<16 hex digits>.tmp/kubelet.key`),
//!    so that a new node's files take one rename, not one each. Files are
//!    created while their contents are still being computed ([`stage`]),
//!    then written ([`Staged::commit`]); then every file and every folder
//!    holding one is made durable;
//! 2. the journal [`JOURNAL`] listing every (temporary, target) rename, of
//!    files and of new folders, is written the same way and renamed into
//!    place: the batch is committed;
//! 3. every temporary is renamed over its target, the folders are fsynced,
//!    and the journal is removed.
//!
//! A run killed before step 2 leaves only temporaries: the next locked run
//! ([`recover`]) removes them (a temporary folder with everything in it),
//! so the batch never happened. A run killed after step 2 leaves a
//! journal: the next locked run finishes its renames. Either way the store
//! is whole again before anything reads it, and no temporary survives.
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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

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
    if files.is_empty() && removals.is_empty() {
        return Ok(());
    }
    let layout = Layout::new(files.iter().map(|file| (file.relative.clone(), file.mode)));
    let staged = stage_with(lock, root, &layout, removals, durability)?;
    staged.commit_until(files, interrupt)
}

/// A batch's files, in its order, before their contents exist: what
/// [`stage`] creates.
pub(crate) struct Layout {
    files: Vec<Slot>,
}

struct Slot {
    relative: String,
    mode: u32,
    /// Created (under its temporary name).
    created: AtomicBool,
}

impl Layout {
    /// The files `files` lists: store-relative path and mode.
    pub(crate) fn new(files: impl IntoIterator<Item = (String, u32)>) -> Layout {
        Layout {
            files: files
                .into_iter()
                .map(|(relative, mode)| Slot {
                    relative,
                    mode,
                    created: AtomicBool::new(false),
                })
                .collect(),
        }
    }
}

/// Where one file of a batch is created, relative to the store: a
/// temporary beside its target (`renamed` at the commit), or its own name
/// inside a new folder's temporary (renamed with the folder).
struct Placement {
    created_as: String,
    renamed: bool,
}

/// A batch whose files exist under temporary names: made by [`stage`],
/// while the contents are still being computed (creating files is much of
/// what writing a store costs), then filled and committed by
/// [`Staged::commit`]. A folder the store lacks is built whole under a
/// temporary name of its own (`nodes/.w9.<16 hex>.tmp/`), its files under
/// their own names, and renamed into place at the commit: one rename for
/// a new node's files instead of one per file. Dropped uncommitted (an
/// error, a failed signature), it removes everything it created.
pub(crate) struct Staged<'a> {
    root: PathBuf,
    durability: Durability,
    layout: &'a Layout,
    placements: Vec<Placement>,
    /// New folders built under a temporary name: (temporary, target).
    folders: Vec<(String, String)>,
    removals: Vec<String>,
    /// The store's folder was missing and the batch created it.
    created_root: bool,
    /// Every folder holding something the batch created.
    holding: BTreeSet<PathBuf>,
    /// Committed (or, in a test, left as a kill would leave it): nothing
    /// is taken back on drop.
    keep: bool,
}

/// Create, under temporary names, the files of `layout`, for
/// [`Staged::commit`] to fill and commit; `removals` are store files the
/// same batch removes. The caller holds the exclusive run lock.
pub(crate) fn stage<'a>(
    lock: &RunLock,
    root: &Path,
    layout: &'a Layout,
    removals: &[String],
) -> anyhow::Result<Staged<'a>> {
    stage_with(lock, root, layout, removals, Durability::now())
}

fn stage_with<'a>(
    lock: &RunLock,
    root: &Path,
    layout: &'a Layout,
    removals: &[String],
    durability: Durability,
) -> anyhow::Result<Staged<'a>> {
    if !lock.is_exclusive() {
        anyhow::bail!("writing the PKI store needs the exclusive run lock");
    }
    for slot in &layout.files {
        if !sane_relative(&slot.relative) {
            anyhow::bail!("cannot write {:?} into the PKI store", slot.relative);
        }
    }
    for removal in removals {
        if !sane_relative(removal) || layout.files.iter().any(|slot| &slot.relative == removal) {
            anyhow::bail!("cannot remove {removal:?} from the PKI store in this batch");
        }
    }
    let _timer = crate::timings::step("pki files created");
    let mut staged = Staged {
        root: root.to_path_buf(),
        durability,
        layout,
        placements: Vec::new(),
        folders: Vec::new(),
        removals: removals.to_vec(),
        created_root: false,
        holding: BTreeSet::new(),
        keep: false,
    };
    staged.create().map_err(|error| {
        error.context(format!(
            "writing {} new file(s) into the PKI store {}; nothing was changed",
            layout.files.len(),
            root.display()
        ))
    })?;
    Ok(staged)
}

impl Staged<'_> {
    fn create(&mut self) -> anyhow::Result<()> {
        let root = self.root.clone();
        if !root.is_dir() {
            match DirBuilder::new().mode(FOLDER).create(&root) {
                Ok(()) => self.created_root = true,
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("creating folder {}", root.display()))
                }
            }
        }
        self.holding.insert(root.clone());
        // Where each file goes: beside its target, or inside the temporary
        // of the outermost folder of its path that does not exist yet.
        let mut exists: HashMap<&str, bool> = HashMap::new();
        let mut new_folders: BTreeMap<&str, String> = BTreeMap::new();
        let mut to_create: BTreeSet<String> = BTreeSet::new();
        for slot in &self.layout.files {
            let relative = slot.relative.as_str();
            let missing = relative.rsplit_once('/').and_then(|(folder, name)| {
                outermost_missing(&root, folder, &mut exists).map(|missing| (folder, name, missing))
            });
            let Some((folder, name, missing)) = missing else {
                let created_as = temporary_name(relative);
                if let Some(parent) = root.join(&created_as).parent() {
                    self.holding.insert(parent.to_path_buf());
                }
                self.placements.push(Placement {
                    created_as,
                    renamed: true,
                });
                continue;
            };
            let temporary = new_folders
                .entry(missing)
                .or_insert_with(|| temporary_name(missing));
            let mut inside = temporary.clone();
            to_create.insert(inside.clone());
            for part in folder[missing.len()..]
                .split('/')
                .filter(|part| !part.is_empty())
            {
                inside.push('/');
                inside.push_str(part);
                to_create.insert(inside.clone());
            }
            self.placements.push(Placement {
                created_as: format!("{inside}/{name}"),
                renamed: false,
            });
        }
        let targets: HashMap<&str, &str> = new_folders
            .iter()
            .map(|(target, temporary)| (temporary.as_str(), *target))
            .collect();
        // A folder sorts before everything below it.
        for folder in &to_create {
            let path = root.join(folder);
            DirBuilder::new()
                .mode(FOLDER)
                .create(&path)
                .with_context(|| format!("creating folder {}", path.display()))?;
            if let Some(target) = targets.get(folder.as_str()) {
                self.folders.push((folder.clone(), target.to_string()));
            }
            if let Some(parent) = path.parent() {
                self.holding.insert(parent.to_path_buf());
            }
            self.holding.insert(path);
        }
        // Several threads, each its share of the files (mostly in folders
        // of their own): creating a file on a cold filesystem waits for
        // the disk to read its inode's block.
        let share = self.layout.files.len().div_ceil(CREATORS).max(1);
        let placements = &self.placements;
        std::thread::scope(|scope| {
            let creators: Vec<_> = self
                .layout
                .files
                .chunks(share)
                .zip(placements.chunks(share))
                .map(|(slots, placements)| {
                    let root = &root;
                    scope.spawn(move || -> anyhow::Result<()> {
                        for (slot, placement) in slots.iter().zip(placements) {
                            create_new(&root.join(&placement.created_as), slot.mode)?;
                            slot.created.store(true, Ordering::Release);
                        }
                        Ok(())
                    })
                })
                .collect();
            creators.into_iter().try_for_each(|creator| {
                creator
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread creating files failed")))
            })
        })
    }

    /// Write the files' contents (`files`: the batch, in the layout's
    /// order), make the batch durable and commit it: see the module docs.
    pub(crate) fn commit(self, files: &[NewFile]) -> anyhow::Result<()> {
        self.commit_until(files, Interrupt::Never)
    }

    fn commit_until(mut self, files: &[NewFile], interrupt: Interrupt) -> anyhow::Result<()> {
        if files.len() != self.layout.files.len()
            || files
                .iter()
                .zip(&self.layout.files)
                .any(|(file, slot)| file.relative != slot.relative || file.mode != slot.mode)
        {
            anyhow::bail!(
                "the files to write into the PKI store {} are not the ones prepared; \
                 nothing was changed",
                self.root.display()
            );
        }
        let root = self.root.clone();
        let failed = |error: anyhow::Error| {
            error.context(format!(
                "writing {} new file(s) into the PKI store {}; nothing was changed",
                files.len(),
                root.display()
            ))
        };
        let timer = crate::timings::step("pki files written");
        let written = self.fill(files);
        drop(timer);
        written.map_err(failed)?;

        // The journal: once it is in place, the batch will be finished.
        let header = if self.removals.is_empty() {
            JOURNAL_HEADER
        } else {
            JOURNAL_HEADER_REMOVING
        };
        let mut operations: Vec<(String, String)> = self.folders.clone();
        operations.extend(
            self.placements
                .iter()
                .zip(&self.layout.files)
                .filter(|(placement, _)| placement.renamed)
                .map(|(placement, slot)| (placement.created_as.clone(), slot.relative.clone())),
        );
        operations.extend(
            self.removals
                .iter()
                .map(|removal| (REMOVE.to_string(), removal.clone())),
        );
        let mut journal = format!("{header}\n");
        for (from, to) in &operations {
            journal.push_str(&format!("{from}\t{to}\n"));
        }
        journal.push_str(JOURNAL_END);
        journal.push('\n');
        let journal_temporary = root.join(temporary_name(JOURNAL));
        // The files, their folders and the journal's temporary reach the
        // disk before the journal is renamed into place.
        let flushed = match self.durability {
            Durability::SyncFilesystem => {
                write_file(&journal_temporary, journal.as_bytes(), PRIVATE, false).and_then(|()| {
                    let _timer = crate::timings::step("pki flush");
                    sync_filesystem(&root)
                })
            }
            Durability::SyncEach => sync_folders(&self.holding)
                .and_then(|()| write_file(&journal_temporary, journal.as_bytes(), PRIVATE, true)),
        };
        if let Err(error) = flushed {
            let _ = std::fs::remove_file(&journal_temporary);
            return Err(failed(error));
        }

        #[cfg(test)]
        if interrupt == Interrupt::BeforeCommit {
            self.keep = true;
            return Ok(());
        }

        // Commit.
        if let Err(error) = std::fs::rename(&journal_temporary, root.join(JOURNAL)) {
            let _ = std::fs::remove_file(&journal_temporary);
            return Err(error).with_context(|| {
                format!(
                    "committing the batch journal {}",
                    root.join(JOURNAL).display()
                )
            });
        }
        self.keep = true;
        sync_folder(&root)?;
        #[cfg(test)]
        if interrupt == Interrupt::AfterCommit {
            return Ok(());
        }
        let _ = interrupt;

        let _timer = crate::timings::step("pki renames");
        apply(&root, &operations)?;
        match self.durability {
            Durability::SyncFilesystem => sync_filesystem(&root)?,
            Durability::SyncEach => sync_folders(&folders_of(
                &root,
                operations.iter().map(|(_, target)| target.as_str()),
            ))?,
        }
        finish_journal(&root)
    }

    /// Write every file's contents (and fsync each, when that is how the
    /// batch reaches the disk: see [`Durability`]).
    fn fill(&self, files: &[NewFile]) -> anyhow::Result<()> {
        let fill_one = |(file, placement): (&NewFile, &Placement), sync: bool| {
            let path = self.root.join(&placement.created_as);
            let handle = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            write_contents(&handle, &file.contents, file.mode, sync)
                .with_context(|| format!("writing {}", path.display()))
        };
        match self.durability {
            Durability::SyncFilesystem => files
                .par_iter()
                .zip(&self.placements)
                .try_for_each(|file| fill_one(file, false)),
            Durability::SyncEach => io_pool()?.install(|| {
                files
                    .par_iter()
                    .zip(&self.placements)
                    .try_for_each(|file| fill_one(file, true))
            }),
        }
    }
}

impl Drop for Staged<'_> {
    /// Take back an uncommitted batch: a failure before its commit leaves
    /// the store as it was, not merely recoverable.
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for (placement, slot) in self.placements.iter().zip(&self.layout.files) {
            if placement.renamed && slot.created.load(Ordering::Acquire) {
                let _ = std::fs::remove_file(self.root.join(&placement.created_as));
            }
        }
        for (temporary, _) in &self.folders {
            let _ = std::fs::remove_dir_all(self.root.join(temporary));
        }
        if self.created_root {
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

/// The outermost folder of `folder` (store-relative) that does not exist
/// below `root`, if any; `exists` remembers what was looked up.
fn outermost_missing<'a>(
    root: &Path,
    folder: &'a str,
    exists: &mut HashMap<&'a str, bool>,
) -> Option<&'a str> {
    let ends = folder
        .match_indices('/')
        .map(|(index, _)| index)
        .chain(std::iter::once(folder.len()));
    for end in ends {
        let prefix = &folder[..end];
        let present = *exists
            .entry(prefix)
            .or_insert_with(|| std::fs::symlink_metadata(root.join(prefix)).is_ok());
        if !present {
            return Some(prefix);
        }
    }
    None
}

/// Threads creating a batch's files.
const CREATORS: usize = 4;

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
            if file_type.is_dir() && is_temporary(&name.to_string_lossy()) {
                // A new folder built under a temporary name, uncommitted.
                removed += count_files(&entry.path());
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            } else if file_type.is_dir() {
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

/// Create `path` with `mode` from the start, write `contents` and fsync
/// it. A failed write removes the file.
/// How many files are below `folder` (never following symlinks).
fn count_files(folder: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => count_files(&entry.path()),
            _ => 1,
        })
        .sum()
}

/// Create `path` with `mode` from the start, write `contents` and fsync
/// it when `sync` (a `syncfs` to come flushes it otherwise). A failed
/// write removes the file.
fn write_file(path: &Path, contents: &[u8], mode: u32, sync: bool) -> anyhow::Result<()> {
    let handle = create_new(path, mode)?;
    if let Err(error) = write_contents(&handle, contents, mode, sync) {
        let _ = std::fs::remove_file(path);
        return Err(error).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// Create `path`, never an existing file and never through a symlink, with
/// `mode` from the start (less the umask, which [`write_contents`] puts
/// back): a key is never readable by others, even briefly.
fn create_new(path: &Path, mode: u32) -> anyhow::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Write `contents` at the start of a new file (again, if an earlier
/// write failed), give it exactly `mode` and fsync it when `sync`.
fn write_contents(handle: &File, contents: &[u8], mode: u32, sync: bool) -> std::io::Result<()> {
    handle.write_all_at(contents, 0)?;
    // The umask may have taken bits `mode` asks for (a certificate must be
    // readable by others).
    if umask().is_none_or(|umask| mode & umask != 0) {
        handle.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    if sync {
        handle.sync_all()?;
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

    fn public_file(relative: &str, contents: &str) -> NewFile {
        NewFile {
            mode: PUBLIC,
            ..file(relative, contents)
        }
    }

    /// A store folder under the exclusive run lock (the temporary folder
    /// holding it goes when the first value is dropped).
    fn locked_store() -> (tempfile::TempDir, PathBuf, RunLock) {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("store");
        let lock = crate::lock::acquire(&root, "test").expect("lock");
        (dir, root, lock)
    }

    #[test]
    fn a_committed_batch_is_finished_and_an_uncommitted_one_removed() {
        let (_dir, root, lock) = locked_store();
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
        let (_dir, root, lock) = locked_store();
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
            let (_dir, root, lock) = locked_store();
            let public = public_file("nodes/n/etcd/b.crt", "b");
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

    /// Every temporary below `root`, files and folders, relative.
    fn temporaries_below(root: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut folders = vec![root.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).expect("read").flatten() {
                let path = entry.path();
                if is_temporary(&entry.file_name().to_string_lossy()) {
                    found.push(
                        path.strip_prefix(root)
                            .expect("below")
                            .display()
                            .to_string(),
                    );
                }
                if path.is_dir() {
                    folders.push(path);
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn a_new_folder_is_built_under_a_temporary_name_and_renamed_whole() {
        let (_dir, root, lock) = locked_store();
        std::fs::create_dir(root.join("nodes")).expect("mkdir");
        let batch = [
            file("a.key", "a"),
            file("nodes/n/etcd/b.key", "b"),
            file("nodes/n/c.key", "c"),
            file("etcd/d.key", "d"),
        ];
        // Killed before the commit: one temporary beside a.key, one
        // folder for each missing outermost folder, files named as they
        // will be inside them, and the journal not yet in place.
        write_batch_until(&lock, &root, &batch, &[], Interrupt::BeforeCommit).expect("batch");
        let left = temporaries_below(&root);
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(
            left.iter().any(|path| path.starts_with("..ocfk8s-batch.")),
            "{left:?}"
        );
        let node = left
            .iter()
            .find(|path| path.starts_with("nodes/.n."))
            .expect("the new node's folder");
        assert_eq!(
            std::fs::read_to_string(root.join(node).join("etcd/b.key")).expect("b"),
            "b"
        );
        assert!(
            left.iter().any(|path| path.starts_with(".etcd.")),
            "{left:?}"
        );
        assert!(
            left.iter().any(|path| path.starts_with(".a.key.")),
            "{left:?}"
        );
        assert_eq!(
            recover(&lock, &root).expect("recover"),
            Recovered {
                finished: 0,
                removed: 5
            }
        );
        assert_eq!(
            crate::test_support::listing(&root),
            [crate::lock::LOCK_FILE, "nodes"]
        );
        assert!(crate::test_support::listing(root.join("nodes")).is_empty());

        // Killed after the commit: the journal renames the folders whole.
        write_batch_until(&lock, &root, &batch, &[], Interrupt::AfterCommit).expect("batch");
        let journal = std::fs::read_to_string(root.join(JOURNAL)).expect("journal");
        assert_eq!(journal.lines().count(), 5, "{journal}");
        assert!(
            journal
                .lines()
                .any(|line| line.starts_with("nodes/.n.") && line.ends_with("\tnodes/n")),
            "{journal}"
        );
        assert_eq!(
            recover(&lock, &root).expect("recover"),
            Recovered {
                finished: 3,
                removed: 0
            }
        );
        for (relative, contents) in [
            ("a.key", "a"),
            ("nodes/n/etcd/b.key", "b"),
            ("nodes/n/c.key", "c"),
            ("etcd/d.key", "d"),
        ] {
            assert_eq!(
                std::fs::read_to_string(root.join(relative)).expect(relative),
                contents
            );
        }
        assert!(temporaries_below(&root).is_empty());
        assert!(!has_journal(&root));
    }

    #[test]
    fn staged_files_wait_empty_and_private_then_the_commit_fills_them() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, root, lock) = locked_store();
        let public = public_file("nodes/n/b.crt", "b");
        let batch = [file("a.key", "a"), public, file("nodes/n/c.key", "c")];
        let layout = Layout::new(batch.iter().map(|file| (file.relative.clone(), file.mode)));
        let staged = stage(&lock, &root, &layout, &[]).expect("stage");
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o7777
        };
        // Before the contents exist: empty, and a key never readable by
        // others, under temporary names only.
        let mut waiting = Vec::new();
        let mut below: Vec<PathBuf> = temporaries_below(&root)
            .into_iter()
            .map(|temporary| root.join(temporary))
            .collect();
        while let Some(path) = below.pop() {
            if path.is_dir() {
                assert_eq!(mode(&path), FOLDER, "{}", path.display());
                below.extend(
                    std::fs::read_dir(&path)
                        .expect("read")
                        .flatten()
                        .map(|entry| entry.path()),
                );
            } else {
                waiting.push((path.display().to_string(), path));
            }
        }
        assert_eq!(waiting.len(), 3, "{waiting:?}");
        for (name, path) in &waiting {
            assert_eq!(std::fs::read(path).expect("read").len(), 0, "{name}");
            let expected = if name.ends_with(".crt") {
                PUBLIC
            } else {
                PRIVATE
            };
            let masked = expected & !umask().unwrap_or(0o022);
            assert_eq!(mode(path) & 0o777, masked, "{name}");
        }
        assert!(!root.join("a.key").exists());
        staged.commit(&batch).expect("commit");
        for (relative, contents, expected) in [
            ("a.key", "a", PRIVATE),
            ("nodes/n/b.crt", "b", PUBLIC),
            ("nodes/n/c.key", "c", PRIVATE),
        ] {
            assert_eq!(
                std::fs::read_to_string(root.join(relative)).expect(relative),
                contents
            );
            assert_eq!(mode(&root.join(relative)), expected, "{relative}");
        }
        assert!(temporaries_below(&root).is_empty());
    }

    #[test]
    fn a_staged_batch_not_committed_or_committed_with_other_files_leaves_nothing() {
        let (_dir, root, lock) = locked_store();
        std::fs::create_dir(root.join("nodes")).expect("mkdir");
        let batch = [file("a.key", "a"), file("nodes/n/b.key", "b")];
        let layout = Layout::new(batch.iter().map(|file| (file.relative.clone(), file.mode)));
        // Dropped, as when making the keys failed.
        let staged = stage(&lock, &root, &layout, &[]).expect("stage");
        assert_eq!(temporaries_below(&root).len(), 2);
        drop(staged);
        assert!(temporaries_below(&root).is_empty());
        // Committed with files the layout does not list.
        let staged = stage(&lock, &root, &layout, &[]).expect("stage");
        let error = staged
            .commit(&[file("a.key", "a"), file("nodes/n/other.key", "b")])
            .expect_err("other files");
        assert!(
            format!("{error:#}").contains("nothing was changed"),
            "{error:#}"
        );
        assert!(temporaries_below(&root).is_empty());
        assert_eq!(
            crate::test_support::listing(&root),
            [crate::lock::LOCK_FILE, "nodes"]
        );
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
        let (_dir, root, lock) = locked_store();
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
