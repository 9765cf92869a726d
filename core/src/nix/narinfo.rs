//! The `.narinfo` file of Nix's binary-cache protocol: parse, format, fingerprint, sign.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::{is_valid_key_name, NarHash, NixPublicKey, NixSecretKey, StorePath};

/// Largest narinfo accepted (1 MiB: room for ~15,000 references).
pub const MAX_NARINFO_BYTES: usize = 1024 * 1024;

/// Most `Sig` lines accepted in one narinfo.
pub const MAX_SIGNATURES: usize = 32;

/// Longest `URL`, `Compression`, `System` or `CA` value accepted.
const MAX_VALUE_LEN: usize = 4096;

/// The compression Nix assumes when a narinfo has no `Compression` line.
pub const DEFAULT_COMPRESSION: &str = "bzip2";

/// Why a narinfo was refused. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NarInfoError {
    #[error("narinfo is {0} bytes; the limit is {MAX_NARINFO_BYTES}")]
    TooLarge(usize),
    #[error("narinfo is not UTF-8")]
    NotUtf8,
    #[error("narinfo does not end with a newline (Nix calls that corrupt)")]
    MissingFinalNewline,
    #[error("line {line}: expected `Field: value`")]
    MalformedLine { line: usize },
    #[error("line {line}: unknown field {field:?}")]
    UnknownField { line: usize, field: String },
    #[error("line {line}: field {field} appears twice")]
    DuplicateField { line: usize, field: &'static str },
    #[error("required field {0} is missing")]
    MissingField(&'static str),
    #[error("line {line}: {field}: {reason}")]
    InvalidValue {
        line: usize,
        field: &'static str,
        reason: &'static str,
    },
    #[error("more than {MAX_SIGNATURES} Sig lines")]
    TooManySignatures,
    /// A value given to a setter or constructor is not representable in a narinfo.
    #[error("{field}: {reason}")]
    InvalidArgument {
        field: &'static str,
        reason: &'static str,
    },
}

/// One `Sig:` line: `<key name>:<base64 of a 64-byte Ed25519 signature>`. Untrusted until
/// [`NarInfo::verify_signature`] says otherwise.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NarInfoSignature {
    key_name: String,
    sig: [u8; 64],
}

impl NarInfoSignature {
    /// The key name the signer claims (selects the public key; proves nothing by itself).
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The raw 64-byte signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.sig
    }
}

impl FromStr for NarInfoSignature {
    type Err = &'static str;
    /// Parses `name:base64`; the name must be a valid key name and the base64 canonical
    /// (padded, standard alphabet) for exactly 64 bytes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, b64) = s.split_once(':').ok_or("expected NAME:BASE64")?;
        if !is_valid_key_name(name) {
            return Err("key name must be 1-128 characters of [A-Za-z0-9._-]");
        }
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| "signature is not base64")?;
        let sig: [u8; 64] = bytes
            .try_into()
            .map_err(|_| "signature must be 64 bytes (Ed25519)")?;
        if STANDARD.encode(sig) != b64 {
            return Err("signature base64 is not canonical");
        }
        Ok(Self {
            key_name: name.to_owned(),
            sig,
        })
    }
}

impl fmt::Display for NarInfoSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, STANDARD.encode(self.sig))
    }
}

impl fmt::Debug for NarInfoSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarInfoSignature({self})")
    }
}

/// The string Nix signs for a store path:
/// `1;<store path>;sha256:<nix32 NAR hash>;<NAR size>;<full reference paths, sorted, comma-joined>`.
///
/// References are sorted as strings (Nix's `StorePathSet` order), which is *not* the order of
/// [`StorePath`]'s `Ord` (that compares the raw hash bytes).
pub fn fingerprint(
    store_path: &StorePath,
    nar_hash: &NarHash,
    nar_size: u64,
    references: &[StorePath],
) -> String {
    let mut refs: Vec<String> = references.iter().map(ToString::to_string).collect();
    refs.sort();
    refs.dedup();
    format!(
        "1;{store_path};{};{nar_size};{}",
        nar_hash.to_nix32_prefixed(),
        refs.join(",")
    )
}

