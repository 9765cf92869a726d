//! Checking one tile of a log: its entry bundle against its level-0 hash tile, and every new
//! entry in it against the trust file (CPU work; runs on the blocking pool).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use provenix_core::checkpoint::LogVerifier;
use provenix_core::enrollment::{EnrollmentRecord, ENROLLMENT_PAYLOAD_TYPE};
use provenix_core::entry::{verify_each, Entry, Envelope, LookupKey};
use provenix_core::merkle::{leaf_hash, Hash, LeafIndex};
use provenix_core::nix::{NarHash, NixPublicKey, StorePath};
use provenix_core::tile::split_bundle;

/// A fetched tile: the level-0 hashes and the entry bundle of leaves `first ..`.
#[derive(Debug)]
pub struct RawTile {
    /// Tile number (leaves `tile·256 ..`).
    pub tile: u64,
    /// How many leaves it covers.
    pub width: usize,
    /// Leaves at the start already audited by an earlier run (only their hashes are checked).
    pub skip: usize,
    pub hashes: Bytes,
    pub bundle: Bytes,
}

/// One output an entry claims, under one lookup key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyClaim {
    /// The lookup key (store-path hash part, or CA realisation id).
    pub key: String,
    pub path: StorePath,
    pub nar: NarHash,
}

/// What one new entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Signed by a trust-file builder, well-formed: its claims.
    Valid {
        builder: String,
        claims: Vec<KeyClaim>,
    },
    /// Signed by (or naming) a builder the trust file does not list: not checked further.
    UnknownBuilder { builder: String },
    /// A TPM enrollment record the log wrote as registrar (DESIGN.md: `/v1/attest/*`), signed by
    /// the log's own key, whose binding (EK, AK, builder key, binding quote) checks out. Not a
    /// claim about any output.
    Enrollment { builder: String },
    /// Fails the schema, is not canonical, or its signature does not verify under the trust
    /// file's key for its builder.
    Invalid {
        builder: Option<String>,
        key: Option<String>,
        reason: String,
    },
}

/// How a tile contradicts itself: the log serves data that is not what it hashed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("entry bundle {tile} is malformed")]
    BadBundle { tile: u64 },
    #[error("entry bundle {tile} holds {found} entries, its checkpoint needs {want}")]
    BundleWidth {
        tile: u64,
        found: usize,
        want: usize,
    },
    #[error("hash tile 0/{tile} is {found} bytes, its checkpoint needs {want}")]
    TileWidth {
        tile: u64,
        found: usize,
        want: usize,
    },
    #[error("entry #{index}: the entry bundle hashes to {bundle} but hash tile 0 says {tile}")]
    LeafMismatch {
        index: LeafIndex,
        bundle: Hash,
        tile: Hash,
    },
}

/// A checked tile.
#[derive(Debug)]
pub struct CheckedTile {
    pub tile: u64,
    pub skip: usize,
    /// Every leaf hash of the tile (recomputed from the bundle, equal to the hash tile's).
    pub leaves: Vec<Hash>,
    /// The entries after `skip`, in order.
    pub outcomes: Vec<Outcome>,
}

/// Checks `raw`: every leaf of the bundle hashes to the hash tile's value; every entry after
/// `skip` is classified with `builders` (the trust file's keys by name).
pub fn check_tile(
    raw: &RawTile,
    builders: &HashMap<String, NixPublicKey>,
    log: &LogVerifier,
) -> Result<CheckedTile, TileError> {
    let tile = raw.tile;
    let first = tile * 256;
    if raw.hashes.len() != raw.width * 32 {
        return Err(TileError::TileWidth {
            tile,
            found: raw.hashes.len(),
            want: raw.width * 32,
        });
    }
    let entries = split_bundle(&raw.bundle).map_err(|_| TileError::BadBundle { tile })?;
    if entries.len() != raw.width {
        return Err(TileError::BundleWidth {
            tile,
            found: entries.len(),
            want: raw.width,
        });
    }
    let mut leaves = Vec::with_capacity(raw.width);
    for (i, (data, want)) in entries.iter().zip(raw.hashes.chunks_exact(32)).enumerate() {
        let h = leaf_hash(data);
        if h.0[..] != want[..] {
            return Err(TileError::LeafMismatch {
                index: first + i as u64,
                bundle: h,
                tile: Hash::from_slice(want).unwrap_or_default(),
            });
        }
        leaves.push(h);
    }
    let fresh = entries.get(raw.skip..).unwrap_or_default();
    Ok(CheckedTile {
        tile,
        skip: raw.skip,
        leaves,
        outcomes: classify(fresh, builders, log),
    })
}

