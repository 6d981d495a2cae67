//! Image references and their normalisation, as kubelet and crictl expect it:
//! `busybox` → `docker.io/library/busybox:latest`, `name@sha256:…`, `name:tag@sha256:…`.

use std::fmt;

use crate::digest::Digest;
use crate::error::{ImageError, Result};

/// The registry host of unqualified names.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];
const MAX_NAME_LEN: usize = 255;

/// A fully-qualified image reference: registry domain, repository path, and a tag, a digest or
/// both. Parsing fills in the defaults, so `Display` gives the normalised form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference. A reference with neither tag nor digest gets `latest`.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(invalid("empty"));
        }
        let (name_and_tag, digest) = match input.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).map_err(|_| invalid("bad digest"))?),
            ),
            None => (input, None),
        };
        let (name, tag) = match name_and_tag.rfind(':') {
            Some(i) if !name_and_tag[i..].contains('/') => {
                (&name_and_tag[..i], Some(&name_and_tag[i + 1..]))
            }
            _ => (name_and_tag, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(invalid)?;
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("name longer than 255 characters"));
        }
        let (domain, repository) = split_domain(name);
        if domain.is_empty() || repository.is_empty() {
            return Err(invalid("empty registry or repository"));
        }
        validate_domain(&domain).map_err(invalid)?;
        validate_repository(&repository).map_err(invalid)?;
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some("latest".to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            domain,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (with port), e.g. `docker.io`, `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.repository)
    }

    /// `domain/repository:tag`, if the reference has a tag and no digest (a digest pins the
    /// content, so a tag next to it is not recorded).
    pub fn tagged_name(&self) -> Option<String> {
        match (&self.tag, &self.digest) {
            (Some(tag), None) => Some(format!("{}:{tag}", self.name())),
            _ => None,
        }
    }

    /// `domain/repository@digest` for the given digest.
    pub fn digested_name(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.name())
    }

    /// What to ask the registry's manifest endpoint for: the digest if there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits `name` into registry domain and repository, applying Docker Hub's defaults.
fn split_domain(name: &str) -> (String, String) {
    let (domain, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let domain = if DOCKER_HUB_ALIASES.contains(&domain.as_str()) {
        DOCKER_HUB.to_string()
    } else {
        domain
    };
    let repository = if domain == DOCKER_HUB && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest
    };
    (domain, repository)
}

fn validate_tag(tag: &str) -> std::result::Result<(), &'static str> {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !first_ok || tag.len() > 128 {
        return Err("bad tag");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err("bad tag");
    }
    Ok(())
}

fn validate_domain(domain: &str) -> std::result::Result<(), &'static str> {
    let ok = domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if ok {
        Ok(())
    } else {
        Err("bad registry host")
    }
}

/// Repository components: lowercase alphanumerics joined by `.`, `_`, `__` or dashes.
fn validate_repository(repository: &str) -> std::result::Result<(), &'static str> {
    for component in repository.split('/') {
        let bytes = component.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return Err("empty path component");
        };
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !alnum(first) || !alnum(last) {
            return Err("path components must start and end with a lowercase letter or digit");
        }
        let mut i = 0;
        while i < bytes.len() {
            if alnum(&bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(&bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let valid_sep =
                sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
            if !valid_sep {
                return Err(
                    "path components may hold only lowercase letters, digits and separators",
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_defaults() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/user/app"),
            "docker.io/user/app:latest"
        );
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn other_registries_keep_their_path() {
        let r = Reference::parse("registry.k8s.io/e2e-test-images/busybox:1.29-4").unwrap();
        assert_eq!(r.domain(), "registry.k8s.io");
        assert_eq!(r.repository(), "e2e-test-images/busybox");
        assert_eq!(r.tag(), Some("1.29-4"));
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        let r = Reference::parse("127.0.0.1:5000/a/b").unwrap();
        assert_eq!((r.domain(), r.repository()), ("127.0.0.1:5000", "a/b"));
    }

    #[test]
    fn digests_with_and_without_tag() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.tagged_name(), None);
        let r = Reference::parse(&format!("busybox:1.36@{D}")).unwrap();
        assert_eq!(r.tag(), Some("1.36"));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1.36@{D}"));
        assert_eq!(
            r.digested_name(r.digest().unwrap()),
            format!("docker.io/library/busybox@{D}")
        );
    }

    #[test]
    fn port_is_not_a_tag() {
        let r = Reference::parse("127.0.0.1:5000/app").unwrap();
        assert_eq!(r.tag(), Some("latest"));
        let r = Reference::parse("127.0.0.1:5000/app:v1").unwrap();
        assert_eq!(r.tag(), Some("v1"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "a//b",
            "a/-b",
            "a/b..c",
            "bad host!/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }
}
