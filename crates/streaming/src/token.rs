//! Single-use tokens that stand for a CRI streaming request between the RPC that returns
//! the URL and the client's HTTP request to it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cri_proto::v1::{AttachRequest, ExecRequest, PortForwardRequest};

use crate::error::StreamingError;

/// Random bytes per token (43 URL-safe characters).
const TOKEN_BYTES: usize = 32;

/// The CRI request a token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CachedRequest {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

#[derive(Debug)]
struct Entry {
    request: CachedRequest,
    expires: Instant,
}

/// Pending requests by token; a token is consumed by its first use and expires unused.
#[derive(Debug)]
pub(crate) struct TokenCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl TokenCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        TokenCache {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `request` under a fresh random token and returns the token.
    pub(crate) fn insert(&self, request: CachedRequest) -> Result<String, StreamingError> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, entry| entry.expires > now);
        if entries.len() >= self.capacity {
            return Err(StreamingError::TooManyPendingRequests {
                limit: self.capacity,
            });
        }
        let token = loop {
            let token = random_token()?;
            if !entries.contains_key(&token) {
                break token;
            }
        };
        entries.insert(
            token.clone(),
            Entry {
                request,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// Removes and returns the request of `token`, unless it is unknown or expired.
    pub(crate) fn consume(&self, token: &str) -> Option<CachedRequest> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.remove(token)?;
        (entry.expires > Instant::now()).then_some(entry.request)
    }
}

fn random_token() -> Result<String, StreamingError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|err| StreamingError::Random {
        what: "a stream token",
        reason: err.to_string(),
    })?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn exec(id: &str) -> CachedRequest {
        CachedRequest::Exec(ExecRequest {
            container_id: id.into(),
            ..ExecRequest::default()
        })
    }

    #[test]
    fn tokens_are_url_safe_random_and_single_use() {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        let first = cache.insert(exec("a")).unwrap();
        let second = cache.insert(exec("b")).unwrap();
        assert_ne!(first, second);
        assert_eq!(first.len(), 43);
        assert!(first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(cache.consume(&second), Some(exec("b")));
        assert_eq!(cache.consume(&second), None);
        assert_eq!(cache.consume(&first), Some(exec("a")));
        assert_eq!(cache.consume("unknown"), None);
    }

    #[test]
    fn expired_tokens_are_refused_and_pruned() {
        let cache = TokenCache::new(Duration::ZERO, 1);
        let token = cache.insert(exec("a")).unwrap();
        assert_eq!(cache.consume(&token), None);
        // The expired entry does not count against the capacity.
        cache.insert(exec("b")).unwrap();
        cache.insert(exec("c")).unwrap();
    }

    #[test]
    fn capacity_limits_pending_tokens() {
        let cache = TokenCache::new(Duration::from_secs(60), 2);
        cache.insert(exec("a")).unwrap();
        let token = cache.insert(exec("b")).unwrap();
        assert!(matches!(
            cache.insert(exec("c")),
            Err(StreamingError::TooManyPendingRequests { limit: 2 })
        ));
        cache.consume(&token).unwrap();
        cache.insert(exec("c")).unwrap();
    }
}
