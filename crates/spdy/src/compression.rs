//! Header block compression: one zlib stream per direction per connection, primed with the
//! SPDY/3 dictionary and sync-flushed after every block, so each frame's compressed bytes
//! decompress to exactly one name/value block.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::dictionary::{SPDY3_DICTIONARY, SPDY3_DICTIONARY_ID};
use crate::error::SpdyError;
use crate::headers::{Headers, MAX_HEADER_BLOCK_LEN};

/// Spare output room kept for each deflate call; zlib asks for more than six bytes so that a
/// sync flush never ends on a full buffer.
const MIN_OUTPUT_ROOM: usize = 64;

/// The sending side's compression context.
pub struct HeaderCompressor {
    zlib: Compress,
}

impl HeaderCompressor {
    /// A fresh context primed with the SPDY/3 dictionary.
    pub fn new() -> Result<Self, SpdyError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(SPDY3_DICTIONARY)
            .map_err(|err| SpdyError::Compression {
                reason: format!("setting the dictionary: {err}"),
            })?;
        Ok(Self { zlib })
    }

    /// Encodes and compresses `headers` as the next block of this stream.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let block = headers.encode_block()?;
        self.compress_block(&block)
    }

    /// Compresses an already encoded block and sync-flushes it.
    pub fn compress_block(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() / 2 + MIN_OUTPUT_ROOM);
        let mut consumed = 0usize;
        loop {
            if out.capacity() - out.len() < MIN_OUTPUT_ROOM {
                out.reserve(out.capacity().max(MIN_OUTPUT_ROOM));
            }
            let before = self.zlib.total_in();
            let status = self
                .zlib
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|err| SpdyError::Compression {
                    reason: err.to_string(),
                })?;
            consumed += usize::try_from(self.zlib.total_in() - before).unwrap_or(usize::MAX);
            let flushed = consumed >= block.len() && out.len() < out.capacity();
            if flushed || (status == Status::BufError && consumed >= block.len()) {
                return Ok(out);
            }
            if status == Status::StreamEnd {
                return Err(SpdyError::Compression {
                    reason: "zlib stream ended unexpectedly".into(),
                });
            }
        }
    }
}

/// The receiving side's decompression context.
pub struct HeaderDecompressor {
    zlib: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A fresh context; the dictionary is supplied when the stream asks for it.
    pub fn new() -> Self {
        Self {
            zlib: Decompress::new(true),
        }
    }

    /// Decompresses the next frame's header block and decodes its name/value pairs.
    pub fn decompress(&mut self, compressed: &[u8]) -> Result<Headers, SpdyError> {
        let block = self.decompress_block(compressed)?;
        Headers::decode_block(&block)
    }