/// Classifies entries (their signatures checked together: `verify_each`).
/// `log` is the log's own key, which signs the enrollment records it writes as registrar.
pub fn classify(
    entries: &[&[u8]],
    builders: &HashMap<String, NixPublicKey>,
    log: &LogVerifier,
) -> Vec<Outcome> {
    let mut out: Vec<Option<Outcome>> = vec![None; entries.len()];
    let mut signed: Vec<(usize, Entry, &NixPublicKey)> = Vec::new();
    for (i, data) in entries.iter().enumerate() {
        let entry = match Entry::parse(data) {
            Ok(e) => e,
            Err(e) => {
                let envelope = Envelope::from_json(data).ok();
                if envelope
                    .as_ref()
                    .is_some_and(|env| env.payload_type == ENROLLMENT_PAYLOAD_TYPE)
                {
                    out[i] = Some(enrollment(data, builders, log));
                    continue;
                }
                let builder =
                    envelope.and_then(|env| env.signatures.first().map(|s| s.keyid.clone()));
                out[i] = Some(Outcome::Invalid {
                    builder,
                    key: None,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let first_key = entry.keys().first().map(ToString::to_string);
        if entry.leaf_bytes() != *data {
            out[i] = Some(Outcome::Invalid {
                builder: Some(entry.keyid().to_owned()),
                key: first_key,
                reason: "leaf bytes are not the envelope's canonical form".into(),
            });
            continue;
        }
        match builders.get(entry.keyid()) {
            None => {
                out[i] = Some(Outcome::UnknownBuilder {
                    builder: entry.keyid().to_owned(),
                });
            }
            Some(key) => signed.push((i, entry, key)),
        }
    }
    let pairs: Vec<(&Entry, &NixPublicKey)> = signed.iter().map(|(_, e, k)| (e, *k)).collect();
    let good = verify_each(&pairs);
    for ((i, entry, _), good) in signed.iter().zip(good) {
        if !good {
            out[*i] = Some(Outcome::Invalid {
                builder: Some(entry.keyid().to_owned()),
                key: entry.keys().first().map(ToString::to_string),
                reason: format!(
                    "signature does not verify under the trust file's key for {}",
                    entry.keyid()
                ),
            });
            continue;
        }
        out[*i] = Some(claims_of(entry));
    }
    out.into_iter()
        .map(|o| {
            o.unwrap_or(Outcome::Invalid {
                builder: None,
                key: None,
                reason: "internal: unclassified".into(),
            })
        })
        .collect()
}

/// An enrollment record: canonical, signed by the log, its binding valid, and for the trust
/// file's key of its builder when the trust file lists that builder. (The EK certificate chain
/// is the substituter's check, against the roots of the builder's `tpm` table.)
fn enrollment(data: &[u8], builders: &HashMap<String, NixPublicKey>, log: &LogVerifier) -> Outcome {
    let record = match EnrollmentRecord::parse(data) {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Invalid {
                builder: None,
                key: None,
                reason: format!("enrollment record: {}: {e}", e.code()),
            }
        }
    };
    let builder = record.builder().to_owned();
    let invalid = |reason: String| Outcome::Invalid {
        builder: Some(builder.clone()),
        key: Some(format!("builder:{builder}")),
        reason,
    };
    if record.leaf_bytes() != data {
        return invalid(
            "enrollment record: leaf bytes are not the envelope's canonical form".into(),
        );
    }
    if let Err(e) = record.verify_log_signature(log) {
        return invalid(format!("enrollment record: {}: {e}", e.code()));
    }
    if let Some(key) = builders.get(&builder) {
        if record.builder_key() != key {
            return invalid(format!(
                "enrollment record for builder key {}, the trust file's key for {builder} is {key}",
                record.builder_key()
            ));
        }
    }
    if let Err(e) = record.check_binding() {
        return invalid(format!("enrollment record: {}: {e}", e.code()));
    }
    Outcome::Enrollment { builder }
}

/// The claims of a verified entry: each output path under its hash part, and each realisation
/// id under the output it names.
fn claims_of(entry: &Entry) -> Outcome {
    let builder = entry.keyid().to_owned();
    let mut by_path: BTreeMap<&StorePath, NarHash> = BTreeMap::new();
    for o in entry.outputs() {
        if by_path
            .insert(&o.path, o.nar_hash)
            .is_some_and(|h| h != o.nar_hash)
        {
            return Outcome::Invalid {
                builder: Some(builder),
                key: Some(o.path.hash().to_string()),
                reason: format!("claims two NAR hashes for {}", o.path),
            };
        }
    }
    let mut claims: Vec<KeyClaim> = entry
        .outputs()
        .iter()
        .map(|o| KeyClaim {
            key: o.path.hash().to_string(),
            path: o.path.clone(),
            nar: o.nar_hash,
        })
        .collect();
    claims.dedup_by(|a, b| a.key == b.key && a.nar == b.nar);
    for k in entry.keys() {
        let LookupKey::Realisation(id) = k else {
            continue;
        };
        let output = id.rsplit_once('!').map(|(_, o)| o);
        if let Some(o) = entry
            .outputs()
            .iter()
            .find(|o| o.output.as_deref() == output)
        {
            claims.push(KeyClaim {
                key: id.clone(),
                path: o.path.clone(),
                nar: o.nar_hash,
            });
        }
    }
    Outcome::Valid { builder, claims }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use provenix_core::entry::{NixBuild, Output};
    use provenix_core::nix::NixSecretKey;
    use provenix_core::tile::push_bundle_entry;

    fn log() -> LogVerifier {
        provenix_core::checkpoint::LogSigner::generate("log.example")
            .unwrap()
            .verifier_key()
            .parse()
            .unwrap()
    }

    fn key(name: &str) -> NixSecretKey {
        NixSecretKey::from_seed(name, [name.len() as u8; 32]).unwrap()
    }

    fn entry(k: &NixSecretKey, n: u8) -> Vec<u8> {
        NixBuild {
            builder: k.name().into(),
            outputs: vec![Output {
                name: "out".into(),
                path: format!("/nix/store/{}-p{n}", "1".repeat(32))
                    .parse()
                    .unwrap(),
                nar_hash: NarHash::from_bytes([n; 32]),
                nar_size: None,
                references: vec![],
            }],
            drv_output_ids: vec![format!("sha256:{}!out", "ab".repeat(32))],
            built_locally: true,
            ..Default::default()
        }
        .sign(k)
        .canonical_json()
    }

    fn raw(leaves: &[Vec<u8>], skip: usize) -> RawTile {
        let mut bundle = Vec::new();
        let mut hashes = Vec::new();
        for l in leaves {
            push_bundle_entry(&mut bundle, l).unwrap();
            hashes.extend_from_slice(&leaf_hash(l).0);
        }
        RawTile {
            tile: 3,
            width: leaves.len(),
            skip,
            hashes: hashes.into(),
            bundle: bundle.into(),
        }
    }

    #[test]
    fn classifies_every_kind_of_entry() {
        let (alpha, beta, mallory) = (key("alpha"), key("beta"), key("mallory"));
        let builders: HashMap<String, NixPublicKey> = [&alpha, &beta]
            .iter()
            .map(|k| (k.name().to_owned(), k.public()))
            .collect();
        let mut forged = provenix_core::entry::Envelope::from_json(&entry(&beta, 2)).unwrap();
        forged.signatures[0].sig[0] ^= 1;
        let reordered = {
            let v: serde_json::Value = serde_json::from_slice(&entry(&alpha, 4)).unwrap();
            format!(
                "{{\"signatures\":{},\"payloadType\":{},\"payload\":{}}}",
                v["signatures"], v["payloadType"], v["payload"]
            )
            .into_bytes()
        };
        let leaves = vec![
            entry(&alpha, 0),
            entry(&alpha, 1),
            forged.canonical_json(),
            entry(&mallory, 3),
            b"{\"not\":\"an envelope\"}".to_vec(),
            reordered,
        ];
        let t = check_tile(&raw(&leaves, 1), &builders, &log()).unwrap();
        assert_eq!(t.leaves.len(), 6);
        assert_eq!(t.outcomes.len(), 5);
        let Outcome::Valid { builder, claims } = &t.outcomes[0] else {
            panic!("{:?}", t.outcomes[0])
        };
        assert_eq!(builder, "alpha");
        assert_eq!(claims.len(), 2, "{claims:?}");
        assert_eq!(claims[0].key, "1".repeat(32));
        assert_eq!(claims[1].key, format!("sha256:{}!out", "ab".repeat(32)));
        assert!(
            matches!(&t.outcomes[1], Outcome::Invalid { builder: Some(b), reason, .. } if b == "beta" && reason.contains("signature")),
            "{:?}",
            t.outcomes[1]
        );
        assert_eq!(
            t.outcomes[2],
            Outcome::UnknownBuilder {
                builder: "mallory".into()
            }
        );
        assert!(
            matches!(&t.outcomes[3], Outcome::Invalid { builder: None, reason, .. } if reason.contains("malformed")),
            "{:?}",
            t.outcomes[3]
        );
        assert!(
            matches!(&t.outcomes[4], Outcome::Invalid { reason, .. } if reason.contains("canonical")),
            "{:?}",
            t.outcomes[4]
        );
    }

    #[test]
    fn a_bundle_that_does_not_match_its_hash_tile_is_refused() {
        let alpha = key("alpha");
        let leaves = vec![entry(&alpha, 0), entry(&alpha, 1)];
        let mut r = raw(&leaves, 0);
        let mut hashes = r.hashes.to_vec();
        hashes[40] ^= 1;
        r.hashes = hashes.into();
        assert!(matches!(
            check_tile(&r, &HashMap::new(), &log()),
            Err(TileError::LeafMismatch { index: 769, .. })
        ));
        let mut r = raw(&leaves, 0);
        r.width = 3;
        assert!(matches!(
            check_tile(&r, &HashMap::new(), &log()),
            Err(TileError::TileWidth { .. })
        ));
        let mut r = raw(&leaves, 0);
        r.bundle = r.bundle.slice(..10);
        assert_eq!(
            check_tile(&r, &HashMap::new(), &log()).unwrap_err(),
            TileError::BadBundle { tile: 3 }
        );
    }
}
