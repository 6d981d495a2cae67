//! The streaming verbs: `exec -i/-t`, `attach` and `port-forward`. The CRI call (`Exec`,
//! `Attach`, `PortForward`) returns a URL on corrald's streaming server, and
//! corral-streaming's client speaks SPDY/3.1 (the default, as kubectl) or WebSocket to it.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use corral_streaming::client::{self, PortForwarder, Protocol};
use corral_streaming::{BoxWriter, StreamIo};
use cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use cri_proto::v1::{
    AttachRequest, ExecRequest, PodSandboxState, PodSandboxStatusRequest, PortForwardRequest,
};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;

use crate::client::Cri;
use crate::terminal::{follow_window_size, stdin_reader, RawMode};

/// The protocol spoken to the streaming server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// SPDY/3.1, as kubectl and crictl speak it.
    #[default]
    Spdy,
    /// WebSocket (`v5.channel.k8s.io`, port-forward `v4.channel.k8s.io`).
    Websocket,
}

impl From<Transport> for Protocol {
    fn from(transport: Transport) -> Protocol {
        match transport {
            Transport::Spdy => Protocol::Spdy,
            Transport::Websocket => Protocol::WebSocket,
        }
    }
}

/// `attach`: connect to a running container's stdio.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Send stdin to the container.
    #[arg(short, long)]
    pub interactive: bool,
    /// The container has a TTY: put the local terminal in raw mode and follow its size.
    #[arg(short, long)]
    pub tty: bool,
    /// Protocol of the stream.
    #[arg(long, value_enum, default_value_t = Transport::Spdy)]
    pub transport: Transport,
    /// Container ID or unique prefix.
    pub id: String,
}

/// `port-forward`: forward local ports to ports of a pod.
#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// Protocol of the stream.
    #[arg(long, value_enum, default_value_t = Transport::Spdy)]
    pub transport: Transport,
    /// Pod sandbox ID or unique prefix.
    pub pod_id: String,
    /// `LOCAL:REMOTE`, `PORT` (the same on both sides) or `:REMOTE` (any free local port).
    #[arg(required = true, value_name = "LOCAL:REMOTE")]
    pub ports: Vec<String>,
}

/// A local port forwarded to a port of the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    /// 0: any free port.
    pub local: u16,
    pub remote: u16,
}

/// Parses `LOCAL:REMOTE`, `PORT` or `:REMOTE`.
pub fn parse_port_mapping(spec: &str) -> Result<PortMapping> {
    let port = |text: &str, zero_allowed: bool| -> Result<u16> {
        match text.parse::<u16>() {
            Ok(0) if !zero_allowed => bail!("port 0 in {spec:?}: a pod port is 1-65535"),
            Ok(port) => Ok(port),
            Err(_) => bail!("{text:?} in {spec:?} is not a port (1-65535)"),
        }
    };
    match spec.split_once(':') {
        None => {
            let both = port(spec, false)?;
            Ok(PortMapping {
                local: both,
                remote: both,
            })
        }
        Some(("", remote)) => Ok(PortMapping {
            local: 0,
            remote: port(remote, false)?,
        }),
        Some((local, remote)) => Ok(PortMapping {
            local: port(local, true)?,
            remote: port(remote, false)?,
        }),
    }
}

/// Runs a command in a container over the streaming API; returns its exit code.
pub async fn exec(
    cri: &mut Cri,
    id: String,
    command: Vec<String>,
    interactive: bool,
    tty: bool,
    transport: Transport,
) -> Result<ExitCode> {
    let request = ExecRequest {
        container_id: id,
        cmd: command,
        tty,
        stdin: interactive,
        stdout: true,
        stderr: !tty,
    };
    let url = cri.runtime.exec(request).await?.into_inner().url;
    let (io, raw_mode) = local_io(interactive, tty)?;
    let result = client::exec(&url, transport.into(), tty, io).await;
    drop(raw_mode);
    let code = result.context("exec session")?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)))
}

/// Attaches to a running container's stdio until it exits (or its streams close).
pub async fn attach(cri: &mut Cri, args: AttachArgs) -> Result<()> {
    let id = cri.resolve_container_id(&args.id).await?;
    let request = AttachRequest {
        container_id: id,
        stdin: args.interactive,
        tty: args.tty,
        stdout: true,
        stderr: !args.tty,
    };
    let url = cri.runtime.attach(request).await?.into_inner().url;
    let (io, raw_mode) = local_io(args.interactive, args.tty)?;
    let result = client::attach(&url, args.transport.into(), args.tty, io).await;
    drop(raw_mode);
    result.context("attach session")
}

