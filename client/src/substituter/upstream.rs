//! The upstream binary caches: ordinary Nix caches (e.g. a `file://` cache served over HTTP)
//! holding the narinfos and NARs. Nothing they send is trusted: a narinfo is parsed strictly and
//! only used if its `StorePath` is the one asked for; a NAR is decompressed, hashed and counted
//! while it streams, and [`VerifiedNar`] never yields its last bytes unless the whole NAR matches
//! the agreed hash and size.

use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use provenix_core::nix::{NarHash, NarInfo, StorePathHash};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt as _, BufReader};
use url::Url;

/// Largest narinfo read from an upstream.
const MAX_NARINFO: usize = provenix_core::nix::MAX_NARINFO_BYTES;

/// Size of one read from a decompressing NAR stream.
const CHUNK: usize = 64 * 1024;

/// A narinfo as one upstream served it.
#[derive(Clone, Debug)]
pub struct UpstreamNarInfo {
    /// Index of the upstream in the configuration.
    pub upstream: usize,
    /// The parsed narinfo (untrusted until compared with the decision).
    pub narinfo: NarInfo,
}

/// The configured upstream caches.
#[derive(Clone, Debug)]
pub struct Upstreams {
    bases: Vec<Url>,
    http: reqwest::Client,
}

/// A stream of NAR bytes, each chunk checked; the last one is released only after the whole NAR
/// matched.
pub type VerifiedNar = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

