//! Placing a large file (a binary) on a host atomically, streamed.
//!
//! [`super::write`] embeds contents in its script, which suits configuration
//! files but not a 100 MB kubelet. Here the bytes travel on the SSH
//! channel's stdin to a small remote command that writes them to a
//! temporary beside the target (named like `write.rs`'s, so the state
//! report's sweep finds one left by a crashed host), checks their sha256
//! against the expected one, gives it mode and root ownership, fsyncs it and
//! renames it over the target. The local file is read in small buffers, one
//! reader per host, so memory stays flat however many hosts receive it.
//!
//! A run killed mid-transfer closes the channel: `cat` sees end of input,
//! the hash does not match, nothing is renamed, and the exit trap removes the
//! temporary.

use std::path::Path;

use anyhow::{bail, Context};

use super::session::Host;
use super::shell::{check_path, parent, quote};
use super::write::{random_suffix, temporary_path};

/// The remote command that receives `target` on stdin; see the module
/// documentation.
pub(crate) fn receive_script(
    target: &str,
    mode: u32,
    sha256: &str,
    suffix: &str,
) -> anyhow::Result<String> {
    check_path(target)?;
    if sha256.len() != 64 || !sha256.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        bail!("unexpected sha256 {sha256:?} for {target}");
    }
    let temporary = temporary_path(target, suffix);
    Ok(format!(
        "set -eu\n\
         umask 077\n\
         tmp={tmp}\n\
         target={target}\n\
         trap 'rm -f -- \"$tmp\"' EXIT\n\
         trap 'exit 1' HUP INT TERM PIPE\n\
         (umask 022 && mkdir -p -- {folder})\n\
         if [ -d \"$target\" ] && [ ! -L \"$target\" ]; then echo \"$target is a folder, not a file\" >&2; exit 1; fi\n\
         cat > \"$tmp\"\n\
         got=$(sha256sum < \"$tmp\")\n\
         got=${{got%% *}}\n\
         if [ \"$got\" != {sha256} ]; then echo \"received sha256 $got, expected {sha256}: the transfer was cut short\" >&2; exit 1; fi\n\
         chown 0:0 -- \"$tmp\"\n\
         chmod {mode:04o} -- \"$tmp\"\n\
         sync -- \"$tmp\"\n\
         mv -f -- \"$tmp\" \"$target\"\n\
         sync -- {folder}\n\
         echo done\n",
        tmp = quote(&temporary),
        target = quote(target),
        folder = quote(parent(target)),
        mode = mode & 0o7777,
    ))
}

/// Stream the local file `source` (whose sha256 is `sha256`) to `target` on
/// `host`, root-owned with `mode`.
pub(crate) async fn upload_file(
    host: &Host,
    source: &Path,
    target: &str,
    mode: u32,
    sha256: &str,
) -> anyhow::Result<()> {
    let script = receive_script(target, mode, sha256, &random_suffix())?;
    let file = tokio::fs::File::open(source)
        .await
        .with_context(|| format!("opening {}", source.display()))?;
    let output = host
        .exec_streaming(
            &script,
            tokio::io::BufReader::with_capacity(256 * 1024, file),
        )
        .await
        .with_context(|| format!("uploading {} to {target}", source.display()))?;
    if output.status != Some(0) || String::from_utf8_lossy(&output.stdout).trim() != "done" {
        bail!(
            "uploading {} to {target} failed: {}",
            source.display(),
            if output.stderr.is_empty() {
                "the remote command did not finish"
            } else {
                output.stderr.as_str()
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::listing;
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;

    fn receive_locally(script: &str, input: &[u8]) -> std::process::Output {
        // Tests may not run as root: chown to oneself instead.
        let script = script.replace(
            "chown 0:0",
            &format!("chown {}:{}", unsafe_uid(), unsafe_gid()),
        );
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut stdin = child.stdin.take().expect("stdin");
        // The receiver may exit early (bad hash): a broken pipe is fine.
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().expect("wait")
    }

    fn unsafe_uid() -> u32 {
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    }

    fn unsafe_gid() -> u32 {
        // SAFETY: getgid cannot fail.
        unsafe { libc::getgid() }
    }

    #[test]
    fn receives_whole_files_and_refuses_cut_short_ones_leaving_no_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        let target = bin.join("kubelet");
        let target = target.to_str().expect("utf-8");
        let contents: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024 + 7).collect();
        let sha256 = crate::plan::sha256_hex(&contents);

        let script = receive_script(target, 0o755, &sha256, "t1").expect("script");
        let output = receive_locally(&script, &contents);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(std::fs::read(target).expect("read"), contents);
        let mode = std::fs::metadata(target)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o755);
        assert_eq!(listing(&bin), ["kubelet"]);

        // Half the bytes (a run killed mid-transfer): the old file stays,
        // and so does no temporary.
        let newer: Vec<u8> = contents.iter().map(|byte| byte ^ 0x5a).collect();
        let script =
            receive_script(target, 0o755, &crate::plan::sha256_hex(&newer), "t2").expect("script");
        let output = receive_locally(&script, &newer[..newer.len() / 2]);
        assert!(!output.status.success());
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("cut short"),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(std::fs::read(target).expect("read"), contents);
        assert_eq!(listing(&bin), ["kubelet"]);
    }

    #[test]
    fn refuses_odd_hashes_and_paths() {
        assert!(receive_script("/usr/bin/kubelet", 0o755, "abc", "x").is_err());
        assert!(receive_script("usr/bin/kubelet", 0o755, &"a".repeat(64), "x").is_err());
        let script = receive_script("/usr/bin/kubelet", 0o755, &"a".repeat(64), "x").expect("ok");
        assert!(
            script.contains("'/usr/bin/.kubelet.ocfk8s-tmp-x'"),
            "{script}"
        );
    }
}
