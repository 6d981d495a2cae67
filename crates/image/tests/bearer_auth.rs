//! Bearer-token authentication against a small fake registry (docker-registry's token auth
//! needs a token server with certificates, so the token flow is checked here): basic
//! credentials and identity (refresh) tokens exchanged at the realm, a ready registry token,
//! and blob redirects that must not carry the registry's credentials to another host.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use corral_image::{AuthConfig, ErrorKind, ImageStore, RegistryConfig};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TOKEN: &str = "good-token";

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

struct FakeImage {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
}

fn fake_image() -> FakeImage {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("hello.txt").unwrap();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, &b"hello\n"[..]).unwrap();
    let layer = tar.into_inner().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    FakeImage {
        manifest,
        config,
        layer,
    }
}

struct Request {
    method: String,
    target: String,
    authorization: Option<String>,
    body: String,
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let mut authorization = None;
    let mut length = 0;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => authorization = Some(v.trim().to_string()),
                "content-length" => length = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        target,
        authorization,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Serves the fake registry on 127.0.0.1; blobs redirect to `localhost:<port>/storage/…`.
/// Returns the host and the log of `METHOD target auth?` lines.
async fn start_fake_registry() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let host = format!("127.0.0.1:{port}");
    let log = Arc::new(Mutex::new(Vec::new()));
    let image = Arc::new(fake_image());
    let server_log = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let log = server_log.clone();
            let image = image.clone();
            tokio::spawn(async move {
                while let Some(req) = read_request(&mut stream).await {
                    log.lock().unwrap().push(format!(
                        "{} {} {}",
                        req.method,
                        req.target,
                        req.authorization.as_deref().unwrap_or("-")
                    ));
                    let (status, headers, body) = respond(&req, port, &image);
                    let mut out =
                        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
                    for (k, v) in headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    let mut bytes = out.into_bytes();
                    bytes.extend_from_slice(&body);
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (host, log)
}

fn respond(
    req: &Request,
    port: u16,
    image: &FakeImage,
) -> (&'static str, Vec<(String, String)>, Vec<u8>) {
    let challenge = vec![(
        "WWW-Authenticate".to_string(),
        format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:test/app:pull\""),
    )];
    let authorized = req.authorization.as_deref() == Some(&format!("Bearer {TOKEN}"));
    let path = req.target.split('?').next().unwrap_or_default();
    if path == "/token" {
        use base64::Engine as _;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:pw")
        );
        let ok = match req.method.as_str() {
            "GET" => {
                req.target.contains("scope=repository%3Atest%2Fapp%3Apull")
                    && req.target.contains("service=fake")
                    && req.authorization.as_deref() == Some(&basic)
            }
            "POST" => {
                req.body.contains("grant_type=refresh_token")
                    && req.body.contains("refresh_token=refresh-1")
            }
            _ => false,
        };
        return if !ok {
            (
                "401 Unauthorized",
                vec![],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_vec(),
            )
        } else if req.method == "POST" {
            (
                "200 OK",
                vec![],
                format!(r#"{{"access_token":"{TOKEN}"}}"#).into_bytes(),
            )
        } else {
            (
                "200 OK",
                vec![],
                format!(r#"{{"token":"{TOKEN}"}}"#).into_bytes(),
            )
        };
    }
    if let Some(digest) = path.strip_prefix("/storage/") {
        // Blob storage on "another host": the registry's token must not come along.
        if req.authorization.is_some() {
            return (
                "400 Bad Request",
                vec![],
                b"credentials leaked to storage".to_vec(),
            );
        }
        let body = if digest == sha256(&image.config) {
            &image.config
        } else {
            &image.layer
        };
        return ("200 OK", vec![], body.clone());
    }
    if !authorized {
        return (
            "401 Unauthorized",
            challenge,
            br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
        );
    }
    if path == "/v2/test/app/manifests/v1" {
        let headers = vec![(
            "Content-Type".into(),
            "application/vnd.oci.image.manifest.v1+json".into(),
        )];
        return ("200 OK", headers, image.manifest.clone());
    }
    if let Some(digest) = path.strip_prefix("/v2/test/app/blobs/") {
        let location = format!("http://localhost:{port}/storage/{digest}");
        return (
            "307 Temporary Redirect",
            vec![("Location".into(), location)],
            Vec::new(),
        );
    }
    ("404 Not Found", vec![], Vec::new())
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(corral_store::Store::open(&dir.path().join("meta.redb")).unwrap());
    let store = ImageStore::open(db, dir.path(), RegistryConfig::default()).unwrap();
    (dir, store)
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_credentials_are_exchanged_for_a_bearer_token() {
    let (host, log) = start_fake_registry().await;
    let (_dir, store) = store();
    let reference = format!("{host}/test/app:v1");
    let auth = AuthConfig {
        username: "alice".into(),
        password: "pw".into(),
        ..Default::default()
    };
    let image = store.pull(&reference, Some(&auth)).await.unwrap();
    assert_eq!(image.repo_tags, [reference]);
    let log = log.lock().unwrap().clone();
    assert!(log.iter().any(|l| l.starts_with("GET /token?")), "{log:#?}");
    let storage: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("GET /storage/"))
        .collect();
    assert_eq!(
        storage.len(),
        2,
        "config and layer via the redirect: {log:#?}"
    );
    assert!(
        log.iter()
            .filter(|l| l.starts_with("GET /storage/"))
            .all(|l| l.ends_with(" -")),
        "no credentials to the storage host: {log:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_and_registry_tokens_work() {
    let (host, log) = start_fake_registry().await;
    let reference = format!("{host}/test/app:v1");
    let (_dir, store1) = store();
    let identity = AuthConfig {
        identitytoken: "refresh-1".into(),
        ..Default::default()
    };
    store1.pull(&reference, Some(&identity)).await.unwrap();
    assert!(log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("POST /token")));

    let (_dir, store2) = store();
    let token = AuthConfig {
        registrytoken: TOKEN.into(),
        ..Default::default()
    };
    let before = log.lock().unwrap().len();
    store2.pull(&reference, Some(&token)).await.unwrap();
    let after: Vec<String> = log.lock().unwrap()[before..].to_vec();
    assert!(
        !after.iter().any(|l| l.contains("/token")),
        "a registry token is used as is: {after:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_token_credentials_are_unauthenticated() {
    let (host, _log) = start_fake_registry().await;
    let (_dir, store) = store();
    let auth = AuthConfig {
        username: "alice".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = store
        .pull(&format!("{host}/test/app:v1"), Some(&auth))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&host) && msg.contains("bad credentials"),
        "{msg}"
    );
}