impl Upstreams {
    /// Clients for `urls` (`http(s)://…`), tried in order.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self, String> {
        let bases = urls
            .iter()
            .map(|u| {
                let mut url = Url::parse(u).map_err(|e| format!("upstream {u:?}: {e}"))?;
                if !url.path().ends_with('/') {
                    let p = format!("{}/", url.path());
                    url.set_path(&p);
                }
                Ok(url)
            })
            .collect::<Result<Vec<_>, String>>()?;
        // No overall timeout: NARs may take long. Connecting and each narinfo are bounded.
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .pool_max_idle_per_host(64)
            .user_agent(concat!("provenix-substituter/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self { bases, http })
    }

    /// How many upstreams there are.
    pub fn len(&self) -> usize {
        self.bases.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.bases.is_empty()
    }

    /// The narinfo for `hash` from the first upstream at or after index `from` that has a valid
    /// one for that hash. `Ok(None)`: none has it; `Err`: none has it and some failed.
    pub async fn narinfo(
        &self,
        hash: &StorePathHash,
        from: usize,
        timeout: Duration,
    ) -> Result<Option<UpstreamNarInfo>, String> {
        let mut errors = Vec::new();
        for (i, base) in self.bases.iter().enumerate().skip(from) {
            match self.narinfo_from(base, hash, timeout).await {
                Ok(Some(narinfo)) => {
                    return Ok(Some(UpstreamNarInfo {
                        upstream: i,
                        narinfo,
                    }))
                }
                Ok(None) => {}
                Err(e) => errors.push(format!("{base}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(None)
        } else {
            Err(errors.join("; "))
        }
    }

    async fn narinfo_from(
        &self,
        base: &Url,
        hash: &StorePathHash,
        timeout: Duration,
    ) -> Result<Option<NarInfo>, String> {
        let url = base
            .join(&format!("{hash}.narinfo"))
            .map_err(|e| e.to_string())?;
        let fetch = async {
            let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
            match resp.status().as_u16() {
                200 => {}
                404 | 403 | 410 => return Ok(None),
                s => return Err(format!("HTTP {s}")),
            }
            if resp
                .content_length()
                .is_some_and(|n| n > MAX_NARINFO as u64)
            {
                return Err("narinfo too large".into());
            }
            let mut body = BytesMut::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                if body.len() + chunk.len() > MAX_NARINFO {
                    return Err("narinfo too large".into());
                }
                body.extend_from_slice(&chunk);
            }
            let ni = NarInfo::parse(&body).map_err(|e| format!("bad narinfo: {e}"))?;
            if &ni.store_path().hash() != hash {
                return Err(format!(
                    "narinfo for {hash} names another path, {}",
                    ni.store_path()
                ));
            }
            Ok(Some(ni))
        };
        tokio::time::timeout(timeout, fetch)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
    }

    /// Opens the NAR of `info`, decompressed, as a stream that checks it against `expected`
    /// (SHA-256 of the NAR) and `size`. Fails early for anything but a 200 from the same origin.
    pub async fn nar(
        &self,
        info: &UpstreamNarInfo,
        expected: NarHash,
        size: u64,
    ) -> Result<VerifiedNar, String> {
        let resp = self.nar_response(info).await?;
        let raw = tokio_util::io::StreamReader::new(resp.bytes_stream().map_err(io::Error::other));
        let reader = decompressor(info.narinfo.compression(), raw)?;
        Ok(verified(reader, expected, size))
    }

    /// The NAR file of `info` as the upstream stores it (compressed), read whole into memory:
    /// for small NARs, checked afterwards with [`check_nar_file`] off the async workers. Refuses
    /// a file of more than `max` bytes.
    pub async fn nar_file(&self, info: &UpstreamNarInfo, max: u64) -> Result<Bytes, String> {
        let mut resp = self.nar_response(info).await?;
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(format!("NAR file larger than {max} bytes"));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if (body.len() + chunk.len()) as u64 > max {
                return Err(format!("NAR file larger than {max} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// The 200 response for the NAR of `info`: same origin as its upstream, or an error.
    async fn nar_response(&self, info: &UpstreamNarInfo) -> Result<reqwest::Response, String> {
        let base = self
            .bases
            .get(info.upstream)
            .ok_or_else(|| "no such upstream".to_owned())?;
        let url = base
            .join(info.narinfo.url())
            .map_err(|e| format!("NAR URL {:?}: {e}", info.narinfo.url()))?;
        if !same_origin(base, &url) {
            return Err(format!(
                "NAR URL {url} is not on the upstream {base}: refused"
            ));
        }
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if resp.status().as_u16() != 200 {
            return Err(format!("{url}: HTTP {}", resp.status().as_u16()));
        }
        Ok(resp)
    }
}

/// Why a whole NAR of `count` bytes hashing to `got` is not the agreed one, if it is not (the
/// same words for a streamed and an in-memory NAR).
fn nar_mismatch(count: u64, got: NarHash, size: u64, expected: NarHash) -> Option<String> {
    (count != size || got != expected).then(|| {
        format!(
            "upstream NAR does not match: {count} bytes with hash {} (expected {size} bytes with hash {})",
            got.to_nix32_prefixed(),
            expected.to_nix32_prefixed()
        )
    })
}

fn too_long(size: u64) -> String {
    format!("upstream NAR is longer than the agreed {size} bytes")
}

fn unsupported(compression: &str) -> String {
    format!("unsupported upstream compression {compression:?}")
}

/// Decompresses a NAR file held in memory and checks it against the agreed hash and size: the
/// NAR's bytes if both match, else why not (the same reasons [`verified`] gives). CPU-bound
/// (decompression and SHA-256): run it on a blocking thread, not on the async workers, so that
/// serving narinfos is never queued behind it.
pub fn check_nar_file(
    compression: &str,
    file: &[u8],
    expected: NarHash,
    size: u64,
) -> Result<Bytes, String> {
    use std::io::Read as _;
    let reader: Box<dyn io::Read + '_> = match compression {
        "none" => Box::new(file),
        // xz's own CRC64 is skipped: the SHA-256 below checks every byte anyway.
        "xz" => Box::new(liblzma::bufread::XzDecoder::new_stream(
            file,
            liblzma::stream::Stream::new_stream_decoder(u64::MAX, liblzma::stream::IGNORE_CHECK)
                .map_err(|e| format!("upstream NAR: {e}"))?,
        )),
        "zstd" => Box::new(
            zstd::stream::read::Decoder::with_buffer(file)
                .map_err(|e| format!("upstream NAR: {e}"))?,
        ),
        "bzip2" => Box::new(bzip2::read::BzDecoder::new(file)),
        other => return Err(unsupported(other)),
    };
    let cap = usize::try_from(size).unwrap_or(usize::MAX).min(64 << 20);
    let mut out = Vec::with_capacity(cap);
    reader
        .take(size.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| format!("upstream NAR: {e}"))?;
    if out.len() as u64 > size {
        return Err(too_long(size));
    }
    let got = NarHash::from_bytes(Sha256::digest(&out).into());
    if let Some(why) = nar_mismatch(out.len() as u64, got, size, expected) {
        return Err(why);
    }
    Ok(Bytes::from(out))
}

/// A reader of the decompressed NAR.
pub fn decompressor<R: tokio::io::AsyncBufRead + Send + 'static>(
    compression: &str,
    raw: R,
) -> Result<Pin<Box<dyn AsyncRead + Send>>, String> {
    use async_compression::tokio::bufread::{BzDecoder, XzDecoder, ZstdDecoder};
    Ok(match compression {
        "none" => Box::pin(raw),
        "xz" => Box::pin(XzDecoder::new(raw)),
        "zstd" => Box::pin(ZstdDecoder::new(raw)),
        "bzip2" => Box::pin(BzDecoder::new(raw)),
        other => return Err(unsupported(other)),
    })
}

struct Verify {
    reader: BufReader<Pin<Box<dyn AsyncRead + Send>>>,
    hasher: Sha256,
    count: u64,
    expected: NarHash,
    size: u64,
    held: Option<Bytes>,
    done: bool,
}

/// Wraps a decompressed NAR reader: yields its bytes, holding the latest chunk back until the
/// next arrives; at the end, releases it only if the SHA-256 and the size match; otherwise (or
/// as soon as the size is exceeded) yields an error instead.
pub fn verified(
    reader: Pin<Box<dyn AsyncRead + Send>>,
    expected: NarHash,
    size: u64,
) -> VerifiedNar {
    let st = Verify {
        reader: BufReader::with_capacity(CHUNK, reader),
        hasher: Sha256::new(),
        count: 0,
        expected,
        size,
        held: None,
        done: false,
    };
    Box::pin(futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let mut buf = BytesMut::zeroed(CHUNK);
            let n = match st.reader.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    st.done = true;
                    return Some((Err(io::Error::other(format!("upstream NAR: {e}"))), st));
                }
            };
            if n == 0 {
                st.done = true;
                let got = NarHash::from_bytes(std::mem::take(&mut st.hasher).finalize().into());
                if let Some(why) = nar_mismatch(st.count, got, st.size, st.expected) {
                    return Some((Err(io::Error::other(why)), st));
                }
                return st.held.take().map(|b| (Ok(b), st));
            }
            buf.truncate(n);
            st.count += n as u64;
            if st.count > st.size {
                st.done = true;
                return Some((Err(io::Error::other(too_long(st.size))), st));
            }
            st.hasher.update(&buf);
            if let Some(prev) = st.held.replace(buf.freeze()) {
                return Some((Ok(prev), st));
            }
        }
    }))
}

