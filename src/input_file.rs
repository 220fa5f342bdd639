//! Reading operator-supplied files safely: only regular files, never more
//! than a stated size, and errors that say what was wrong with the file.
//!
//! Every file ocfk8s reads on the operator's word (the inventory, templates,
//! the PKI store, an import folder, an ingress certificate) goes through
//! [`read_regular`], so a FIFO cannot hang a run, `/dev/zero` cannot exhaust
//! memory, and a symlink loop is named as one. Opening with `O_NONBLOCK`
//! keeps a FIFO without a writer from blocking before its type is checked.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest inventory, template or store file ocfk8s reads.
pub const MAX_TEXT_FILE: u64 = 4 * 1024 * 1024;

/// Why a file could not be read; `Display` names no path (callers add it).
#[derive(Debug)]
pub enum ReadError {
    NotFound,
    /// A symlink loop, or too many levels of symlinks.
    SymlinkLoop,
    /// Not a regular file; the text says what it is ("a FIFO", "a folder").
    NotRegular(&'static str),
    TooLarge {
        limit: u64,
    },
    Io(std::io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotFound => formatter.write_str("no such file"),
            ReadError::SymlinkLoop => {
                formatter.write_str("a symlink loop (too many levels of symbolic links)")
            }
            ReadError::NotRegular(kind) => write!(formatter, "{kind}, not a regular file"),
            ReadError::TooLarge { limit } => {
                write!(formatter, "larger than the {} KiB limit", limit / 1024)
            }
            ReadError::Io(error) => write!(formatter, "{error}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::NotFound)
    }
}

/// What kind of non-regular file `file_type` is, for messages.
pub fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_dir() {
        "a folder"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_symlink() {
        "a symlink"
    } else {
        "a special file"
    }
}

/// Open `path` (following symlinks) for reading without blocking on FIFOs.
fn open(path: &Path) -> Result<File, ReadError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ENOENT) => ReadError::NotFound,
            Some(libc::ELOOP) => ReadError::SymlinkLoop,
            _ => ReadError::Io(error),
        })
}

/// The bytes of the regular file at `path`, at most `limit` of them.
pub fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = open(path)?;
    let metadata = file.metadata().map_err(ReadError::Io)?;
    if !metadata.file_type().is_file() {
        return Err(ReadError::NotRegular(kind_of(metadata.file_type())));
    }
    if metadata.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // One byte past the limit tells a file that grew while being read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    Ok(bytes)
}

/// Like [`read_regular`], for text that must be UTF-8; a UTF-16 byte order
/// mark or other non-UTF-8 bytes are named as such.
pub fn read_text(path: &Path, limit: u64) -> Result<String, TextError> {
    let bytes = read_regular(path, limit).map_err(TextError::Read)?;
    text_from_bytes(bytes)
}

/// Why a text file could not be read.
#[derive(Debug)]
pub enum TextError {
    Read(ReadError),
    NotUtf8(String),
}

impl std::fmt::Display for TextError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::Read(error) => write!(formatter, "{error}"),
            TextError::NotUtf8(why) => formatter.write_str(why),
        }
    }
}

impl std::error::Error for TextError {}

impl TextError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, TextError::Read(ReadError::NotFound))
    }
}

/// Decode UTF-8 text, naming UTF-16 (by its byte order mark) when that is
/// what the bytes are.
pub fn text_from_bytes(bytes: Vec<u8>) -> Result<String, TextError> {
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return Err(TextError::NotUtf8(
            "UTF-16 text; the file must be UTF-8 (convert it, e.g. with `iconv -f UTF-16 -t UTF-8`)"
                .to_string(),
        ));
    }
    String::from_utf8(bytes).map_err(|error| {
        TextError::NotUtf8(format!(
            "not UTF-8 text (invalid byte at offset {}); the file must be UTF-8",
            error.utf8_error().valid_up_to()
        ))
    })
}

/// At most `max` characters of `text` for an error message, with an
/// ellipsis and the full length when it was cut. Control characters are
/// shown escaped so a message cannot forge lines of its own.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut shown: String = text
        .chars()
        .take(max)
        .flat_map(|character| {
            if character.is_control() {
                character.escape_default().collect::<Vec<_>>()
            } else {
                vec![character]
            }
        })
        .collect();
    let length = text.chars().count();
    if length > max {
        shown.push_str(&format!("… ({length} characters)"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = read_regular(&fifo, 1024).expect_err("a FIFO");
        assert_eq!(error.to_string(), "a FIFO, not a regular file");
    }

    #[test]
    fn a_device_and_a_folder_are_refused_and_large_files_are_cut_off() {
        let error = read_regular(Path::new("/dev/zero"), 1024).expect_err("a device");
        assert_eq!(error.to_string(), "a character device, not a regular file");
        let dir = tempfile::tempdir().expect("temp dir");
        let error = read_regular(dir.path(), 1024).expect_err("a folder");
        assert_eq!(error.to_string(), "a folder, not a regular file");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 2048]).expect("write");
        let error = read_regular(&big, 1024).expect_err("too large");
        assert_eq!(error.to_string(), "larger than the 1 KiB limit");
        assert_eq!(read_regular(&big, 4096).expect("fits").len(), 2048);
    }

    #[test]
    fn a_symlink_loop_and_utf16_are_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let link = dir.path().join("loop");
        std::os::unix::fs::symlink(&link, &link).expect("symlink");
        assert!(matches!(
            read_regular(&link, 1024),
            Err(ReadError::SymlinkLoop)
        ));
        let error = text_from_bytes(vec![0xff, 0xfe, b'a', 0]).expect_err("UTF-16");
        assert!(error.to_string().contains("UTF-16"), "{error}");
        assert!(error.to_string().contains("must be UTF-8"), "{error}");
    }

    #[test]
    fn excerpts_are_short_and_escape_control_characters() {
        assert_eq!(excerpt("abc", 10), "abc");
        assert_eq!(excerpt("a\nb", 10), "a\\nb");
        let long = "x".repeat(1000);
        let shown = excerpt(&long, 20);
        assert!(shown.starts_with(&"x".repeat(20)));
        assert!(shown.ends_with("(1000 characters)"), "{shown}");
    }
}