/// A parsed `.narinfo`.
///
/// [`NarInfo::parse`] is strict where Nix is strict (`Key: value` lines, the final newline, a
/// non-zero `NarSize`, `StorePath` and `NarHash` present) and stricter where Nix is lax, because
/// a narinfo reaches provenix from an untrusted upstream: unknown fields, duplicated fields (other
/// than `Sig`), empty lines, control characters, malformed signatures and more than
/// [`MAX_SIGNATURES`] signatures are refused, and the whole file is limited to
/// [`MAX_NARINFO_BYTES`].
///
/// [`Display`](fmt::Display) writes the fields in the order Nix writes them (`StorePath`, `URL`,
/// `Compression`, `FileHash`, `FileSize`, `NarHash`, `NarSize`, `References`, `Deriver`, `System`,
/// `Sig`…, `CA`), with `NarHash`/`FileHash` as `sha256:<nix32>`, a `Compression` line always
/// present (Nix reads a missing one as bzip2) and the final newline Nix requires. A narinfo that
/// Nix wrote therefore formats back byte-for-byte; other producers' files may be normalised.
///
/// # What is authenticated
/// Nothing in a parsed narinfo is: every field is whatever the upstream sent. A [`Sig`
/// line](NarInfoSignature) authenticates only the [fingerprint](NarInfo::fingerprint)
/// (`StorePath`, `NarHash`, `NarSize`, `References`), and only once it verified under a key the
/// caller trusts. `URL`, `Compression`, `FileHash`, `FileSize`, `Deriver`, `System` and `CA` are
/// never covered by a signature.
///
/// # Never pass through a signature we did not check
/// Nix accepts a narinfo if *any* `Sig` verifies, and fails hard on a malformed `Sig` under a
/// trusted name. So a narinfo provenix serves carries only signatures it made or verified:
/// [`NarInfo::resign`] drops every signature and signs with the local key;
/// [`NarInfo::retain_verified_signatures`] keeps only the ones that verify; and every setter of
/// a fingerprint field drops all signatures, since they no longer cover the data.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NarInfo {
    store_path: StorePath,
    url: String,
    compression: String,
    file_hash: Option<NarHash>,
    file_size: Option<u64>,
    nar_hash: NarHash,
    nar_size: u64,
    references: Vec<StorePath>,
    deriver: Option<StorePath>,
    system: Option<String>,
    signatures: Vec<NarInfoSignature>,
    ca: Option<String>,
}

fn valid_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_VALUE_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

fn check_url(url: &str) -> Result<(), &'static str> {
    if valid_token(url) {
        Ok(())
    } else {
        Err("must be non-empty printable ASCII without spaces")
    }
}

fn check_compression(c: &str) -> Result<(), &'static str> {
    if !c.is_empty()
        && c.len() <= 32
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Ok(())
    } else {
        Err("must be a compression name such as xz, zstd, bzip2 or none")
    }
}

fn check_system(s: &str) -> Result<(), &'static str> {
    if valid_token(s) && s.len() <= 64 {
        Ok(())
    } else {
        Err("must be a system name such as x86_64-linux")
    }
}

fn check_ca(ca: &str) -> Result<(), &'static str> {
    if valid_token(ca) && (ca.starts_with("text:") || ca.starts_with("fixed:")) {
        Ok(())
    } else {
        Err("must be a content address `text:…` or `fixed:…`")
    }
}

fn check_nar_size(n: u64) -> Result<(), &'static str> {
    if n == 0 {
        Err("must be greater than zero")
    } else {
        Ok(())
    }
}