/// The local streams of a remote command, and the raw mode of the local terminal while a
/// remote terminal reads it.
fn local_io(interactive: bool, tty: bool) -> Result<(StreamIo, Option<RawMode>)> {
    let raw_mode = if interactive && tty {
        RawMode::enter()?
    } else {
        None
    };
    let stderr: Option<BoxWriter> = if tty {
        None
    } else {
        Some(Box::new(tokio::io::stderr()))
    };
    let io = StreamIo {
        stdin: interactive.then(stdin_reader),
        stdout: Some(Box::new(tokio::io::stdout())),
        stderr,
        resize: if tty {
            Some(follow_window_size()?)
        } else {
            None
        },
    };
    Ok((io, raw_mode))
}

/// Listens on 127.0.0.1 for each mapping and forwards every connection to the pod until
/// interrupted (SIGINT, SIGTERM).
pub async fn port_forward(cri: &mut Cri, args: PortForwardArgs) -> Result<()> {
    let mappings = args
        .ports
        .iter()
        .map(|spec| parse_port_mapping(spec))
        .collect::<Result<Vec<_>>>()?;
    let pod_id = cri.resolve_pod_id(&args.pod_id).await?;
    let status = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .unwrap_or_default();
    if status.state != PodSandboxState::SandboxReady as i32 {
        bail!("pod sandbox {pod_id} is not ready");
    }
    let mut listeners = Vec::new();
    for mapping in &mappings {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, mapping.local));
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("listening on {address}"))?;
        let bound = listener
            .local_addr()
            .with_context(|| format!("address of the listener on {address}"))?;
        println!("Forwarding from {bound} -> {}", mapping.remote);
        listeners.push((listener, bound.port(), mapping.remote));
    }
    let forward = PodForward {
        runtime: cri.runtime.clone(),
        pod_id,
        protocol: args.transport.into(),
    };
    for (listener, local, remote) in listeners {
        tokio::spawn(forward.clone().accept_loop(listener, local, remote));
    }
    interrupted().await
}

/// What a forwarded connection needs: a CRI client for its URL, the pod, the protocol.
#[derive(Clone)]
struct PodForward {
    runtime: RuntimeServiceClient<Channel>,
    pod_id: String,
    protocol: Protocol,
}

impl PodForward {
    /// Accepts connections on `listener` and forwards each to `remote` in the pod.
    async fn accept_loop(self, listener: TcpListener, local: u16, remote: u16) {
        loop {
            match listener.accept().await {
                Ok((connection, _)) => {
                    println!("Handling connection for {local}");
                    let forward = self.clone();
                    tokio::spawn(async move {
                        if let Err(err) = forward.forward(connection, remote).await {
                            eprintln!("error: forwarding a connection to port {remote}: {err:#}");
                        }
                    });
                }
                Err(err) => {
                    eprintln!("error: accepting a connection on port {local}: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Forwards one connection over a session of its own (a WebSocket session carries one
    /// connection per port; the same for SPDY keeps one path).
    async fn forward(mut self, connection: TcpStream, remote: u16) -> Result<()> {
        let request = PortForwardRequest {
            pod_sandbox_id: self.pod_id.clone(),
            port: vec![i32::from(remote)],
        };
        let url = self.runtime.port_forward(request).await?.into_inner().url;
        let forwarder = PortForwarder::connect(&url, self.protocol, &[remote]).await?;
        let result = forwarder.forward(connection, remote).await;
        forwarder.close().await;
        Ok(result?)
    }
}

/// Waits for SIGINT or SIGTERM.
async fn interrupted() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(local: u16, remote: u16) -> PortMapping {
        PortMapping { local, remote }
    }

    #[test]
    fn port_mappings() {
        for (text, local, remote) in [
            ("8080:80", 8080, 80),
            ("5432", 5432, 5432),
            (":80", 0, 80),
            ("0:80", 0, 80),
        ] {
            assert_eq!(
                parse_port_mapping(text).unwrap_or(mapping(1, 1)),
                mapping(local, remote),
                "{text}"
            );
        }
        for bad in [
            "", "0", "80:0", "x:80", "80:x", "1:2:3", "70000:80", "-1:80",
        ] {
            assert!(parse_port_mapping(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn transports_map_to_protocols() {
        assert_eq!(Protocol::from(Transport::default()), Protocol::Spdy);
        assert_eq!(Protocol::from(Transport::Websocket), Protocol::WebSocket);
    }
}
