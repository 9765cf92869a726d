//! An HTTP client for `provenixd`'s API (DESIGN.md §6), shared by `push`, `substituter`,
//! `verify` and `audit`.
//!
//! It moves bytes and decodes JSON; it does not decide whether to believe a log. Callers verify
//! what comes back with `provenix_core::api` (checkpoint signatures, inclusion proofs) and keep
//! per-log checkpoint state for consistency.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use provenix_core::api::{
    BatchLookupRequest, BatchLookupResponse, BuildersResponse, ConsistencyResponse, EntryResponse,
    ErrorResponse, LookupResponse, SubmitResponse,
};
use provenix_core::tile::TilePath;
use serde::de::DeserializeOwned;
use url::Url;

/// Largest response body read from a log (a lookup of 1000 keys with proofs fits easily).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Why a request to a log failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the log, or it did not answer in time.
    #[error("{url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The log answered with an error status.
    #[error("{url}: HTTP {status} {code}: {message}")]
    Status {
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The log's answer could not be decoded.
    #[error("{url}: bad response: {message}")]
    Decode { url: String, message: String },
    /// The base URL is not usable.
    #[error("log URL {0:?} is not an http(s) URL")]
    BadUrl(String),
}

impl ClientError {
    /// Whether retrying later may help (transport failures, 5xx, 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
            ClientError::Decode { .. } | ClientError::BadUrl(_) => false,
        }
    }

    /// The HTTP status, if the log answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client for one log.
#[derive(Clone, Debug)]
pub struct LogClient {
    base: Url,
    http: reqwest::Client,
}

/// An HTTP client with provenix's defaults (keep-alive pool, timeouts).
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(64)
        .user_agent(concat!("provenix/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

impl LogClient {
    /// A client for the log at `base` (e.g. `http://127.0.0.1:8080`), with its own pool.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, ClientError> {
        Self::with_http(base, http_client(timeout))
    }

    /// A client sharing an existing HTTP pool.
    pub fn with_http(base: &str, http: reqwest::Client) -> Result<Self, ClientError> {
        let mut url = Url::parse(base).map_err(|_| ClientError::BadUrl(base.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(ClientError::BadUrl(base.to_owned()));
        }
        if !url.path().ends_with('/') {
            let p = format!("{}/", url.path());
            url.set_path(&p);
        }
        Ok(Self { base: url, http })
    }

    /// The log's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.base
            .join(path)
            .map_err(|_| ClientError::BadUrl(format!("{}{path}", self.base)))
    }

    async fn send(&self, req: reqwest::RequestBuilder, url: &Url) -> Result<Bytes, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status();
        let body = read_limited(resp, url).await?;
        if !status.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorResponse>(&body) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => (
                    String::new(),
                    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                ),
            };
            return Err(ClientError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        Ok(body)
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path)?;
        let body = self.send(self.http.get(url.clone()), &url).await?;
        decode(&body, &url)
    }

    /// `POST /v1/entries`: `envelopes` are JSON envelopes (e.g. canonical leaf bytes).
    pub async fn submit(
        &self,
        envelopes: &[Vec<u8>],
        wait_integrated: bool,
    ) -> Result<SubmitResponse, ClientError> {
        let mut body =
            Vec::with_capacity(envelopes.iter().map(|e| e.len() + 1).sum::<usize>() + 16);
        body.extend_from_slice(b"{\"entries\":[");
        for (i, e) in envelopes.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.extend_from_slice(b"]}");
        let url = self.url(if wait_integrated {
            "v1/entries?wait=integrated"
        } else {
            "v1/entries"
        })?;
        let req = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let bytes = self.send(req, &url).await?;
        decode(&bytes, &url)
    }

    /// `GET /checkpoint`: the signed note text (unverified).
    pub async fn checkpoint(&self) -> Result<String, ClientError> {
        let url = self.url("checkpoint")?;
        let body = self.send(self.http.get(url.clone()), &url).await?;
        String::from_utf8(body.to_vec()).map_err(|_| ClientError::Decode {
            url: url.to_string(),
            message: "checkpoint is not UTF-8".into(),
        })
    }

    /// `GET /v1/lookup/{key}`.
    pub async fn lookup(&self, key: &str) -> Result<LookupResponse, ClientError> {
        self.get_json(&format!("v1/lookup/{}", urlencode_path(key)))
            .await
    }

    /// `POST /v1/lookup` (at most 1000 keys).
    pub async fn lookup_batch(&self, keys: &[String]) -> Result<BatchLookupResponse, ClientError> {
        let url = self.url("v1/lookup")?;
        let req = self.http.post(url.clone()).json(&BatchLookupRequest {
            keys: keys.to_vec(),
        });
        let body = self.send(req, &url).await?;
        decode(&body, &url)
    }

    /// `GET /v1/entries/{index}`.
    pub async fn entry(&self, index: u64) -> Result<EntryResponse, ClientError> {
        self.get_json(&format!("v1/entries/{index}")).await
    }

    /// `GET /v1/proof/consistency?from=M&to=N`.
    pub async fn consistency(
        &self,
        from: u64,
        to: u64,
    ) -> Result<ConsistencyResponse, ClientError> {
        self.get_json(&format!("v1/proof/consistency?from={from}&to={to}"))
            .await
    }

    /// `GET /v1/builders`.
    pub async fn builders(&self) -> Result<BuildersResponse, ClientError> {
        self.get_json("v1/builders").await
    }

    /// A C2SP tile or entry bundle; `None` if the log does not have it (404).
    pub async fn tile(&self, t: &TilePath) -> Result<Option<Bytes>, ClientError> {
        let url = self.url(&t.to_string())?;
        match self.send(self.http.get(url.clone()), &url).await {
            Ok(b) => Ok(Some(b)),
            Err(ClientError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn decode<T: DeserializeOwned>(body: &[u8], url: &Url) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        url: url.to_string(),
        message: e.to_string(),
    })
}

async fn read_limited(resp: reqwest::Response, url: &Url) -> Result<Bytes, ClientError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(ClientError::Decode {
            url: url.to_string(),
            message: format!("response is over {MAX_RESPONSE_BYTES} bytes"),
        });
    }
    let mut out = bytes::BytesMut::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ClientError::Decode {
                url: url.to_string(),
                message: format!("response is over {MAX_RESPONSE_BYTES} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Percent-encodes the characters of a lookup key that are not safe in a path segment
/// (`!` and `:` are safe; nothing else outside [A-Za-z0-9._-] appears in a valid key).
fn urlencode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
