//! Pod sandboxes: the pause process that holds a pod's namespaces, the pinned network and user
//! namespaces, idmapped mounts, the pod's `/dev/shm`, its `/etc` files, and which sysctls a pod
//! may set.
//!
//! Every function here is blocking and synchronous; corrald calls them from
//! `tokio::task::spawn_blocking`. None of them changes the calling thread's namespaces.
//!
//! The root integration tests in `tests/` start the real pause: run `cargo build -p corral-pause`
//! before `cargo test -p corral-sandbox` (they skip with a message when it is missing or when not
//! run as root).

pub mod error;
pub mod files;
pub mod find;
pub mod idmap;
pub mod layout;
pub mod mounts;
pub mod namespace;
pub mod net_dev;
pub mod netns;
pub mod pause;
pub mod process;
pub mod shm;
pub mod sysctl;
pub mod userns;

pub use error::{Result, SandboxError};
pub use files::{DnsSettings, PodFiles};
pub use layout::{SandboxPaths, StateLayout};
pub use namespace::{ns_file_of, ns_inode, ns_inode_of_path};
pub use netns::NetnsPin;
pub use pause::{find_binary, spawn_pause, spawn_pause_owned, PauseProcess, PauseSpec};
pub use process::reap_if_child;
pub use sysctl::{PrivateNamespaces, SysctlNamespace};
pub use userns::{IdMapping, UsernsMappings};
