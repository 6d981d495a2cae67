//! Running a network's plugin chain: ADD, DEL and CHECK with libcni's
//! semantics, plus rollback of a failed ADD and the result cache.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache::{CachedAttachment, ResultCache};
use crate::config::{NetworkConfigList, PluginConfig};
use crate::error::{CniError, Result};
use crate::exec::{find_plugin, CniCommand, PluginCall};
use crate::result::CniResult;
use crate::runtime::RuntimeConf;

/// The default limit on one plugin execution.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The CNI error code meaning "container unknown or does not exist": on DEL
/// there is nothing left to clean up.
const ERR_CONTAINER_UNKNOWN: u32 = 3;

/// How DEL handles a plugin failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DelMode {
    StopAtFirstError,
    BestEffort,
}

/// A CNI client: where plugin binaries live and where ADD results are cached.
///
/// All methods block while plugins run; call them from a blocking thread.
#[derive(Debug, Clone)]
pub struct Cni {
    bin_dirs: Vec<PathBuf>,
    cache: ResultCache,
    plugin_timeout: Option<Duration>,
}

impl Cni {
    /// A client that looks plugins up in `bin_dirs` (in order, also passed to
    /// plugins as `CNI_PATH`) and caches results under `cache_dir/results`.
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Self {
        Cni {
            bin_dirs,
            cache: ResultCache::new(&cache_dir),
            plugin_timeout: Some(DEFAULT_PLUGIN_TIMEOUT),
        }
    }

