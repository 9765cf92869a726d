//! Hand-written JSON for the hot read responses (lookups, entries).
//!
//! These bodies are mostly bytes we already hold in final form: canonical envelopes (JSON we
//! validated at ingest and store verbatim), the checkpoint note (escaped once per published
//! checkpoint) and hashes. Writing them directly avoids re-parsing every envelope into a
//! `RawValue` and re-escaping the note per response. The shapes are DESIGN.md §6's; the API tests
//! decode every one of them with `provenix_core::api`'s serde types and verify their proofs.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provenix_core::merkle::Hash;

/// A JSON body being written.
#[derive(Debug, Default)]
pub struct Out(pub Vec<u8>);

impl Out {
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    pub fn raw(&mut self, s: &[u8]) -> &mut Self {
        self.0.extend_from_slice(s);
        self
    }

    pub fn num(&mut self, n: u64) -> &mut Self {
        let mut b = itoa_buf(n);
        self.0.append(&mut b);
        self
    }

    /// A JSON string of arbitrary text.
    pub fn string(&mut self, s: &str) -> &mut Self {
        match serde_json::to_vec(s) {
            Ok(mut v) => self.0.append(&mut v),
            Err(_) => self.0.extend_from_slice(b"\"\""),
        }
        self
    }

    /// A hash as a base64 JSON string.
    pub fn hash(&mut self, h: &Hash) -> &mut Self {
        let mut buf = [0u8; 44];
        let n = STANDARD.encode_slice(h.0, &mut buf).unwrap_or(0);
        self.0.push(b'"');
        self.0.extend_from_slice(&buf[..n]);
        self.0.push(b'"');
        self
    }

    pub fn hashes(&mut self, hs: &[Hash]) -> &mut Self {
        self.0.push(b'[');
        for (i, h) in hs.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.hash(h);
        }
        self.0.push(b']');
        self
    }

    /// `{"index","leafHash","envelope","inclusionProof"}` with `envelope` the stored canonical
    /// JSON, verbatim.
    pub fn proved_entry(
        &mut self,
        index: u64,
        leaf_hash: &Hash,
        envelope: &[u8],
        proof: &[Hash],
    ) -> &mut Self {
        self.raw(b"{\"index\":")
            .num(index)
            .raw(b",\"leafHash\":")
            .hash(leaf_hash)
            .raw(b",\"envelope\":")
            .raw(envelope)
            .raw(b",\"inclusionProof\":")
            .hashes(proof)
            .raw(b"}")
    }

    /// The finished `application/json` response.
    pub fn response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0,
        )
            .into_response()
    }
}

fn itoa_buf(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}