fn check_references(refs: &[StorePath]) -> Result<(), &'static str> {
    let mut seen: Vec<&StorePath> = refs.iter().collect();
    seen.sort();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        Err("lists a path twice")
    } else {
        Ok(())
    }
}

/// Decimal without sign or leading zeros (what Nix writes).
fn parse_u64(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err("must be a decimal number without leading zeros");
    }
    s.parse().map_err(|_| "number too large")
}

fn arg(field: &'static str) -> impl Fn(&'static str) -> NarInfoError {
    move |reason| NarInfoError::InvalidArgument { field, reason }
}

impl NarInfo {
    /// A narinfo with the required fields, `Compression: none`, no references and no signatures.
    pub fn new(
        store_path: StorePath,
        url: &str,
        nar_hash: NarHash,
        nar_size: u64,
    ) -> Result<Self, NarInfoError> {
        check_url(url).map_err(arg("URL"))?;
        check_nar_size(nar_size).map_err(arg("NarSize"))?;
        Ok(Self {
            store_path,
            url: url.to_owned(),
            compression: "none".to_owned(),
            file_hash: None,
            file_size: None,
            nar_hash,
            nar_size,
            references: Vec::new(),
            deriver: None,
            system: None,
            signatures: Vec::new(),
            ca: None,
        })
    }