    /// Sets how long one plugin may run before it is killed (`None`: no limit).
    /// The default is [`DEFAULT_PLUGIN_TIMEOUT`].
    pub fn with_plugin_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.plugin_timeout = timeout;
        self
    }

    /// The plugin directories, in lookup order.
    pub fn bin_dirs(&self) -> &[PathBuf] {
        &self.bin_dirs
    }

    /// Attaches the container to the network: runs every plugin's ADD in
    /// order, each receiving the previous plugin's result as `prevResult`,
    /// and caches the final result.
    ///
    /// If a plugin (or the cache write) fails, DEL runs for the whole list so
    /// nothing is left behind, and the error names the failed plugin.
    pub fn add(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> Result<CniResult> {
        rt.validate()?;
        let mut prev: Option<CniResult> = None;
        for plugin in net.plugins() {
            let outcome = self
                .invoke(
                    CniCommand::Add,
                    net,
                    plugin,
                    rt,
                    &rt.netns_path,
                    prev.as_ref(),
                )
                .and_then(|stdout| {
                    CniResult::from_plugin_output(&stdout, net.cni_version()).map_err(|e| {
                        CniError::InvalidResult {
                            network: net.name().to_owned(),
                            plugin_type: plugin.plugin_type().to_owned(),
                            command: CniCommand::Add.as_str(),
                            reason: e.to_string(),
                        }
                    })
                });
            match outcome {
                Ok(result) => prev = Some(result),
                Err(error) => {
                    self.roll_back(net, rt, prev.as_ref(), &error);
                    return Err(error);
                }
            }
        }
        // A parsed list always has at least one plugin.
        let result = prev.ok_or_else(|| CniError::InvalidConfig {
            origin: net.origin(),
            reason: "no plugins".into(),
        })?;
        if let Err(error) = self.cache.store(net, rt, &result) {
            self.roll_back(net, rt, Some(&result), &error);
            return Err(error);
        }
        tracing::debug!(
            network = net.name(),
            container_id = %rt.container_id,
            ips = ?result.ips(),
            "CNI ADD done"
        );
        Ok(result)
    }

    /// Detaches the container: runs every plugin's DEL in reverse order with
    /// the cached ADD result as `prevResult` (cniVersion 0.4.0 and newer),
    /// then removes the cache file.
    ///
    /// Runs without `prevResult` when nothing is cached (e.g. ADD never
    /// finished), passes an empty `CNI_NETNS` when the namespace is already
    /// gone, and treats a plugin's "container unknown" error (code 3) as done.
    /// Stops at the first other failure and keeps the cache for a retry.
    pub fn del(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        rt.validate()?;
        let prev = if net.cni_version().has_prev_result_on_del() {
            match self.cache.load(net.name(), &rt.container_id, &rt.if_name) {
                Ok(Some(cached)) => Some(cached.result.convert_to(net.cni_version())),
                Ok(None) => {
                    tracing::debug!(
                        network = net.name(),
                        container_id = %rt.container_id,
                        "no cached CNI result; DEL runs without prevResult"
                    );
                    None
                }
                Err(error) => {
                    tracing::warn!(%error, "ignoring unreadable CNI result cache");
                    None
                }
            }
        } else {
            None
        };
        self.del_plugins(net, rt, prev.as_ref(), DelMode::StopAtFirstError)?;
        self.cache.remove(net.name(), &rt.container_id, &rt.if_name)
    }

    /// Checks the attachment: runs every plugin's CHECK in order with the
    /// cached ADD result as `prevResult`. Does nothing when the list sets
    /// `disableCheck`; fails for cniVersion below 0.4.0 or without a cached result.
    pub fn check(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        if !net.cni_version().has_prev_result_on_del() {
            return Err(CniError::CheckNotSupported {
                network: net.name().to_owned(),
                version: net.cni_version(),
            });
        }
        if net.disable_check() {
            return Ok(());
        }
        rt.validate()?;
        let cached = self
            .cache
            .load(net.name(), &rt.container_id, &rt.if_name)?
            .ok_or_else(|| CniError::NoCachedResult {
                network: net.name().to_owned(),
                container_id: rt.container_id.clone(),
                if_name: rt.if_name.clone(),
            })?;
        let prev = cached.result.convert_to(net.cni_version());
        for plugin in net.plugins() {
            self.invoke(
                CniCommand::Check,
                net,
                plugin,
                rt,
                &rt.netns_path,
                Some(&prev),
            )?;
        }
        Ok(())
    }

    /// Whether the network can be used: every plugin binary is present.
    /// (The STATUS verb arrived with spec 1.1.0, newer than the versions
    /// supported here, so plugins are not asked.)
    pub fn status(&self, net: &NetworkConfigList) -> Result<()> {
        for plugin in net.plugins() {
            find_plugin(&self.bin_dirs, plugin.plugin_type())?;
        }
        Ok(())
    }

    /// The cached ADD result of an attachment, e.g. to report the pod IP
    /// after a restart. `None` when nothing is cached.
    pub fn cached_result(
        &self,
        net_name: &str,
        container_id: &str,
        if_name: &str,
    ) -> Result<Option<CniResult>> {
        Ok(self
            .cached_attachment(net_name, container_id, if_name)?
            .map(|cached| cached.result))
    }

    /// Everything cached about an attachment: the result and the network
    /// configuration and runtime parameters of its ADD, so DEL can run with
    /// the configuration the attachment was made with.
    pub fn cached_attachment(
        &self,
        net_name: &str,
        container_id: &str,
        if_name: &str,
    ) -> Result<Option<CachedAttachment>> {
        self.cache.load(net_name, container_id, if_name)
    }

    /// Runs DEL for every plugin in reverse order. `DelMode::StopAtFirstError`
    /// is libcni's behaviour; `DelMode::BestEffort` (rollback) tries every
    /// plugin and returns the first error.
    fn del_plugins(
        &self,
        net: &NetworkConfigList,
        rt: &RuntimeConf,
        prev: Option<&CniResult>,
        mode: DelMode,
    ) -> Result<()> {
        let netns_gone = !rt.netns_path.as_os_str().is_empty() && !rt.netns_path.exists();
        let netns: &Path = if netns_gone {
            tracing::debug!(
                netns = %rt.netns_path.display(),
                "network namespace is gone; DEL runs with an empty CNI_NETNS"
            );
            Path::new("")
        } else {
            &rt.netns_path
        };
        let mut first_error = None;
        for plugin in net.plugins().iter().rev() {
            match self.invoke(CniCommand::Del, net, plugin, rt, netns, prev) {
                Ok(_) => {}
                Err(CniError::Plugin {
                    code: ERR_CONTAINER_UNKNOWN,
                    msg,
                    ..
                }) => {
                    tracing::debug!(
                        plugin = plugin.plugin_type(),
                        %msg,
                        "CNI DEL: container already unknown to the plugin"
                    );
                }
                Err(error) => match mode {
                    DelMode::StopAtFirstError => return Err(error),
                    DelMode::BestEffort => {
                        tracing::warn!(
                            network = net.name(),
                            plugin = plugin.plugin_type(),
                            container_id = %rt.container_id,
                            %error,
                            "CNI DEL failed; continuing with the remaining plugins"
                        );
                        first_error.get_or_insert(error);
                    }
                },
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes whatever a failed ADD may have created; failures are logged,
    /// the ADD's own error is what the caller sees.
    fn roll_back(
        &self,
        net: &NetworkConfigList,
        rt: &RuntimeConf,
        partial: Option<&CniResult>,
        cause: &CniError,
    ) {
        tracing::warn!(
            network = net.name(),
            container_id = %rt.container_id,
            error = %cause,
            "CNI ADD failed; deleting the partial attachment"
        );
        let prev = partial
            .filter(|_| net.cni_version().has_prev_result_on_del())
            .map(|result| result.convert_to(net.cni_version()));
        if self
            .del_plugins(net, rt, prev.as_ref(), DelMode::BestEffort)
            .is_err()
        {
            tracing::warn!(
                network = net.name(),
                container_id = %rt.container_id,
                "rollback of failed CNI ADD was incomplete"
            );
        }
        if let Err(error) = self.cache.remove(net.name(), &rt.container_id, &rt.if_name) {
            tracing::warn!(%error, "removing stale CNI result cache failed");
        }
    }

    fn invoke(
        &self,
        command: CniCommand,
        net: &NetworkConfigList,
        plugin: &PluginConfig,
        rt: &RuntimeConf,
        netns: &Path,
        prev: Option<&CniResult>,
    ) -> Result<Vec<u8>> {
        let binary = find_plugin(&self.bin_dirs, plugin.plugin_type())?;
        let stdin = plugin.stdin_config(net, prev, &rt.capability_args)?;
        let env = vec![
            ("CNI_COMMAND", OsString::from(command.as_str())),
            ("CNI_CONTAINERID", OsString::from(&rt.container_id)),
            ("CNI_NETNS", netns.as_os_str().to_owned()),
            ("CNI_IFNAME", OsString::from(&rt.if_name)),
            ("CNI_ARGS", OsString::from(rt.cni_args_env()?)),
            ("CNI_PATH", self.cni_path()),
        ];
        PluginCall {
            command,
            network: net.name(),
            plugin_type: plugin.plugin_type(),
            binary: &binary,
            env,
            stdin,
            timeout: self.plugin_timeout,
        }
        .run()
    }

    /// `CNI_PATH`: the bin dirs joined with ':'.
    fn cni_path(&self) -> OsString {
        let mut path = OsString::new();
        for (i, dir) in self.bin_dirs.iter().enumerate() {
            if i > 0 {
                path.push(":");
            }
            path.push(dir);
        }
        path
    }
}