    /// Decompresses the next frame's header block to its raw name/value bytes.
    pub fn decompress_block(&mut self, compressed: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity((compressed.len() * 4).clamp(256, MAX_HEADER_BLOCK_LEN));
        let mut consumed = 0usize;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK_LEN {
                    return Err(SpdyError::Decompression {
                        reason: "header block larger than 1 MiB".into(),
                    });
                }
                let grow = out.len().min(MAX_HEADER_BLOCK_LEN - out.len());
                out.reserve_exact(grow.max(256));
            }
            let (in_before, out_before) = (self.zlib.total_in(), out.len());
            let result =
                self.zlib
                    .decompress_vec(&compressed[consumed..], &mut out, FlushDecompress::Sync);
            consumed += usize::try_from(self.zlib.total_in() - in_before).unwrap_or(usize::MAX);
            let progressed = self.zlib.total_in() != in_before || out.len() != out_before;
            match result {
                Ok(Status::StreamEnd) => {
                    if consumed < compressed.len() {
                        return Err(SpdyError::Decompression {
                            reason: "bytes after the end of the zlib stream".into(),
                        });
                    }
                    return Ok(out);
                }
                Ok(Status::Ok) | Ok(Status::BufError) => {
                    if consumed >= compressed.len() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if !progressed && out.len() < out.capacity() {
                        return Err(SpdyError::Decompression {
                            reason: "zlib made no progress on the header block".into(),
                        });
                    }
                }
                Err(err) => match err.needs_dictionary() {
                    Some(SPDY3_DICTIONARY_ID) => {
                        self.zlib.set_dictionary(SPDY3_DICTIONARY).map_err(|err| {
                            SpdyError::Decompression {
                                reason: format!("setting the dictionary: {err}"),
                            }
                        })?;
                    }
                    Some(other) => {
                        return Err(SpdyError::Decompression {
                            reason: format!(
                                "stream asks for dictionary {other:#010x}, not the SPDY/3 one"
                            ),
                        })
                    }
                    None => {
                        return Err(SpdyError::Decompression {
                            reason: err.to_string(),
                        })
                    }
                },
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in data {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    /// Hand-built name/value block: count, then length-prefixed names and values.
    fn nv_block(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut block = (pairs.len() as u32).to_be_bytes().to_vec();
        for (name, value) in pairs {
            block.extend_from_slice(&(name.len() as u32).to_be_bytes());
            block.extend_from_slice(name.as_bytes());
            block.extend_from_slice(&(value.len() as u32).to_be_bytes());
            block.extend_from_slice(value);
        }
        block
    }

    #[test]
    fn dictionary_matches_the_spec_checksum() {
        assert_eq!(SPDY3_DICTIONARY.len(), 1423);
        assert_eq!(adler32(SPDY3_DICTIONARY), SPDY3_DICTIONARY_ID);
        assert!(SPDY3_DICTIONARY.starts_with(b"\x00\x00\x00\x07options"));
        assert!(SPDY3_DICTIONARY.ends_with(b",utf-,*,enq=0."));
    }

    /// Three consecutive blocks from one C zlib 1.2.13 stream (level 9, 2 KiB window, SPDY/3
    /// dictionary, Z_SYNC_FLUSH after each), as Chromium configured its compressor.
    #[test]
    fn decodes_blocks_from_reference_zlib() {
        let frames = [
            "38eae3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff",
            "c22a054ccc29f9a52500000000ffff",
            "02e50a48b15d04665b1858180069ce2248346782923fa301866e501905ce4215bab9a5392599e042982109000000ffff",
        ];
        let expected_blocks = [
            nv_block(&[("streamtype", b"error")]),
            nv_block(&[("streamtype", b"stdout")]),
            nv_block(&[
                ("port", b"8080"),
                ("requestid", b"0"),
                ("streamtype", b"data"),
                ("x-multi", b"a\0b"),
            ]),
        ];
        let mut decompressor = HeaderDecompressor::new();
        for (frame, expected) in frames.iter().zip(&expected_blocks) {
            let block = decompressor.decompress_block(&hex(frame)).unwrap();
            assert_eq!(&block, expected);
        }
        let headers = Headers::decode_block(&expected_blocks[2]).unwrap();
        assert_eq!(headers.get("port"), Some("8080"));
        assert_eq!(headers.get_all("x-multi"), ["a", "b"]);
    }

    #[test]
    fn first_block_names_the_spdy_dictionary() {
        let mut compressor = HeaderCompressor::new().unwrap();
        let headers: Headers = [("streamtype", "stdin")].into_iter().collect();
        let compressed = compressor.compress(&headers).unwrap();
        // zlib header with FDICT set, then the dictionary's Adler-32.
        assert_eq!(compressed[1] & 0x20, 0x20);
        assert_eq!(compressed[2..6], SPDY3_DICTIONARY_ID.to_be_bytes());
        // Every block ends with the sync-flush marker.
        assert!(compressed.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    }

    #[test]
    fn many_consecutive_blocks_share_one_stream() {
        let mut compressor = HeaderCompressor::new().unwrap();
        let mut decompressor = HeaderDecompressor::new();
        let mut total_compressed = 0;
        for i in 0..500 {
            let mut headers = Headers::new();
            headers.insert(
                "streamtype",
                ["stdin", "stdout", "stderr", "error", "resize"][i % 5],
            );
            headers.insert("requestid", i.to_string());
            headers.insert("port", "8080");
            if i % 7 == 0 {
                headers.append("x-big", "v".repeat((i + 1) * 10));
                headers.append("x-big", "second");
            }
            let compressed = compressor.compress(&headers).unwrap();
            total_compressed += compressed.len();
            assert_eq!(decompressor.decompress(&compressed).unwrap(), headers);
        }
        // The shared context makes repeated headers cheap.
        assert!(total_compressed < 500 * 40, "{total_compressed}");
    }

    #[test]
    fn large_block_round_trips() {
        let mut compressor = HeaderCompressor::new().unwrap();
        let mut decompressor = HeaderDecompressor::new();
        let mut headers = Headers::new();
        for i in 0..2000 {
            headers.insert(&format!("x-header-{i}"), format!("value {i} {}", i * 7919));
        }
        let compressed = compressor.compress(&headers).unwrap();
        assert_eq!(decompressor.decompress(&compressed).unwrap(), headers);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut decompressor = HeaderDecompressor::new();
        assert!(decompressor.decompress_block(b"\x00\x01\x02\x03").is_err());
        // A zlib stream with a different dictionary id is refused.
        let mut other = HeaderDecompressor::new();
        let err = other.decompress_block(&hex("78bb00000001")).unwrap_err();
        assert!(matches!(err, SpdyError::Decompression { .. }), "{err}");
    }

    #[test]
    fn oversized_block_is_an_error() {
        let mut compressor = HeaderCompressor::new().unwrap();
        let block = vec![0u8; MAX_HEADER_BLOCK_LEN + 10];
        let compressed = compressor.compress_block(&block).unwrap();
        let mut decompressor = HeaderDecompressor::new();
        assert!(decompressor.decompress_block(&compressed).is_err());
    }
}
