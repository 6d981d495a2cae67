//! corrald: the corral container runtime daemon.
//!
//! Reads its configuration, opens the metadata store, reconciles recorded pods with what is
//! alive, and serves CRI v1 on a unix socket. See `docs/architecture.md`.

mod admin;
mod authority;
mod checkpoint;
mod config;
mod container;
mod crash;
mod cri_metrics;
mod deadline;
mod error;
mod events;
mod explain;
mod features;
mod ids;
mod image_service;
mod live;
mod phases;
mod pod;
mod prometheus;
mod reaper;
mod resources;
mod runtime_service;
mod sd_notify;
mod server;
mod stats;
mod stream_limits;
mod streaming;
#[cfg(test)]
mod testing;
mod userns;
mod v1alpha2;
mod view_cache;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use cri_proto::v1::{RuntimeCondition, RuntimeStatus, StatusResponse};

use config::{Config, Flags};
use pod::PodManager;

/// The daemon's shared state.
pub struct Daemon {
    /// The effective configuration.
    pub config: Config,
    /// The metadata store.
    pub store: Arc<corral_store::Store>,
    /// The pod sandboxes.
    pub pods: PodManager,
    /// The containers.
    pub containers: container::ContainerManager,
    /// The exec/attach/port-forward streaming server.
    pub streaming: corral_streaming::StreamingServer,
    /// Container and sandbox events (GetContainerEvents).
    pub events: events::Events,
}

impl Daemon {
    /// The Status RPC: runtime and network conditions, the config when verbose.
    pub async fn status(&self, verbose: bool) -> StatusResponse {
        let network = self.pods.network_ready();
        let conditions = vec![
            RuntimeCondition {
                r#type: "RuntimeReady".into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            RuntimeCondition {
                r#type: "NetworkReady".into(),
                status: network.is_ok(),
                reason: if network.is_ok() {
                    String::new()
                } else {
                    "NetworkPluginNotReady".into()
                },
                message: network.err().unwrap_or_default(),
            },
        ];
        let mut info = std::collections::HashMap::new();
        if verbose {
            let config = serde_json::to_string(&self.config).unwrap_or_default();
            info.insert("config".to_string(), config);
        }
        StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            runtime_handlers: self
                .containers
                .features()
                .runtime_handlers(self.runtime_handlers()),
            features: Some(features::runtime_features()),
        }
    }

    fn runtime_handlers(&self) -> Vec<cri_proto::v1::RuntimeHandler> {
        self.config
            .runtimes
            .keys()
            .map(|name| cri_proto::v1::RuntimeHandler {
                name: name.clone(),
                features: Some(cri_proto::v1::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: self.pods.supports_user_namespaces(name),
                }),
            })
            .collect()
    }
}

fn main() -> anyhow::Result<()> {
    // Before any thread exists: nothing corrald starts may inherit systemd's NOTIFY_SOCKET.
    sd_notify::take_socket_from_env();
    let flags = Flags::parse();
    if flags.crash_steps {
        crash::print_steps();
        return Ok(());
    }
    let config = Config::load(flags)?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_level)
                .with_context(|| format!("--log-level {:?}", config.log_level))?,
        )
        .with_writer(std::io::stderr)
        // No colour codes in the journal (or any log file), only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // systemd sets JOURNAL_STREAM when stderr is the journal, which stamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        logs.without_time().init();
    } else {
        logs.init();
    }
    reaper::become_subreaper()?;
    reaper::spawn();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    for dir in [&config.root, &config.state] {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let store = Arc::new(crash::open_store(&config.root.join("meta.redb"))?);
    let registry: corral_image::RegistryConfig = toml::Value::Table(config.registry.clone())
        .try_into()
        .context("config: [registry]")?;
    let images = image_service::ImageServiceImpl::new(store.clone(), &config.root, registry)
        .context("open image store")?;
    let (event_sink, changes) = events::EventSink::channel();
    let pods = PodManager::start(config.clone(), store.clone(), event_sink.clone())
        .await
        .context("load pod sandboxes")?;
    let containers = container::ContainerManager::start(
        config.clone(),
        store.clone(),
        images.image_store(),
        event_sink.clone(),
    )
    .await
    .context("load containers")?;
    let backend = Arc::new(streaming::StreamingBackend {
        daemon: std::sync::OnceLock::new(),
        limits: stream_limits::StreamLimits::new(
            config.max_streams_per_container,
            std::time::Duration::from_secs(config.stream_idle_timeout),
        ),
    });
    let streaming = corral_streaming::StreamingServer::start(
        std::net::SocketAddr::new(config.stream_address, config.stream_port),
        backend.clone(),
    )
    .await
    .context("start the streaming server")?;
    tracing::info!(url = %streaming.base_url(), "streaming server for exec, attach, port-forward");
    let daemon = Arc::new(Daemon {
        config,
        store,
        pods,
        containers,
        streaming,
        events: events::Events::new(),
    });
    let _ = backend.daemon.set(Arc::downgrade(&daemon));
    events::start(&daemon, event_sink, changes)
        .await
        .context("start container events")?;
    if let Some(address) = daemon.config.metrics_address {
        let bound = prometheus::serve(address, daemon.clone()).await?;
        tracing::info!(address = %bound, "Prometheus metrics on /metrics");
    }
    server::serve(daemon, images).await
}
