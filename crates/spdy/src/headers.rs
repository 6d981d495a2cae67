//! Name/value header blocks (SPDY/3 section 2.6.10), before compression.
//!
//! Layout: a 32-bit pair count, then per pair a 32-bit name length, the name, a 32-bit value
//! length and the value; all integers big-endian. Names are lower case and unique; a name
//! with several values carries them in one value field, separated by NUL bytes.

use crate::error::SpdyError;

/// Largest uncompressed header block this crate sends or accepts (1 MiB).
pub const MAX_HEADER_BLOCK_LEN: usize = 1 << 20;

/// An ordered set of header names (lower case, unique) with one or more values each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<HeaderEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct HeaderEntry {
    name: String,
    values: Vec<String>,
}

impl Headers {
    /// An empty header set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` to `name` (lower-cased), after any values it already has.
    pub fn append(&mut self, name: &str, value: impl Into<String>) {
        let name = name.to_ascii_lowercase();
        let value = value.into();
        match self.entries.iter_mut().find(|entry| entry.name == name) {
            Some(entry) => entry.values.push(value),
            None => self.entries.push(HeaderEntry {
                name,
                values: vec![value],
            }),
        }
    }

    /// Sets `name` (lower-cased) to the single `value`, replacing any values it had.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        let name = name.to_ascii_lowercase();
        let value = value.into();
        match self.entries.iter_mut().find(|entry| entry.name == name) {
            Some(entry) => entry.values = vec![value],
            None => self.entries.push(HeaderEntry {
                name,
                values: vec![value],
            }),
        }
    }

    /// Removes `name` and returns its values.
    pub fn remove(&mut self, name: &str) -> Option<Vec<String>> {
        let position = self
            .entries
            .iter()
            .position(|entry| entry.name.eq_ignore_ascii_case(name))?;
        Some(self.entries.remove(position).values)
    }

    /// The first value of `name` (compared case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).first().map(String::as_str)
    }

    /// All values of `name` (compared case-insensitively); empty when absent.
    pub fn get_all(&self, name: &str) -> &[String] {
        self.entries
            .iter()
            .find(|entry| entry.name.eq_ignore_ascii_case(name))
            .map(|entry| entry.values.as_slice())
            .unwrap_or(&[])
    }

    /// The names with their values, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.entries
            .iter()
            .map(|entry| (entry.name.as_str(), entry.values.as_slice()))
    }

    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Checks that the headers can be sent, and returns the encoded block's length.
    pub fn validate(&self) -> Result<usize, SpdyError> {
        let mut len = 4usize;
        for entry in &self.entries {
            if entry.name.is_empty() {
                return Err(invalid(&entry.name, "empty name"));
            }
            if entry.name.bytes().any(|b| b == 0 || b.is_ascii_uppercase()) {
                return Err(invalid(
                    &entry.name,
                    "name contains NUL or upper-case letters",
                ));
            }
            if entry
                .values
                .iter()
                .any(|value| value.as_bytes().contains(&0))
            {
                return Err(invalid(&entry.name, "value contains NUL"));
            }
            if entry.values.len() > 1 && entry.values.iter().any(String::is_empty) {
                return Err(invalid(&entry.name, "empty value among several values"));
            }
            let value_len = entry.values.iter().map(String::len).sum::<usize>()
                + entry.values.len().saturating_sub(1);
            len = len.saturating_add(8 + entry.name.len() + value_len);
        }
        if len > MAX_HEADER_BLOCK_LEN {
            return Err(SpdyError::InvalidHeader {
                name: String::new(),
                reason: "header block larger than 1 MiB",
            });
        }
        Ok(len)
    }

    /// Encodes the uncompressed name/value block.
    pub fn encode_block(&self) -> Result<Vec<u8>, SpdyError> {
        let len = self.validate()?;
        let mut block = Vec::with_capacity(len);
        push_len(&mut block, self.entries.len());
        for entry in &self.entries {
            push_len(&mut block, entry.name.len());
            block.extend_from_slice(entry.name.as_bytes());
            let value = entry.values.join("\0");
            push_len(&mut block, value.len());
            block.extend_from_slice(value.as_bytes());
        }
        Ok(block)
    }

    /// Decodes an uncompressed name/value block, rejecting anything the spec forbids.
    pub fn decode_block(block: &[u8]) -> Result<Headers, SpdyError> {
        let mut reader = BlockReader { rest: block };
        let count = reader.read_u32("pair count")? as usize;
        // Each pair needs at least its two length fields.
        if count > reader.rest.len() / 8 {
            return Err(SpdyError::header_block(format!(
                "{count} pairs announced but only {} bytes follow",
                reader.rest.len()
            )));
        }
        let mut headers = Headers::new();
        for _ in 0..count {
            let name = reader.read_string("name")?;
            if name.is_empty() {
                return Err(SpdyError::header_block("zero-length header name"));
            }
            if name.bytes().any(|b| b == 0 || b.is_ascii_uppercase()) {
                return Err(SpdyError::header_block(format!(
                    "header name {name:?} contains NUL or upper-case letters"
                )));
            }
            if headers.entries.iter().any(|entry| entry.name == name) {
                return Err(SpdyError::header_block(format!(
                    "duplicate header name {name:?}"
                )));
            }
            let value = reader.read_string("value")?;
            let values: Vec<String> = if value.is_empty() {
                vec![String::new()]
            } else {
                let parts: Vec<String> = value.split('\0').map(str::to_owned).collect();
                if parts.iter().any(String::is_empty) {
                    return Err(SpdyError::header_block(format!(
                        "value of {name:?} has an empty NUL-separated part"
                    )));
                }
                parts
            };
            headers.entries.push(HeaderEntry { name, values });
        }
        if !reader.rest.is_empty() {
            return Err(SpdyError::header_block(format!(
                "{} bytes after the last pair",
                reader.rest.len()
            )));
        }
        Ok(headers)
    }
}

