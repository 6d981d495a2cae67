//! Runs the corralctl binary against a fake ImageService on a unix socket in a temp dir:
//! checks the socket transport, table and JSON output, and how errors and exit codes look.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use cri_proto::v1::image_service_server::{ImageService, ImageServiceServer};
use cri_proto::v1::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest, ImageFsInfoResponse,
    ImageStatusRequest, ImageStatusResponse, ListImagesRequest, ListImagesResponse,
    PullImageRequest, PullImageResponse, RemoveImageRequest, RemoveImageResponse,
    StreamImagesRequest, StreamImagesResponse, UInt64Value,
};
use tonic::{Request, Response, Status};

/// An image store in memory; `pull` of a reference containing "missing" fails like a registry.
#[derive(Default)]
struct FakeImages {
    images: Mutex<Vec<Image>>,
}

impl FakeImages {
    fn find(&self, reference: &str) -> Option<Image> {
        let images = self.images.lock().expect("not poisoned");
        images
            .iter()
            .find(|i| i.id == reference || i.repo_tags.iter().any(|t| t == reference))
            .cloned()
    }
}

fn reference_of(spec: Option<cri_proto::v1::ImageSpec>) -> String {
    spec.map(|s| s.image).unwrap_or_default()
}

#[tonic::async_trait]
impl ImageService for FakeImages {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let wanted = reference_of(request.into_inner().filter.and_then(|f| f.image));
        let images = self.images.lock().expect("not poisoned").clone();
        let images = images
            .into_iter()
            .filter(|i| wanted.is_empty() || i.repo_tags.iter().any(|t| t == &wanted))
            .collect();
        Ok(Response::new(ListImagesResponse { images }))
    }

    type StreamImagesStream = tokio_stream::Empty<Result<StreamImagesResponse, Status>>;

    async fn stream_images(
        &self,
        _request: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        Err(Status::unimplemented("StreamImages"))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let image = self.find(&reference_of(request.image));
        let mut info = std::collections::HashMap::new();
        if request.verbose && image.is_some() {
            info.insert("info".to_string(), r#"{"chainID":"sha256:c"}"#.to_string());
        }
        Ok(Response::new(ImageStatusResponse { image, info }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let request = request.into_inner();
        let reference = reference_of(request.image);
        if reference.contains("missing") {
            return Err(Status::not_found(format!("{reference}: manifest unknown")));
        }
        let auth = request.auth.unwrap_or_default();
        let id = format!("sha256:{}", "ab".repeat(32));
        let image = Image {
            id: id.clone(),
            repo_tags: vec![reference],
            repo_digests: vec![format!(
                "docker.io/library/busybox@sha256:{}",
                "cd".repeat(32)
            )],
            size: 4_263_936,
            username: auth.username,
            ..Default::default()
        };
        self.images.lock().expect("not poisoned").push(image);
        Ok(Response::new(PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let reference = reference_of(request.into_inner().image);
        self.images
            .lock()
            .expect("not poisoned")
            .retain(|i| i.id != reference && !i.repo_tags.contains(&reference));
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let usage = FilesystemUsage {
            timestamp: 1,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: "/var/lib/corral".to_string(),
            }),
            used_bytes: Some(UInt64Value { value: 4096 }),
            inodes_used: Some(UInt64Value { value: 7 }),
        };
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![usage],
            container_filesystems: vec![],
        }))
    }
}

/// Serves the fake on `socket` from a background thread for the rest of the test process.
fn serve_fake_images(socket: &Path) {
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind socket");
    listener.set_nonblocking(true).expect("nonblocking socket");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async move {
            let listener = tokio::net::UnixListener::from_std(listener).expect("tokio listener");
            tonic::transport::Server::builder()
                .add_service(ImageServiceServer::new(FakeImages::default()))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
                .expect("fake server runs");
        });
    });
}

fn corralctl(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corralctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("CORRAL_SOCKET")
        .env_remove("CRICTL_CREDS")
        .env_remove("CRICTL_AUTH")
        .output()
        .expect("run corralctl")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn image_verbs_over_a_unix_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket: PathBuf = dir.path().join("fake.sock");
    serve_fake_images(&socket);

    let pulled = corralctl(&socket, &["pull", "--creds", "alice:pw", "busybox:1.36"]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert_eq!(
        stdout(&pulled),
        format!("Image is up to date for sha256:{}\n", "ab".repeat(32))
    );

    let listed = corralctl(&socket, &["images"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert_eq!(
        stdout(&listed),
        concat!(
            "IMAGE               TAG                 IMAGE ID            SIZE\n",
            "busybox             1.36                ababababababa       4.26MB\n",
        )
    );

    let quiet = corralctl(&socket, &["images", "-q"]);
    assert_eq!(stdout(&quiet), format!("sha256:{}\n", "ab".repeat(32)));

    let json = corralctl(&socket, &["images", "-o", "json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON output");
    assert_eq!(parsed["images"][0]["repo_tags"][0], "busybox:1.36");
    assert_eq!(parsed["images"][0]["username"], "alice", "creds were sent");

    let inspected = corralctl(&socket, &["inspecti", "busybox:1.36"]);
    assert!(inspected.status.success(), "{}", stderr(&inspected));
    let parsed: serde_json::Value = serde_json::from_slice(&inspected.stdout).expect("JSON output");
    assert_eq!(parsed["status"]["size"], 4_263_936);
    assert_eq!(parsed["info"]["chainID"], "sha256:c", "info is parsed JSON");

    let fsinfo = corralctl(&socket, &["imagefsinfo", "-o", "yaml"]);
    assert!(fsinfo.status.success(), "{}", stderr(&fsinfo));
    assert!(
        stdout(&fsinfo).contains("mountpoint: /var/lib/corral"),
        "{}",
        stdout(&fsinfo)
    );

    let removed = corralctl(&socket, &["rmi", "busybox:1.36"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(stdout(&removed), "Deleted: busybox:1.36\n");

    let gone = corralctl(&socket, &["rmi", "busybox:1.36"]);
    assert!(!gone.status.success());
    assert_eq!(stderr(&gone), "error: no such image \"busybox:1.36\"\n");

    let failed = corralctl(&socket, &["pull", "missing:latest"]);
    assert!(!failed.status.success());
    assert_eq!(
        stderr(&failed),
        "error: NotFound: missing:latest: manifest unknown\n"
    );
}

#[test]
fn missing_socket_is_reported_with_a_hint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("absent.sock");
    let output = corralctl(&socket, &["version"]);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!(
            "error: cannot connect to corrald at {}",
            socket.display()
        )),
        "{message}"
    );
    assert!(message.contains("is corrald running?"), "{message}");
}

#[test]
fn streaming_verbs_report_errors_in_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("fake.sock");
    serve_fake_images(&socket);
    // This fake serves no RuntimeService: the gRPC status is the error.
    let output = corralctl(&socket, &["exec", "-it", "abc", "sh"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).starts_with("error: Unimplemented: "),
        "{}",
        stderr(&output)
    );
    // Port mappings are checked before anything is asked of corrald.
    let output = corralctl(&socket, &["port-forward", "pod", "8080:http"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: \"http\" in \"8080:http\" is not a port (1-65535)\n"
    );
}
