//! The gRPC server on the unix socket, and graceful shutdown.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use cri_proto::v1::image_service_server::ImageServiceServer;
use cri_proto::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::authority::AuthorityFix;
use crate::image_service::ImageServiceImpl;
use crate::runtime_service::RuntimeServiceImpl;
use crate::v1alpha2::V1alpha2Layer;
use crate::Daemon;

/// kubelet's limit for CRI messages; large ListContainers answers need more than gRPC's 4 MiB.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// How long calls in flight get to finish after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves the CRI on the configured socket until SIGTERM or SIGINT.
pub async fn serve(daemon: Arc<Daemon>, images: ImageServiceImpl) -> anyhow::Result<()> {
    let socket = daemon.config.socket.clone();
    let listener = bind(&socket)?;
    tracing::info!(socket = %socket.display(), "serving CRI v1");
    let runtime = RuntimeServiceServer::new(RuntimeServiceImpl::new(daemon.clone()))
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let admin = cri_proto::admin::admin_server::AdminServer::new(
        crate::admin::AdminServiceImpl::new(images.image_store()),
    );
    let images = ImageServiceServer::new(images)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        // Outermost, so that the code counted is the one the client gets.
        .layer(crate::prometheus::RequestMetricsLayer)
        .layer(crate::deadline::DeadlineLayer)
        .layer(V1alpha2Layer {
            enabled: !daemon.config.disable_v1alpha2,
        })
        .add_service(runtime)
        .add_service(images)
        .add_service(admin)
        .add_service(cri_proto::admin::explain_server::ExplainServer::new(
            crate::explain::ExplainServiceImpl::new(daemon.clone()),
        ))
        .serve_with_incoming_shutdown(accept_any_authority(listener), async {
            let _ = stop_rx.await;
        });
    let mut server = tokio::spawn(server);
    // The socket is bound and served: tell systemd (Type=notify) corrald is ready.
    crate::sd_notify::notify("READY=1");
    tokio::select! {
        result = &mut server => result.context("gRPC server task")?.context("gRPC server")?,
        () = shutdown_signal() => {
            crate::sd_notify::notify("STOPPING=1");
            // Stop accepting, let calls in flight finish, but do not wait for idle clients
            // (kubelet keeps its connection open) longer than the grace period.
            let _ = stop_tx.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(result) => result.context("gRPC server task")?.context("gRPC server")?,
                Err(_) => tracing::info!("clients still connected after {SHUTDOWN_GRACE:?}; closing"),
            }
        }
    }
    // Pods and containers keep running: only the socket goes away.
    if let Err(e) = std::fs::remove_file(&socket) {
        tracing::warn!(socket = %socket.display(), error = %e, "removing socket");
    }
    tracing::info!("corrald stopped; pods keep running");
    Ok(())
}

/// The accepted connections, each wrapped so that any HTTP/2 `:authority` is served
/// (`authority.rs`).
fn accept_any_authority(
    listener: UnixListener,
) -> impl futures::Stream<Item = std::io::Result<AuthorityFix<tokio::net::UnixStream>>> {
    use futures::StreamExt;
    UnixListenerStream::new(listener).map(|conn| conn.map(AuthorityFix::new))
}

/// Binds the socket: parent directory created, a stale socket replaced, mode 0660. A socket
/// that still answers belongs to a running daemon and is left alone.
fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("create socket directory {}", parent.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "{} is in use by a running daemon; stop it or pass another --socket",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("remove stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; remove it or pass another --socket",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspect {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("bind socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", path.display()))?;
    Ok(listener)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop corrald with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
