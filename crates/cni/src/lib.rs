//! A CNI client with libcni's semantics, for spec versions 0.3.0, 0.3.1,
//! 0.4.0 and 1.0.0.
//!
//! - [`CniConfig::load`] picks the runtime's network configuration from a
//!   directory (the first `.conflist`/`.conf`/`.json` file in name order).
//! - [`Cni::add`] / [`Cni::del`] / [`Cni::check`] run the plugin chain for one
//!   attachment ([`RuntimeConf`]): ADD in order with `prevResult` chaining and
//!   capability filtering into `runtimeConfig`, DEL in reverse with the
//!   cached ADD result. A failed ADD is rolled back with DEL.
//! - ADD results are cached on disk so DEL and pod status work after the
//!   runtime restarts ([`Cni::cached_result`], [`Cni::cached_attachment`]).
//!
//! The API is synchronous: plugins are child processes waited for on the
//! calling thread, so async callers use `spawn_blocking`.

mod cache;
mod cni;
mod config;
mod config_watch;
mod error;
mod exec;
mod names;
pub mod pod;
mod result;
mod runtime;
mod version;

pub use cache::CachedAttachment;
pub use cni::{Cni, DEFAULT_PLUGIN_TIMEOUT};
pub use config::{CniConfig, NetworkConfigList, PluginConfig};
pub use config_watch::ConfigWatch;
pub use error::{CniError, Result};
pub use result::{CniResult, Dns, Interface, InvalidCidr, IpCidr, IpConfig, Route};
pub use runtime::RuntimeConf;
pub use version::{CniVersion, UnsupportedVersion};

#[cfg(test)]
mod plugin_chain_tests;