    /// Parses a narinfo (see [`NarInfo`] for the rules).
    pub fn parse(input: &[u8]) -> Result<Self, NarInfoError> {
        if input.len() > MAX_NARINFO_BYTES {
            return Err(NarInfoError::TooLarge(input.len()));
        }
        let text = std::str::from_utf8(input).map_err(|_| NarInfoError::NotUtf8)?;
        let body = text
            .strip_suffix('\n')
            .ok_or(NarInfoError::MissingFinalNewline)?;

        let mut store_path = None;
        let mut url = None;
        let mut compression = None;
        let mut file_hash = None;
        let mut file_size = None;
        let mut nar_hash = None;
        let mut nar_size = None;
        let mut references = None;
        let mut deriver: Option<Option<StorePath>> = None;
        let mut system = None;
        let mut signatures: Vec<NarInfoSignature> = Vec::new();
        let mut ca = None;

        for (i, raw) in body.split('\n').enumerate() {
            let line = i + 1;
            let (name, value) = raw
                .split_once(": ")
                .ok_or(NarInfoError::MalformedLine { line })?;
            if name.is_empty() || value.bytes().any(|b| b.is_ascii_control()) {
                return Err(NarInfoError::MalformedLine { line });
            }
            let invalid = |field: &'static str| {
                move |reason: &'static str| NarInfoError::InvalidValue {
                    line,
                    field,
                    reason,
                }
            };
            macro_rules! once {
                ($slot:ident, $field:literal, $value:expr) => {{
                    if $slot.is_some() {
                        return Err(NarInfoError::DuplicateField {
                            line,
                            field: $field,
                        });
                    }
                    $slot = Some($value);
                }};
            }
            match name {
                "StorePath" => once!(
                    store_path,
                    "StorePath",
                    value
                        .parse::<StorePath>()
                        .map_err(|_| invalid("StorePath")("not a store path"))?
                ),
                "URL" => once!(url, "URL", {
                    check_url(value).map_err(invalid("URL"))?;
                    value.to_owned()
                }),
                "Compression" => once!(compression, "Compression", {
                    check_compression(value).map_err(invalid("Compression"))?;
                    value.to_owned()
                }),
                "FileHash" => once!(
                    file_hash,
                    "FileHash",
                    value
                        .parse::<NarHash>()
                        .map_err(|_| invalid("FileHash")("must be a SHA-256 hash"))?
                ),
                "FileSize" => once!(
                    file_size,
                    "FileSize",
                    parse_u64(value).map_err(invalid("FileSize"))?
                ),
                "NarHash" => once!(
                    nar_hash,
                    "NarHash",
                    value
                        .parse::<NarHash>()
                        .map_err(|_| invalid("NarHash")("must be a SHA-256 hash"))?
                ),
                "NarSize" => once!(nar_size, "NarSize", {
                    let n = parse_u64(value).map_err(invalid("NarSize"))?;
                    check_nar_size(n).map_err(invalid("NarSize"))?;
                    n
                }),
                "References" => once!(references, "References", {
                    let mut refs = Vec::new();
                    if !value.is_empty() {
                        for r in value.split(' ') {
                            refs.push(StorePath::from_basename(r).map_err(|_| {
                                invalid("References")(
                                    "not a space-separated list of store path basenames",
                                )
                            })?);
                        }
                    }
                    check_references(&refs).map_err(invalid("References"))?;
                    refs
                }),
                "Deriver" => once!(deriver, "Deriver", {
                    if value == "unknown-deriver" {
                        None
                    } else {
                        Some(
                            StorePath::from_basename(value)
                                .map_err(|_| invalid("Deriver")("not a store path basename"))?,
                        )
                    }
                }),
                "System" => once!(system, "System", {
                    check_system(value).map_err(invalid("System"))?;
                    value.to_owned()
                }),
                "CA" => once!(ca, "CA", {
                    check_ca(value).map_err(invalid("CA"))?;
                    value.to_owned()
                }),
                "Sig" => {
                    if signatures.len() == MAX_SIGNATURES {
                        return Err(NarInfoError::TooManySignatures);
                    }
                    let sig: NarInfoSignature = value.parse().map_err(invalid("Sig"))?;
                    if signatures.contains(&sig) {
                        return Err(NarInfoError::DuplicateField { line, field: "Sig" });
                    }
                    signatures.push(sig);
                }
                other => {
                    return Err(NarInfoError::UnknownField {
                        line,
                        field: other.chars().take(64).collect(),
                    })
                }
            }
        }

        let url: String = url.ok_or(NarInfoError::MissingField("URL"))?;
        Ok(Self {
            store_path: store_path.ok_or(NarInfoError::MissingField("StorePath"))?,
            url,
            compression: compression.unwrap_or_else(|| DEFAULT_COMPRESSION.to_owned()),
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or(NarInfoError::MissingField("NarHash"))?,
            nar_size: nar_size.ok_or(NarInfoError::MissingField("NarSize"))?,
            references: references.unwrap_or_default(),
            deriver: deriver.flatten(),
            system,
            signatures,
            ca,
        })
    }

    /// The store path this narinfo describes (a client must check it is the one it asked for).
    pub fn store_path(&self) -> &StorePath {
        &self.store_path
    }

    /// Where the (compressed) NAR is, relative to the cache root or absolute.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The NAR's compression (`bzip2` when the file had no `Compression` line, as Nix reads it).
    pub fn compression(&self) -> &str {
        &self.compression
    }

    /// SHA-256 of the compressed file. Nix does not check it on download.
    pub fn file_hash(&self) -> Option<&NarHash> {
        self.file_hash.as_ref()
    }

    /// Size of the compressed file.
    pub fn file_size(&self) -> Option<u64> {
        self.file_size
    }

    /// SHA-256 of the uncompressed NAR (signed; Nix checks it after download).
    pub fn nar_hash(&self) -> &NarHash {
        &self.nar_hash
    }

    /// Size of the uncompressed NAR (signed; Nix checks it after download).
    pub fn nar_size(&self) -> u64 {
        self.nar_size
    }

    /// The store paths this one refers to, in file order (signed).
    pub fn references(&self) -> &[StorePath] {
        &self.references
    }

    /// The derivation that produced the path (unsigned metadata; `unknown-deriver` reads as none).
    pub fn deriver(&self) -> Option<&StorePath> {
        self.deriver.as_ref()
    }

    /// The `System:` field older Nix versions wrote (unsigned metadata).
    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// The content address (`text:…`/`fixed:…`); unsigned, Nix recomputes it from the path.
    pub fn ca(&self) -> Option<&str> {
        self.ca.as_deref()
    }

    /// The `Sig` lines as given: unverified.
    pub fn signatures(&self) -> &[NarInfoSignature] {
        &self.signatures
    }

    /// The string Nix signs for this path (see [`fingerprint`]).
    pub fn fingerprint(&self) -> String {
        fingerprint(
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Whether `sig` verifies over this narinfo's fingerprint under `key` (names must match).
    pub fn verify_signature(&self, sig: &NarInfoSignature, key: &NixPublicKey) -> bool {
        sig.key_name == key.name() && key.verify(self.fingerprint().as_bytes(), &sig.sig)
    }

    /// Names of the `keys` with at least one valid signature on this narinfo.
    pub fn verified_signers<'k>(&self, keys: &'k [NixPublicKey]) -> Vec<&'k str> {
        let fp = self.fingerprint();
        keys.iter()
            .filter(|k| {
                self.signatures
                    .iter()
                    .any(|s| s.key_name == k.name() && k.verify(fp.as_bytes(), &s.sig))
            })
            .map(NixPublicKey::name)
            .collect()
    }

    /// Drops every signature that does not verify under one of `keys`; returns how many remain.
    pub fn retain_verified_signatures(&mut self, keys: &[NixPublicKey]) -> usize {
        let fp = self.fingerprint();
        self.signatures.retain(|s| {
            keys.iter()
                .any(|k| s.key_name == k.name() && k.verify(fp.as_bytes(), &s.sig))
        });
        self.signatures.len()
    }

    /// Drops every signature.
    pub fn clear_signatures(&mut self) {
        self.signatures.clear();
    }

    /// Adds a signature by `key` over the current fingerprint, replacing any earlier signature
    /// under the same key name. Signatures stay sorted as Nix keeps them.
    pub fn sign(&mut self, key: &NixSecretKey) {
        let sig = key.sign(self.fingerprint().as_bytes());
        self.signatures.retain(|s| s.key_name != key.name());
        self.signatures.push(NarInfoSignature {
            key_name: key.name().to_owned(),
            sig,
        });
        self.signatures.sort_by_key(ToString::to_string);
    }

    /// Drops every signature and signs with `key` alone: what a proxy serving its own decision does.
    pub fn resign(&mut self, key: &NixSecretKey) {
        self.clear_signatures();
        self.sign(key);
    }

    /// Sets the NAR hash. Drops all signatures (they covered the old value).
    pub fn set_nar_hash(&mut self, nar_hash: NarHash) {
        self.nar_hash = nar_hash;
        self.clear_signatures();
    }

    /// Sets the NAR size (non-zero). Drops all signatures.
    pub fn set_nar_size(&mut self, nar_size: u64) -> Result<(), NarInfoError> {
        check_nar_size(nar_size).map_err(arg("NarSize"))?;
        self.nar_size = nar_size;
        self.clear_signatures();
        Ok(())
    }

    /// Sets the references (no duplicates). Drops all signatures.
    pub fn set_references(&mut self, references: Vec<StorePath>) -> Result<(), NarInfoError> {
        check_references(&references).map_err(arg("References"))?;
        self.references = references;
        self.clear_signatures();
        Ok(())
    }

    /// Sets the store path. Drops all signatures.
    pub fn set_store_path(&mut self, store_path: StorePath) {
        self.store_path = store_path;
        self.clear_signatures();
    }

    /// Sets the URL (unsigned; signatures stay valid).
    pub fn set_url(&mut self, url: &str) -> Result<(), NarInfoError> {
        check_url(url).map_err(arg("URL"))?;
        self.url = url.to_owned();
        Ok(())
    }

    /// Sets the compression name (unsigned).
    pub fn set_compression(&mut self, compression: &str) -> Result<(), NarInfoError> {
        check_compression(compression).map_err(arg("Compression"))?;
        self.compression = compression.to_owned();
        Ok(())
    }

    /// Sets or clears `FileHash` and `FileSize` (unsigned).
    pub fn set_file(&mut self, file: Option<(NarHash, u64)>) {
        self.file_hash = file.map(|f| f.0);
        self.file_size = file.map(|f| f.1);
    }

    /// Sets or clears the deriver (unsigned).
    pub fn set_deriver(&mut self, deriver: Option<StorePath>) {
        self.deriver = deriver;
    }

    /// Sets or clears `System` (unsigned).
    pub fn set_system(&mut self, system: Option<&str>) -> Result<(), NarInfoError> {
        if let Some(s) = system {
            check_system(s).map_err(arg("System"))?;
        }
        self.system = system.map(str::to_owned);
        Ok(())
    }

    /// Sets or clears the content address (unsigned).
    pub fn set_ca(&mut self, ca: Option<&str>) -> Result<(), NarInfoError> {
        if let Some(c) = ca {
            check_ca(c).map_err(arg("CA"))?;
        }
        self.ca = ca.map(str::to_owned);
        Ok(())
    }
}

