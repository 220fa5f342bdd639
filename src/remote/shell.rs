//! Quoting for the POSIX shell scripts sent to hosts.

/// `text` as one single-quoted shell word.
pub(crate) fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A path that can travel through the line-oriented scripts: absolute, no
/// control character (a newline would split a line, and `sh` drops NUL, so
/// the path used would not be the one checked), no backslash, no `..`.
pub(crate) fn check_path(path: &str) -> anyhow::Result<()> {
    if !path.starts_with('/')
        || path.chars().any(char::is_control)
        || path.contains('\\')
        || path.split('/').any(|part| part == "..")
    {
        anyhow::bail!("refusing to manage the path {path:?}: it must be absolute, without `..`, control characters or backslashes");
    }
    Ok(())
}

/// The folder holding `path` (`/` for top-level files).
pub(crate) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(index) => &path[..index],
    }
}

/// The last component of `path`.
pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("/etc/a b"), "'/etc/a b'");
    }

    #[test]
    fn refuses_relative_and_odd_paths() {
        assert!(check_path("etc/x").is_err());
        assert!(check_path("/etc/../x").is_err());
        assert!(check_path("/etc/x\ny").is_err());
        assert!(check_path("/etc/x\0y").is_err());
        assert!(check_path("/etc/x\ty").is_err());
        assert!(check_path("/etc/kubernetes/pki/ca.crt").is_ok());
    }

    #[test]
    fn splits_paths() {
        assert_eq!(parent("/etc/kubernetes/admin.conf"), "/etc/kubernetes");
        assert_eq!(parent("/x"), "/");
        assert_eq!(file_name("/etc/kubernetes/admin.conf"), "admin.conf");
    }
}