/// Reads a whole verified NAR into memory (for NARs small enough to check before answering).
pub async fn collect(mut nar: VerifiedNar, size: u64) -> Result<Bytes, io::Error> {
    let mut out = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0).min(64 << 20));
    while let Some(chunk) = nar.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn nar_hash(data: &[u8]) -> NarHash {
        NarHash::from_bytes(Sha256::digest(data).into())
    }

    async fn run(data: &[u8], expected: NarHash, size: u64) -> (Vec<Bytes>, Option<String>) {
        let reader: Pin<Box<dyn AsyncRead + Send>> = Box::pin(std::io::Cursor::new(data.to_vec()));
        let mut s = verified(reader, expected, size);
        let mut ok = Vec::new();
        while let Some(c) = s.next().await {
            match c {
                Ok(b) => ok.push(b),
                Err(e) => return (ok, Some(e.to_string())),
            }
        }
        (ok, None)
    }

    #[tokio::test]
    async fn passes_matching_nars_and_withholds_the_tail_of_bad_ones() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (chunks, err) = run(&data, nar_hash(&data), data.len() as u64).await;
        assert_eq!(err, None);
        assert_eq!(chunks.concat(), data);

        // Wrong hash: everything but the last chunk went out, then an error.
        let mut bad = data.clone();
        *bad.last_mut().unwrap() ^= 1;
        let (chunks, err) = run(&bad, nar_hash(&data), data.len() as u64).await;
        assert!(err.unwrap().contains("does not match"));
        let sent: usize = chunks.iter().map(Bytes::len).sum();
        assert!(sent < data.len(), "the last chunk must be withheld");

        // Too long: stops as soon as the size is exceeded.
        let (_, err) = run(&data, nar_hash(&data), 1000).await;
        assert!(err.unwrap().contains("longer than the agreed 1000 bytes"));

        // Too short.
        let (_, err) = run(&data[..10], nar_hash(&data), data.len() as u64).await;
        assert!(err.unwrap().contains("does not match"));
    }

    #[tokio::test]
    async fn decompresses_what_nix_writes() {
        use async_compression::tokio::write::{XzEncoder, ZstdEncoder};
        use tokio::io::AsyncWriteExt as _;
        let data = b"nix-archive-1 pretend".repeat(1000);
        let mut xz = XzEncoder::new(Vec::new());
        xz.write_all(&data).await.unwrap();
        xz.shutdown().await.unwrap();
        let mut zst = ZstdEncoder::new(Vec::new());
        zst.write_all(&data).await.unwrap();
        zst.shutdown().await.unwrap();
        for (c, bytes) in [
            ("xz", xz.into_inner()),
            ("zstd", zst.into_inner()),
            ("none", data.clone()),
        ] {
            let r = decompressor(c, std::io::Cursor::new(bytes)).unwrap();
            let got = collect(
                verified(r, nar_hash(&data), data.len() as u64),
                data.len() as u64,
            )
            .await
            .unwrap();
            assert_eq!(&got[..], &data[..], "{c}");
        }
        assert!(decompressor("lz5", std::io::Cursor::new(vec![])).is_err());
    }

    #[test]
    fn a_nar_file_in_memory_is_decompressed_and_checked() {
        use std::io::Read as _;
        let data = b"nix-archive-1 pretend".repeat(1000);
        let (want, size) = (nar_hash(&data), data.len() as u64);
        let mut xz = Vec::new();
        liblzma::read::XzEncoder::new(&data[..], 6)
            .read_to_end(&mut xz)
            .unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        let mut bz = Vec::new();
        bzip2::read::BzEncoder::new(&data[..], bzip2::Compression::fast())
            .read_to_end(&mut bz)
            .unwrap();
        for (c, file) in [("xz", &xz), ("zstd", &zst), ("bzip2", &bz), ("none", &data)] {
            assert_eq!(
                &check_nar_file(c, file, want, size).unwrap()[..],
                &data[..],
                "{c}"
            );
            // Another NAR, a shorter or a longer one: refused, with the reason.
            let other = nar_hash(b"other");
            let e = check_nar_file(c, file, other, size).unwrap_err();
            assert!(e.starts_with("upstream NAR does not match"), "{c}: {e}");
            let e = check_nar_file(c, file, want, size + 1).unwrap_err();
            assert!(e.starts_with("upstream NAR does not match"), "{c}: {e}");
            let e = check_nar_file(c, file, want, size - 1).unwrap_err();
            assert!(e.starts_with("upstream NAR is longer"), "{c}: {e}");
        }
        // A damaged file: an error, not a panic.
        let mut bad = xz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        assert!(check_nar_file("xz", &bad, want, size).is_err());
        assert!(check_nar_file("xz", &xz[..xz.len() / 2], want, size).is_err());
        assert!(check_nar_file("lz5", &data, want, size)
            .unwrap_err()
            .contains("unsupported"));
    }
}
