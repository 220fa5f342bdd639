//! A tar archive (POSIX ustar, with GNU long names) of one write batch, for
//! the host's own `tar` to unpack in one process: files with their exact
//! modes, owned by root.

use std::fmt::Write as _;

const BLOCK: usize = 512;

/// An archive being built in memory.
#[derive(Default)]
pub(crate) struct Archive {
    bytes: Vec<u8>,
}

impl Archive {
    /// A regular file, `path` relative to `/`.
    pub(crate) fn file(&mut self, path: &str, mode: u32, contents: &[u8]) {
        self.entry(path, mode, b'0', contents);
    }

    /// The archive, with its end marker.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        self.bytes.resize(self.bytes.len() + 2 * BLOCK, 0);
        self.bytes
    }

    fn entry(&mut self, path: &str, mode: u32, kind: u8, contents: &[u8]) {
        let name = path.trim_start_matches('/');
        let (prefix, short) = split_name(name);
        if short.is_none() {
            // GNU tar's long name: an entry holding the name, then the
            // header proper with a truncated one.
            let mut long = name.as_bytes().to_vec();
            long.push(0);
            self.header("././@LongLink", "", 0o644, b'L', long.len());
            self.data(&long);
        }
        let short = short.unwrap_or_else(|| truncate(name, 100));
        self.header(short, prefix, mode, kind, contents.len());
        self.data(contents);
    }

    fn header(&mut self, name: &str, prefix: &str, mode: u32, kind: u8, size: usize) {
        let mut header = [0u8; BLOCK];
        put(&mut header[0..100], name.as_bytes());
        put(
            &mut header[100..108],
            octal(u64::from(mode & 0o7777), 7).as_bytes(),
        );
        put(&mut header[108..116], octal(0, 7).as_bytes());
        put(&mut header[116..124], octal(0, 7).as_bytes());
        put(&mut header[124..136], octal(size as u64, 11).as_bytes());
        put(&mut header[136..148], octal(now(), 11).as_bytes());
        header[148..156].copy_from_slice(b"        ");
        header[156] = kind;
        put(&mut header[257..263], b"ustar\0");
        put(&mut header[263..265], b"00");
        put(&mut header[265..297], b"root");
        put(&mut header[297..329], b"root");
        put(&mut header[345..500], prefix.as_bytes());
        let sum: u64 = header.iter().map(|byte| u64::from(*byte)).sum();
        put(
            &mut header[148..156],
            format!("{}\0 ", octal(sum, 6)).as_bytes(),
        );
        self.bytes.extend_from_slice(&header);
    }

    fn data(&mut self, contents: &[u8]) {
        self.bytes.extend_from_slice(contents);
        let padding = (BLOCK - contents.len() % BLOCK) % BLOCK;
        self.bytes.resize(self.bytes.len() + padding, 0);
    }
}

/// ustar's split of a name into a prefix (at most 155 bytes) and a name
/// (at most 100), at a `/`; `None` for the name when none fits.
fn split_name(name: &str) -> (&str, Option<&str>) {
    if name.len() <= 100 {
        return ("", Some(name));
    }
    for (index, _) in name.match_indices('/') {
        let (prefix, rest) = (&name[..index], &name[index + 1..]);
        if prefix.len() <= 155 && rest.len() <= 100 && !rest.is_empty() {
            return (prefix, Some(rest));
        }
    }
    ("", None)
}

fn truncate(name: &str, limit: usize) -> &str {
    let mut end = name.len().min(limit);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn put(field: &mut [u8], value: &[u8]) {
    let length = value.len().min(field.len());
    field[..length].copy_from_slice(&value[..length]);
}

/// `value` in octal, zero-padded to `digits`.
fn octal(value: u64, digits: usize) -> String {
    let mut text = String::new();
    let _ = write!(text, "{value:0digits$o}");
    text
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn gnu_tar_unpacks_files_modes_and_long_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_str().expect("utf-8").trim_start_matches('/');
        let long = format!("{root}/{}/{}", "d".repeat(120), "f".repeat(90));
        let binary: Vec<u8> = (0..=255u8).cycle().take(1300).collect();
        let mut archive = Archive::default();
        archive.file(&format!("{root}/stage/a.key"), 0o600, b"secret\n");
        archive.file(&format!("{root}/stage/b.bin"), 0o755, &binary);
        archive.file(&format!("{root}/stage/empty"), 0o644, b"");
        archive.file(&long, 0o640, b"long\n");
        let bytes = archive.finish();
        assert_eq!(bytes.len() % BLOCK, 0);
        std::fs::create_dir(dir.path().join("stage")).expect("mkdir");
        std::fs::create_dir(dir.path().join("d".repeat(120))).expect("mkdir");
        let mut child = std::process::Command::new("tar")
            .args(["-x", "-p", "-m", "--numeric-owner", "-C", "/", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tar");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(&bytes).expect("feed");
        }
        let output = child.wait_with_output().expect("tar");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stage = dir.path().join("stage");
        let mode = |path: &std::path::Path| {
            std::fs::metadata(path)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(&stage.join("a.key")), 0o600);
        assert_eq!(mode(&stage.join("b.bin")), 0o755);
        assert_eq!(
            std::fs::read(stage.join("a.key")).expect("read"),
            b"secret\n"
        );
        assert_eq!(std::fs::read(stage.join("b.bin")).expect("read"), binary);
        assert_eq!(std::fs::read(stage.join("empty")).expect("read"), b"");
        assert_eq!(std::fs::read(format!("/{long}")).expect("read"), b"long\n");
    }
}
