//! RunPodSandbox: validate the request, then build the sandbox step by step, recording each
//! resource as it is made so that a failure at any step tears down exactly what exists.
//!
//! The CNI chain is most of a pod's start, and it needs only the pod's network namespace. So
//! the pause (which makes the namespaces) starts first, and once its network namespace is
//! pinned and recorded the CNI ADD runs on a thread of its own while this thread makes the
//! rest of the pod (cgroup, shm, user namespace pin) — RunPodSandbox takes about the pause, the
//! chain and a few ms (see [`super::phases`] and `corral-bench pods --phases`).

use corral_sandbox::files::{DnsSettings, PodFiles};
use corral_sandbox::pause::PauseSpec;
use corral_store::SANDBOXES;
use cri_proto::v1::{NamespaceMode, PodSandboxConfig};

use super::paths::{cgroup_parent, netns_pin_path, sandbox_dir, userns_pin_path};
use super::record::{name_key, PauseRef, SandboxRecord, SandboxState};
use super::validate::{pod_resources, validate, Checked, PodRules};
use super::{teardown, PodEnv};
use crate::error::{CriError, CriResult};
use crate::ids::{new_id, now_nanos};
use crate::phases::Phases;

/// The error of a failed RunPodSandbox step: the step named first, the error's kind kept.
pub(super) fn step<E: Into<CriError>>(name: &str) -> impl FnOnce(E) -> CriError {
    crate::error::during(format!("RunPodSandbox: {name}"))
}

/// `oom_score_adj` of pause processes: kubelet's value for critical node components.
const PAUSE_OOM_SCORE_ADJ: i32 = -998;

/// A validated RunPodSandbox request, ready to execute.
pub(super) struct SandboxPlan {
    pub id: String,
    pub name_key: String,
    config: PodSandboxConfig,
    runtime_handler: String,
    hostname: String,
    sysctls: Vec<(String, String)>,
    network: NamespaceMode,
    pid: NamespaceMode,
    ipc: NamespaceMode,
    /// The pod's own user namespace (userns_options mode POD).
    userns: Option<corral_sandbox::UsernsMappings>,
    /// The CNI network the pod joins (loaded once, at validation), when it has its own netns.
    network_config: Option<corral_cni::NetworkConfigList>,
}

