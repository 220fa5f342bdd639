//! Helpers shared by the unit tests.

/// The names in `folder`, sorted: what a test expects a run to leave there.
pub(crate) fn listing(folder: impl AsRef<std::path::Path>) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}
