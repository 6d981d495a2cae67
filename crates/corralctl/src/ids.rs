//! Matching an ID prefix typed by the user against the IDs the runtime knows.

use std::fmt;

/// A prefix that matches more than one ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbiguousPrefix {
    /// What the user typed.
    pub prefix: String,
    /// Every ID that starts with it, sorted.
    pub candidates: Vec<String>,
}

impl fmt::Display for AmbiguousPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ID prefix {:?} is ambiguous, it matches {} IDs: {}",
            self.prefix,
            self.candidates.len(),
            self.candidates.join(", ")
        )
    }
}

impl std::error::Error for AmbiguousPrefix {}

/// Resolves `prefix` against `known` IDs.
///
/// An exact match wins; otherwise the one ID starting with `prefix` is returned. `Ok(None)`
/// means nothing matched (the caller then passes the prefix on unchanged and lets the
/// runtime report that it does not exist).
pub fn resolve_prefix<'a>(
    prefix: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Result<Option<String>, AmbiguousPrefix> {
    let mut candidates: Vec<String> = Vec::new();
    for id in known {
        if id == prefix {
            return Ok(Some(id.to_string()));
        }
        if id.starts_with(prefix) && !candidates.iter().any(|c| c == id) {
            candidates.push(id.to_string());
        }
    }
    match candidates.len() {
        0 => Ok(None),
        1 => Ok(candidates.pop()),
        _ => {
            candidates.sort();
            Err(AmbiguousPrefix {
                prefix: prefix.to_string(),
                candidates,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: [&str; 3] = ["abc123", "abd456", "ffff00"];

    #[test]
    fn unique_prefix_resolves_to_full_id() {
        assert_eq!(resolve_prefix("ff", IDS), Ok(Some("ffff00".to_string())));
        assert_eq!(resolve_prefix("abc", IDS), Ok(Some("abc123".to_string())));
    }

    #[test]
    fn exact_match_wins_over_longer_ids() {
        let ids = ["abc", "abcdef"];
        assert_eq!(resolve_prefix("abc", ids), Ok(Some("abc".to_string())));
    }

    #[test]
    fn no_match_is_none() {
        assert_eq!(resolve_prefix("zz", IDS), Ok(None));
        assert_eq!(resolve_prefix("abc1234", IDS), Ok(None));
    }

    #[test]
    fn ambiguous_prefix_lists_candidates_sorted() {
        let err = resolve_prefix("ab", ["abd456", "abc123", "abc123"])
            .expect_err("two IDs share the prefix");
        assert_eq!(err.candidates, vec!["abc123", "abd456"]);
        let message = err.to_string();
        assert!(message.contains("\"ab\""), "{message}");
        assert!(message.contains("abc123, abd456"), "{message}");
    }
}