impl SandboxPlan {
    /// Checks the request; every refusal names the field and what to do.
    pub fn new(
        env: &PodEnv,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> CriResult<SandboxPlan> {
        let id = new_id()?;
        let Checked {
            hostname,
            sysctls,
            network,
            pid,
            ipc,
            userns,
        } = validate(&PodRules::of(env), &config, &runtime_handler, &id)?;
        let network_config = match network {
            NamespaceMode::Pod => Some(super::network::network_config(env).map_err(|reason| {
                CriError::FailedPrecondition(format!("pod network is not ready: {reason}"))
            })?),
            _ => None,
        };
        Ok(SandboxPlan {
            id,
            network_config,
            name_key: name_key(&config),
            config,
            runtime_handler,
            hostname,
            sysctls,
            network,
            pid,
            ipc,
            userns,
        })
    }

    /// Builds the sandbox. On failure, everything made so far is undone and the error names
    /// the step that failed.
    pub fn execute(self, env: &PodEnv) -> CriResult<()> {
        let phases = Phases::new();
        let span = tracing::Span::current();
        let mut record = SandboxRecord {
            id: self.id.clone(),
            config: self.config.clone(),
            runtime_handler: self.runtime_handler.clone(),
            created_at: now_nanos(),
            state: SandboxState::Creating,
            pause: None,
            // The network is known before anything is made and recorded with the rest: a
            // teardown then DELs even if the ADD never ran (CNI asks plugins to take a DEL of
            // what does not exist) and unpins where the id says the pin would be.
            netns_path: self
                .network_config
                .as_ref()
                .map(|_| netns_pin_path(env, &self.id)),
            cni_network: self.network_config.as_ref().map(|n| n.name().to_string()),
            cni_config: self.network_config.as_ref().map(|n| n.to_json()),
            ips: Vec::new(),
            pod_cgroup: None,
            shm_path: None,
            userns_path: None,
        };
        phases.step(&span, "record_creating", || {
            env.store.put(SANDBOXES, &record.id, &record)
        })?;
        crate::crash::point("run_pod:recorded");
        match self.build(env, &mut record, &phases, &span) {
            Ok(()) => {
                crate::crash::point("run_pod:built");
                record.state = SandboxState::Ready;
                phases.step(&span, "record_ready", || {
                    env.store.put(SANDBOXES, &record.id, &record)
                })?;
                tracing::info!(
                    pod_id = %record.id,
                    pod = %self.name_key,
                    ips = ?record.ips,
                    phases = %phases.summary(),
                    "pod sandbox ready"
                );
                Ok(())
            }
            Err(err) => {
                tracing::warn!(pod_id = %record.id, error = %err, "RunPodSandbox failed; undoing");
                if let Err(undo) = teardown::destroy(env, &mut record) {
                    // The `Creating` record stays, for start-up reconciliation to finish.
                    tracing::error!(pod_id = %record.id, error = %undo, "undoing a failed RunPodSandbox");
                    if let Err(e) = env.store.put(SANDBOXES, &record.id, &record) {
                        tracing::error!(pod_id = %record.id, error = %e, "recording what is left of a failed sandbox");
                    }
                } else if let Err(e) = env.store.delete(SANDBOXES, &record.id) {
                    tracing::error!(pod_id = %record.id, error = %e, "deleting the record of a failed sandbox");
                }
                Err(err)
            }
        }
    }

    /// Builds the sandbox in two overlapping parts once the pause process exists:
    ///
    /// 1. the pause (it makes the pod's namespaces); with a pod network, its network namespace
    ///    pinned and the network recorded (so that a crash during ADD still leads to a DEL);
    /// 2. the CNI ADD on a thread of its own, which needs nothing but the pinned namespace,
    ///    while this thread makes the rest: pod cgroup (and the pause moved into it), user
    ///    namespace pin, `/dev/shm`;
    /// 3. once both are done, the pod files (the hosts file names the pod's IPs).
    ///
    /// Whatever fails, the ADD is waited for before this returns, so the record names everything
    /// that was made and [`teardown::destroy`] undoes it all.
    fn build(
        &self,
        env: &PodEnv,
        record: &mut SandboxRecord,
        phases: &Phases,
        span: &tracing::Span,
    ) -> CriResult<()> {
        let dns = self.config.dns_config.as_ref().map(|d| DnsSettings {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        });
        let files_hostname = self
            .files_hostname()
            .map_err(step("read the node's hostname"))?;

        let spec = self.pause_spec();
        let dir = sandbox_dir(env, &self.id);
        let pause = phases
            .step(span, "pause", || env.pauses.spawn(&spec, &dir))
            .map_err(step("start pause process"))?;
        crate::crash::point("run_pod:pause_started");
        record.pause = Some(PauseRef {
            pid: pause.pid,
            start_time: pause.start_time,
        });
        let attachment = match self.network {
            NamespaceMode::Pod => Some(super::network::prepare(
                env,
                self.network_config.as_ref(),
                record,
                phases,
                span,
                pause.pid,
            )?),
            _ => None,
        };

        self.add_network_beside_own(env, record, phases, span, attachment, pause.pid)?;

        phases
            .step(span, "pod_files", || {
                PodFiles::write(&dir, &files_hostname, dns.as_ref(), &record.ips)
            })
            .map_err(step("write pod files"))?;
        crate::crash::point("run_pod:files_written");
        Ok(())
    }

    /// What the pause is started with: the namespaces the pod owns, its hostname and sysctls.
    fn pause_spec(&self) -> PauseSpec {
        PauseSpec {
            new_net: self.network == NamespaceMode::Pod,
            new_ipc: self.ipc == NamespaceMode::Pod,
            new_uts: self.network == NamespaceMode::Pod,
            new_pid: self.pid == NamespaceMode::Pod,
            hostname: (self.network == NamespaceMode::Pod).then(|| self.hostname.clone()),
            sysctls: self.sysctls.clone(),
            oom_score_adj: PAUSE_OOM_SCORE_ADJ,
            userns: self.userns,
        }
    }

    /// The CNI ADD of `attachment` (if the pod has its own network) on a thread of its own,
    /// while this thread makes the pod's own resources ([`Self::build_own`]); the ADD is always
    /// waited for, and its IPs recorded.
    fn add_network_beside_own(
        &self,
        env: &PodEnv,
        record: &mut SandboxRecord,
        phases: &Phases,
        span: &tracing::Span,
        attachment: Option<(&corral_cni::NetworkConfigList, corral_cni::RuntimeConf)>,
        pause_pid: i32,
    ) -> CriResult<()> {
        let (own, added) = std::thread::scope(|scope| {
            let adding = attachment.as_ref().map(|(net, rt)| {
                let add = move || phases.step(span, "cni_add", || env.network.add(net, rt));
                std::thread::Builder::new()
                    .name("cni-add".into())
                    .spawn_scoped(scope, add)
                    .map_err(step("start the CNI ADD thread"))
            });
            let own = self.build_own(env, record, phases, span, pause_pid);
            let added = adding.map(|thread| {
                thread?.join().map_err(|_| {
                    CriError::Internal("RunPodSandbox: the CNI ADD thread panicked".into())
                })
            });
            (own, added)
        });
        match added {
            Some(Ok(Ok(ips))) => {
                record.ips = ips.iter().map(|ip| ip.to_string()).collect();
                crate::crash::point("run_pod:network_added");
            }
            Some(Ok(Err(e))) => {
                // A failed ADD has already been rolled back (DEL of the whole list).
                record.cni_network = None;
                own?;
                return Err(step("set up pod network (CNI ADD)")(e));
            }
            Some(Err(e)) => {
                own?;
                return Err(e);
            }
            None => {}
        }
        own
    }

    /// The pod's own resources, made while the CNI ADD runs: its cgroup (with the pause moved
    /// into it), the user namespace pin and `/dev/shm`; then they are recorded.
    fn build_own(
        &self,
        env: &PodEnv,
        record: &mut SandboxRecord,
        phases: &Phases,
        span: &tracing::Span,
        pause_pid: i32,
    ) -> CriResult<()> {
        let parent = cgroup_parent(env, &self.config, &self.id);
        // Write-ahead: the directories the pod cgroup will add are recorded before they exist.
        super::owned_cgroups::intend(env, &parent)?;
        let cgroup = phases
            .step(span, "pod_cgroup", || env.cgroups.create(&parent))
            .map_err(step("create pod cgroup"))?;
        crate::crash::point("run_pod:cgroup_created");
        record.pod_cgroup = Some(cgroup.clone());
        if let Some(resources) = pod_resources(&self.config) {
            phases
                .step(span, "pod_resources", || {
                    env.cgroups.apply(&cgroup, &resources)
                })
                .map_err(step("apply config.linux.resources to the pod cgroup"))?;
        }
        phases
            .step(span, "pause_cgroup", || {
                cgroup.child(&self.id).and_then(|leaf| {
                    env.cgroups
                        .add_process(&cgroup, &leaf.relative_path, pause_pid)
                })
            })
            .map_err(step("move pause process into the pod cgroup"))?;
        crate::crash::point("run_pod:pause_in_cgroup");

        if self.userns.is_some() {
            let pin = userns_pin_path(env, &self.id);
            phases
                .step(span, "userns_pin", || {
                    env.pauses.pin_userns(pause_pid, &pin)
                })
                .map_err(step("pin user namespace"))?;
            record.userns_path = Some(pin);
        }

        if self.ipc == NamespaceMode::Pod {
            let shm = sandbox_dir(env, &self.id).join("shm");
            phases
                .step(span, "shm", || env.pauses.mount_shm(&shm))
                .map_err(step("mount /dev/shm"))?;
            record.shm_path = Some(shm);
            crate::crash::point("run_pod:shm_mounted");
        }
        // One commit, while the ADD still runs: the cgroup directories corral made, and the
        // record naming everything made so far (a crash during a long ADD undoes it all).
        phases.step(span, "record_own", || {
            env.store.write(|tx| {
                super::owned_cgroups::remember_in(tx, &cgroup)?;
                tx.put(SANDBOXES, &record.id, &*record)
            })
        })?;
        Ok(())
    }

    /// The name for the pod's `hostname` and `hosts` files: the pod's, or the node's for a
    /// hostNetwork pod that gives none (kubelet sends none; the pod shares the node's UTS name).
    fn files_hostname(&self) -> nix::Result<String> {
        if !self.hostname.is_empty() {
            return Ok(self.hostname.clone());
        }
        nix::unistd::gethostname().map(|name| name.to_string_lossy().into_owned())
    }
}
