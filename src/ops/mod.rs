//! Operations on the cluster: phases in k0sctl's manner, each a step over
//! every host, driven through the SSH engine in [`crate::remote`].

pub(crate) mod add_master;
pub(crate) mod add_worker;
pub(crate) mod addons;
pub(crate) mod bootstrap;
pub(crate) mod departure;
pub(crate) mod desired;
pub(crate) mod fleet;
pub(crate) mod health;
pub(crate) mod install;
pub(crate) mod membership;
pub(crate) mod preflight;
pub(crate) mod remove_master;
pub(crate) mod remove_worker;
pub(crate) mod rotate;
#[cfg(test)]
mod script_escaping;
pub(crate) mod settings;
pub(crate) mod snapshot;
pub(crate) mod status;
pub(crate) mod survey;
