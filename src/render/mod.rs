//! Rendering: every host's files from templates, the cluster model and the
//! PKI store.

mod files;

pub use files::{HostFiles, RenderedFile};
