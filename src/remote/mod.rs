//! The SSH engine: sessions to hosts, reading their state, writing files
//! atomically, and fanning out over many hosts at once.
//!
//! Everything goes through the system OpenSSH via the `openssh` crate, so
//! `~/.ssh/config`, ssh-agent, ProxyJump and certificates behave as operators
//! expect. Each host gets one multiplexed master connection; every remote
//! step is one shell script sent on the session's stdin, so reading a host's
//! whole state or writing all its changed files costs one round trip each.

mod archive;
mod certs;
pub(crate) mod etcdctl;
mod facts;
mod fanout;
mod session;
pub(crate) mod shell;
mod state;
pub(crate) mod systemd;
mod upload;
mod write;

pub(crate) use certs::{read_certificates, HostCertificate};
#[cfg(test)]
pub(crate) use facts::facts_script;
#[cfg(test)]
pub(crate) use facts::Listener;
pub(crate) use facts::{read_facts, read_facts_and_state, BinaryPresence, FactsRequest, HostFacts};
pub(crate) use fanout::for_each_host;
pub(crate) use session::{Connector, Host};
pub(crate) use state::{read_files, read_state, HostState, Prefetched};
#[cfg(test)]
pub(crate) use state::{state_script, RemoteFile};
#[cfg(test)]
pub(crate) use upload::receive_script;
pub(crate) use upload::upload_file;
#[cfg(test)]
pub(crate) use write::write_script;
pub(crate) use write::{write_files, FileWrite, WriteReport, TEMPORARY_MARKER};