impl<N: AsRef<str>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.append(name.as_ref(), value);
        }
        headers
    }
}

fn invalid(name: &str, reason: &'static str) -> SpdyError {
    SpdyError::InvalidHeader {
        name: name.to_owned(),
        reason,
    }
}

fn push_len(block: &mut Vec<u8>, len: usize) {
    // Lengths are bounded by MAX_HEADER_BLOCK_LEN (checked in validate), so they fit u32.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    block.extend_from_slice(&len.to_be_bytes());
}

struct BlockReader<'a> {
    rest: &'a [u8],
}

impl BlockReader<'_> {
    fn read_u32(&mut self, what: &str) -> Result<u32, SpdyError> {
        match self.rest.split_first_chunk::<4>() {
            Some((bytes, rest)) => {
                self.rest = rest;
                Ok(u32::from_be_bytes(*bytes))
            }
            None => Err(SpdyError::header_block(format!("truncated {what} length"))),
        }
    }

    fn read_string(&mut self, what: &str) -> Result<String, SpdyError> {
        let len = self.read_u32(what)? as usize;
        if len > self.rest.len() {
            return Err(SpdyError::header_block(format!(
                "{what} of {len} bytes but only {} remain",
                self.rest.len()
            )));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| SpdyError::header_block(format!("{what} is not UTF-8")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn block_layout_is_exact() {
        let mut headers = Headers::new();
        headers.insert("StreamType", "stdin");
        headers.append("x-a", "1");
        headers.append("x-a", "2");
        let block = headers.encode_block().unwrap();
        let mut expected = vec![0, 0, 0, 2];
        expected.extend_from_slice(&[0, 0, 0, 10]);
        expected.extend_from_slice(b"streamtype");
        expected.extend_from_slice(&[0, 0, 0, 5]);
        expected.extend_from_slice(b"stdin");
        expected.extend_from_slice(&[0, 0, 0, 3]);
        expected.extend_from_slice(b"x-a");
        expected.extend_from_slice(&[0, 0, 0, 3]);
        expected.extend_from_slice(b"1\x002");
        assert_eq!(block, expected);
        assert_eq!(headers.validate().unwrap(), expected.len());
        assert_eq!(Headers::decode_block(&block).unwrap(), headers);
    }

    #[test]
    fn lookups_ignore_case_and_keep_order() {
        let headers: Headers = [("Port", "8080"), ("requestID", "0"), ("port", "9090")]
            .into_iter()
            .collect();
        assert_eq!(headers.get("PORT"), Some("8080"));
        assert_eq!(headers.get_all("port"), ["8080", "9090"]);
        assert_eq!(headers.get("missing"), None);
        let names: Vec<&str> = headers.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["port", "requestid"]);
        assert_eq!(headers.len(), 2);
    }

    #[test]
    fn empty_value_round_trips() {
        let headers: Headers = [("x-empty", "")].into_iter().collect();
        let block = headers.encode_block().unwrap();
        assert_eq!(Headers::decode_block(&block).unwrap(), headers);
    }

    #[test]
    fn invalid_headers_are_not_encoded() {
        let with_nul: Headers = [("x", "a\0b")].into_iter().collect();
        assert!(matches!(
            with_nul.encode_block(),
            Err(SpdyError::InvalidHeader { .. })
        ));
        let empty_name: Headers = [("", "v")].into_iter().collect();
        assert!(empty_name.validate().is_err());
        let mut empty_among_many = Headers::new();
        empty_among_many.append("x", "");
        empty_among_many.append("x", "b");
        assert!(empty_among_many.validate().is_err());
    }

    #[test]
    fn malformed_blocks_are_rejected() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x00\x00",
            b"\x00\x00\x00\x01",
            b"\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00",
            b"\x00\x00\x00\x01\x00\x00\x00\x01X\x00\x00\x00\x00",
            b"\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00\x00\x02a\x00",
            b"\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00\x00\x05a",
            b"\x00\x00\x00\x02\x00\x00\x00\x01x\x00\x00\x00\x00\x00\x00\x00\x01x\x00\x00\x00\x00",
            b"\x00\x00\x00\x00trailing",
            b"\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00\x00\x01\xff",
        ];
        for case in cases {
            assert!(
                matches!(
                    Headers::decode_block(case),
                    Err(SpdyError::InvalidHeaderBlock { .. })
                ),
                "accepted {case:?}"
            );
        }
    }
}