impl FromStr for NarInfo {
    type Err = NarInfoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s.as_bytes())
    }
}

impl fmt::Display for NarInfo {
    /// The narinfo text, in Nix's field order, ending in a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "StorePath: {}", self.store_path)?;
        writeln!(f, "URL: {}", self.url)?;
        writeln!(f, "Compression: {}", self.compression)?;
        if let Some(h) = &self.file_hash {
            writeln!(f, "FileHash: {}", h.to_nix32_prefixed())?;
        }
        if let Some(s) = self.file_size {
            writeln!(f, "FileSize: {s}")?;
        }
        writeln!(f, "NarHash: {}", self.nar_hash.to_nix32_prefixed())?;
        writeln!(f, "NarSize: {}", self.nar_size)?;
        f.write_str("References: ")?;
        for (i, r) in self.references.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}-{}", r.hash(), r.name())?;
        }
        f.write_str("\n")?;
        if let Some(d) = &self.deriver {
            writeln!(f, "Deriver: {}-{}", d.hash(), d.name())?;
        }
        if let Some(s) = &self.system {
            writeln!(f, "System: {s}")?;
        }
        for s in &self.signatures {
            writeln!(f, "Sig: {s}")?;
        }
        if let Some(ca) = &self.ca {
            writeln!(f, "CA: {ca}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAF: &str = "StorePath: /nix/store/dv92pw6pqlxlm5apbiaqmd7qmbs9x9db-provenix-fixture-leaf
URL: nar/12w77wliagban4ik8d820sqkdl3vzknaqh925faczgn4kpnd20bm.nar.xz
Compression: xz
FileHash: sha256:12w77wliagban4ik8d820sqkdl3vzknaqh925faczgn4kpnd20bm
FileSize: 128
NarHash: sha256:0l1v2mjy9ivhn9njfz2szzh7whr0vj02cysj0xhng9mdi3zfcnpa
NarSize: 120
References: 
Deriver: z2p5cna76q0nfii59x4khggxxlxyxnyq-provenix-fixture-leaf.drv
Sig: provenix-fixture-1:uC5XuB8R0VHi9M2QDYyVpV6Is9GAfX63iAC2suUhVCOF2eaE3MlameZbUSjdseH67EJ8G4Z8dVXgNQPqdPmfBQ==
";

    fn err(s: &str) -> NarInfoError {
        s.parse::<NarInfo>().unwrap_err()
    }

    #[test]
    fn round_trips_and_exposes_fields() {
        let n: NarInfo = LEAF.parse().unwrap();
        assert_eq!(n.to_string(), LEAF);
        assert_eq!(n.compression(), "xz");
        assert_eq!(n.nar_size(), 120);
        assert_eq!(n.file_size(), Some(128));
        assert!(n.references().is_empty());
        assert_eq!(
            n.fingerprint(),
            "1;/nix/store/dv92pw6pqlxlm5apbiaqmd7qmbs9x9db-provenix-fixture-leaf;sha256:0l1v2mjy9ivhn9njfz2szzh7whr0vj02cysj0xhng9mdi3zfcnpa;120;"
        );
    }

    #[test]
    fn refuses_malformed_files() {
        use NarInfoError::*;
        let no_nl = LEAF.trim_end();
        assert_eq!(err(no_nl), MissingFinalNewline);
        assert_eq!(err(""), MissingFinalNewline);
        assert_eq!(err("\n"), MalformedLine { line: 1 });
        assert_eq!(
            err(&LEAF.replace("URL: ", "URL:")),
            MalformedLine { line: 2 }
        );
        assert_eq!(err(&format!("{LEAF}\n")), MalformedLine { line: 11 });
        assert_eq!(
            err(&LEAF.replace("Compression: xz\n", "Compression: xz\r\n")),
            MalformedLine { line: 3 }
        );
        assert_eq!(
            err(&format!("{LEAF}Foo: bar\n")),
            UnknownField {
                line: 11,
                field: "Foo".into()
            }
        );
        assert_eq!(
            err(&format!("{LEAF}NarSize: 120\n")),
            DuplicateField {
                line: 11,
                field: "NarSize"
            }
        );
        let sig_line = LEAF.lines().nth(9).unwrap();
        assert_eq!(
            err(&format!("{LEAF}{sig_line}\n")),
            DuplicateField {
                line: 11,
                field: "Sig"
            }
        );
        assert_eq!(
            err(&LEAF.replace("NarSize: 120\n", "")),
            MissingField("NarSize")
        );
        assert_eq!(
            err(&LEAF.replace("NarSize: 120", "NarSize: 0")),
            InvalidValue {
                line: 7,
                field: "NarSize",
                reason: "must be greater than zero"
            }
        );
        assert_eq!(
            err(&LEAF.replace("NarSize: 120", "NarSize: 0120")),
            InvalidValue {
                line: 7,
                field: "NarSize",
                reason: "must be a decimal number without leading zeros"
            }
        );
        assert_eq!(
            err(&LEAF.replace("NarHash: sha256:0", "NarHash: md5:0")),
            InvalidValue {
                line: 6,
                field: "NarHash",
                reason: "must be a SHA-256 hash"
            }
        );
        assert_eq!(
            err(&LEAF.replace("References: ", "References:  ")),
            InvalidValue {
                line: 8,
                field: "References",
                reason: "not a space-separated list of store path basenames"
            }
        );
        assert_eq!(
            err(&LEAF.replace("==\n", "=\n")),
            InvalidValue {
                line: 10,
                field: "Sig",
                reason: "signature is not base64"
            }
        );
        assert_eq!(
            err(&LEAF.replace("BQ==\n", "\n")),
            InvalidValue {
                line: 10,
                field: "Sig",
                reason: "signature must be 64 bytes (Ed25519)"
            }
        );
        assert_eq!(
            err(&"a".repeat(MAX_NARINFO_BYTES + 1)),
            TooLarge(MAX_NARINFO_BYTES + 1)
        );
        assert_eq!(NarInfo::parse(b"StorePath: \xff\n").unwrap_err(), NotUtf8);
    }

    #[test]
    fn caps_signatures() {
        let key = NixSecretKey::from_seed("k", [7; 32]).unwrap();
        let sig = NarInfoSignature {
            key_name: "k".into(),
            sig: key.sign(b"x"),
        };
        let mut text = LEAF.to_owned();
        for i in 0..MAX_SIGNATURES {
            let s = NarInfoSignature {
                key_name: format!("k{i}"),
                ..sig.clone()
            };
            text.push_str(&format!("Sig: {s}\n"));
        }
        assert_eq!(err(&text), NarInfoError::TooManySignatures);
    }

    #[test]
    fn defaults_and_normalisation() {
        let text = LEAF.replace("Compression: xz\n", "").replace(
            "Deriver: z2p5cna76q0nfii59x4khggxxlxyxnyq-provenix-fixture-leaf.drv",
            "Deriver: unknown-deriver",
        );
        let n: NarInfo = text.parse().unwrap();
        assert_eq!(n.compression(), DEFAULT_COMPRESSION);
        assert_eq!(n.deriver(), None);
        // SRI NarHash parses and is written back as nix32.
        let sri = LEAF.replace(
            "NarHash: sha256:0l1v2mjy9ivhn9njfz2szzh7whr0vj02cysj0xhng9mdi3zfcnpa",
            &format!("NarHash: {}", n.nar_hash().to_sri()),
        );
        assert_eq!(sri.parse::<NarInfo>().unwrap().to_string(), LEAF);
    }

    #[test]
    fn fingerprint_sorts_references_as_strings() {
        // Byte order of the hash part differs from nixbase32 string order for these two.
        let a: StorePath = "/nix/store/0000000000000000000000000000000z-a"
            .parse()
            .unwrap();
        let b: StorePath = "/nix/store/10000000000000000000000000000000-b"
            .parse()
            .unwrap();
        assert!(
            b < a,
            "StorePath's Ord must differ from string order for this test"
        );
        let h = NarHash::from_bytes([0; 32]);
        let fp = fingerprint(&a, &h, 1, &[b.clone(), a.clone()]);
        assert!(fp.ends_with(&format!(";1;{a},{b}")), "{fp}");
    }

    #[test]
    fn setters_drop_signatures_that_no_longer_cover_the_data() {
        let key = NixSecretKey::from_seed("local-1", [9; 32]).unwrap();
        let mut n: NarInfo = LEAF.parse().unwrap();
        n.resign(&key);
        assert_eq!(n.signatures().len(), 1);
        assert_eq!(n.verified_signers(&[key.public()]), vec!["local-1"]);
        n.set_url("nar/x.nar").unwrap();
        n.set_compression("none").unwrap();
        assert_eq!(n.signatures().len(), 1, "URL is not signed");
        n.set_nar_hash(NarHash::from_bytes([1; 32]));
        assert!(n.signatures().is_empty());
        n.sign(&key);
        n.set_nar_size(5).unwrap();
        assert!(n.signatures().is_empty());
        n.sign(&key);
        n.set_references(vec![n.store_path().clone()]).unwrap();
        assert!(n.signatures().is_empty());
        assert_eq!(
            n.set_nar_size(0).unwrap_err(),
            NarInfoError::InvalidArgument {
                field: "NarSize",
                reason: "must be greater than zero"
            }
        );
        let p = n.store_path().clone();
        assert_eq!(
            n.set_references(vec![p.clone(), p]).unwrap_err(),
            NarInfoError::InvalidArgument {
                field: "References",
                reason: "lists a path twice"
            }
        );
        assert!(n.set_url("has space").is_err());
    }

    proptest::proptest! {
        /// Mutated real narinfo: never a panic, and whatever parses formats to a fixed point.
        #[test]
        fn mutations_never_panic_and_reparse(
            edits in proptest::collection::vec((0..LEAF.len(), 0u8..=255), 1..4),
            cut in LEAF.len() - 40..LEAF.len() + 40,
        ) {
            let mut bytes = LEAF.as_bytes().to_vec();
            bytes.truncate(cut);
            for (at, b) in edits {
                if let Some(x) = bytes.get_mut(at) {
                    *x = b;
                }
            }
            if let Ok(n) = NarInfo::parse(&bytes) {
                let text = n.to_string();
                let again: NarInfo = text.parse().unwrap();
                proptest::prop_assert_eq!(&again, &n);
                proptest::prop_assert_eq!(again.to_string(), text);
            }
        }
    }
}
