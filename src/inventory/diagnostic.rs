//! Errors and warnings about an inventory, each pointing at its source.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where in the inventory a problem is: a line and column when the value has
/// a span, and always the field path (`worker[2].address`).
#[derive(Debug, Clone)]
pub struct Location {
    pub file: PathBuf,
    pub line_column: Option<(usize, usize)>,
    pub field: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location.file.display())?;
        if let Some((line, column)) = self.location.line_column {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.location.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Turns byte offsets into 1-based line and column numbers.
pub(crate) struct SourceMap<'a> {
    file: &'a Path,
    text: &'a str,
}

impl<'a> SourceMap<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        SourceMap { file, text }
    }

    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |index| index + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    pub fn at(&self, span: Option<Range<usize>>, field: impl Into<Option<String>>) -> Location {
        Location {
            file: self.file.to_path_buf(),
            line_column: span.map(|span| self.line_column(span.start)),
            field: field.into(),
        }
    }
}
