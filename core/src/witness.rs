//! Witnessing: C2SP `tlog-cosignature` (Ed25519, signature type 0x04) and the body of C2SP
//! `tlog-witness` `add-checkpoint` requests.
//!
//! A cosignature says: "as of this time, the largest consistent tree I have seen for this log
//! has this root". Clients that require k cosignatures on a checkpoint before believing it make
//! a split view (showing them a tree others never saw) need k colluding witnesses.
//!
//! Keys: the verifier key is `<name>+<hex id>+base64(0x04 ‖ pub)`, id =
//! the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x04 ‖ pub); provenix stores a cosigner's secret as
//! `PRIVATE+KEY+<name>+<hex id>+base64(0x04 ‖ seed)` (the note format with type 0x04).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// Signature type byte of Ed25519 cosignatures (tlog-cosignature v1).
pub const COSIGNATURE_ED25519: u8 = 0x04;
/// Most consistency-proof lines an `add-checkpoint` body may carry (tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;
/// Largest `add-checkpoint` body we parse.
pub const MAX_BODY: usize = 64 * 1024;

/// Why a key, cosignature or request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    #[error("malformed cosigner key (want NAME+HEXID+BASE64 with type 0x04)")]
    BadVerifierKey,
    #[error("malformed cosigner secret key (want PRIVATE+KEY+NAME+HEXID+BASE64 with type 0x04)")]
    BadSecretKey,
    #[error("cosigner name must be non-empty with no spaces or '+'")]
    BadName,
    #[error("malformed signed note")]
    MalformedNote,
    #[error("malformed add-checkpoint body: {0}")]
    MalformedRequest(&'static str),
}

fn key_id(name: &str, pubkey: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', COSIGNATURE_ED25519]);
    h.update(pubkey);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn valid_name(name: &str) -> bool {
    signed_note::is_key_name_valid(name)
}

/// The message a v1 cosignature signs: `cosignature/v1\ntime <ts>\n` ‖ note text.
pub fn cosigned_message(note_text: &[u8], timestamp: u64) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(note_text);
    m
}

/// A witness's signing key. `Debug` never shows the secret.
#[derive(Clone)]
pub struct CosignerKey {
    name: String,
    key: SigningKey,
    id: u32,
}

impl fmt::Debug for CosignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignerKey({})", self.verifier_key())
    }
}

impl CosignerKey {
    /// A fresh key.
    pub fn generate(name: &str) -> Result<Self, WitnessError> {
        Self::from_seed(name, SigningKey::generate(&mut rand_core::OsRng).to_bytes())
    }

    /// From a 32-byte seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, WitnessError> {
        if !valid_name(name) {
            return Err(WitnessError::BadName);
        }
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_owned(),
            key,
            id,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex id>+base64(0x04 ‖ seed)`.
    pub fn from_secret(s: &str) -> Result<Self, WitnessError> {
        let rest = s
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(WitnessError::BadSecretKey)?;
        let (name, rest) = rest.split_once('+').ok_or(WitnessError::BadSecretKey)?;
        let (id, b64) = rest.split_once('+').ok_or(WitnessError::BadSecretKey)?;
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| WitnessError::BadSecretKey)?;
        let (&alg, seed) = raw.split_first().ok_or(WitnessError::BadSecretKey)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| WitnessError::BadSecretKey)?;
        if alg != COSIGNATURE_ED25519 {
            return Err(WitnessError::BadSecretKey);
        }
        let k = Self::from_seed(name, seed)?;
        if format!("{:08x}", k.id) != id {
            return Err(WitnessError::BadSecretKey);
        }
        Ok(k)
    }

    /// The secret in its file format. Handle with care.
    pub fn secret_string(&self) -> String {
        let mut raw = vec![COSIGNATURE_ED25519];
        raw.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            STANDARD.encode(raw)
        )
    }

    /// The cosigner's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key string logs and clients configure.
    pub fn verifier_key(&self) -> String {
        let mut raw = vec![COSIGNATURE_ED25519];
        raw.extend_from_slice(self.key.verifying_key().as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, STANDARD.encode(raw))
    }

    /// A cosignature line (`— name base64(id ‖ timestamp ‖ sig)\n`) over a note's text.
    pub fn cosign(&self, note_text: &[u8], timestamp: u64) -> String {
        let sig = self.key.sign(&cosigned_message(note_text, timestamp));
        let mut blob = Vec::with_capacity(4 + 8 + 64);
        blob.extend_from_slice(&self.id.to_be_bytes());
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        format!("\u{2014} {} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// A witness's public key: checks its cosignatures.
#[derive(Clone, PartialEq, Eq)]
pub struct CosignerVerifier {
    name: String,
    key: VerifyingKey,
    id: u32,
    text: String,
}

impl fmt::Debug for CosignerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CosignerVerifier({})", self.text)
    }
}

impl fmt::Display for CosignerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for CosignerVerifier {
    type Err = WitnessError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (name, rest) = s.split_once('+').ok_or(WitnessError::BadVerifierKey)?;
        let (id, b64) = rest.split_once('+').ok_or(WitnessError::BadVerifierKey)?;
        if !valid_name(name) || id.len() != 8 {
            return Err(WitnessError::BadVerifierKey);
        }
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| WitnessError::BadVerifierKey)?;
        let (&alg, pubkey) = raw.split_first().ok_or(WitnessError::BadVerifierKey)?;
        let pubkey: [u8; 32] = pubkey
            .try_into()
            .map_err(|_| WitnessError::BadVerifierKey)?;
        if alg != COSIGNATURE_ED25519 {
            return Err(WitnessError::BadVerifierKey);
        }
        let key = VerifyingKey::from_bytes(&pubkey).map_err(|_| WitnessError::BadVerifierKey)?;
        let want = key_id(name, &pubkey);
        if u32::from_str_radix(id, 16).ok() != Some(want) {
            return Err(WitnessError::BadVerifierKey);
        }
        Ok(Self {
            name: name.to_owned(),
            key,
            id: want,
            text: s.to_owned(),
        })
    }
}

impl CosignerVerifier {
    /// The cosigner's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// Checks one cosignature's bytes (after the key id: timestamp ‖ signature) over
    /// `note_text`; returns the timestamp if valid.
    pub fn verify(&self, note_text: &[u8], sig: &[u8]) -> Option<u64> {
        let (ts, sig) = sig.split_first_chunk::<8>()?;
        let sig = Signature::from_slice(sig).ok()?;
        let ts = u64::from_be_bytes(*ts);
        if ts > i64::MAX as u64 {
            return None;
        }
        self.key
            .verify_strict(&cosigned_message(note_text, ts), &sig)
            .ok()
            .map(|()| ts)
    }
}

/// One signature line of a signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_id: u32,
    /// The signature bytes after the 4-byte key id.
    pub sig: Vec<u8>,
    /// The line as it appeared, with its newline.
    pub line: String,
}

/// Splits a signed note into its text (with final newline) and its signature lines.
pub fn split_note(note: &str) -> Result<(String, Vec<NoteSignature>), WitnessError> {
    let (text, sigs) = note
        .rsplit_once("\n\n")
        .ok_or(WitnessError::MalformedNote)?;
    let sigs = sigs.strip_suffix('\n').ok_or(WitnessError::MalformedNote)?;
    let mut out = Vec::new();
    for line in sigs.split('\n') {
        let s = signed_note::Signature::from_bytes(line.as_bytes())
            .map_err(|_| WitnessError::MalformedNote)?;
        out.push(NoteSignature {
            name: s.name().to_owned(),
            key_id: s.id(),
            sig: s.signature().to_vec(),
            line: format!("{line}\n"),
        });
    }
    Ok((format!("{text}\n"), out))
}

/// The witnesses (of `witnesses`) with a valid cosignature on `note`, each once, with the
/// timestamp of its cosignature.
pub fn valid_cosignatures(note: &str, witnesses: &[CosignerVerifier]) -> Vec<(String, u64)> {
    let Ok((text, sigs)) = split_note(note) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = Vec::new();
    for w in witnesses {
        if out.iter().any(|(n, _)| n == w.name()) {
            continue;
        }
        let found = sigs
            .iter()
            .filter(|s| s.name == w.name && s.key_id == w.id)
            .find_map(|s| w.verify(text.as_bytes(), &s.sig));
        if let Some(ts) = found {
            out.push((w.name.clone(), ts));
        }
    }
    out
}

/// Appends signature lines to a signed note, skipping lines already present.
pub fn add_signature_lines(note: &str, lines: &[String]) -> String {
    let mut out = note.to_owned();
    for l in lines {
        let l = if l.ends_with('\n') {
            l.clone()
        } else {
            format!("{l}\n")
        };
        if !out.contains(&l) {
            out.push_str(&l);
        }
    }
    out
}

/// A C2SP tlog-witness `add-checkpoint` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// Size of the latest checkpoint the client believes the witness cosigned (0: none).
    pub old_size: u64,
    /// Consistency proof from `old_size` to the checkpoint's size (empty when `old_size` is 0).
    pub proof: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: String,
}

impl AddCheckpoint {
    /// The request body.
    pub fn to_body(&self) -> String {
        let mut b = format!("old {}\n", self.old_size);
        for h in &self.proof {
            b.push_str(&h.to_base64());
            b.push('\n');
        }
        b.push('\n');
        b.push_str(&self.checkpoint);
        b
    }

    /// Parses a request body strictly.
    pub fn parse(body: &str) -> Result<Self, WitnessError> {
        if body.len() > MAX_BODY {
            return Err(WitnessError::MalformedRequest("body too large"));
        }
        let (head, checkpoint) = body
            .split_once("\n\n")
            .ok_or(WitnessError::MalformedRequest(
                "no empty line before the checkpoint",
            ))?;
        let mut lines = head.split('\n');
        let old = lines.next().and_then(|l| l.strip_prefix("old ")).ok_or(
            WitnessError::MalformedRequest("first line must be `old <size>`"),
        )?;
        if old.is_empty()
            || (old.len() > 1 && old.starts_with('0'))
            || !old.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(WitnessError::MalformedRequest(
                "old size must be a decimal without leading zeroes",
            ));
        }
        let old_size = old
            .parse()
            .map_err(|_| WitnessError::MalformedRequest("old size out of range"))?;
        let proof = lines
            .map(|l| {
                Hash::from_base64(l).map_err(|_| WitnessError::MalformedRequest("bad proof line"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if proof.len() > MAX_PROOF_LINES {
            return Err(WitnessError::MalformedRequest("more than 63 proof lines"));
        }
        Ok(Self {
            old_size,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::LogSigner;

    #[test]
    fn cosign_verify_round_trip() {
        let w = CosignerKey::generate("witness.example/w1").unwrap();
        let v: CosignerVerifier = w.verifier_key().parse().unwrap();
        let again = CosignerKey::from_secret(&w.secret_string()).unwrap();
        assert_eq!(again.verifier_key(), w.verifier_key());
        let log = LogSigner::generate("log.example").unwrap();
        let cp = log.sign(5, Hash::default()).unwrap();
        let (text, _) = split_note(cp.note()).unwrap();
        let line = w.cosign(text.as_bytes(), 1_767_139_200);
        let cosigned = add_signature_lines(cp.note(), &[line.clone(), line]);
        assert_eq!(cosigned.matches('\u{2014}').count(), 2);
        assert_eq!(
            valid_cosignatures(&cosigned, std::slice::from_ref(&v)),
            vec![("witness.example/w1".into(), 1_767_139_200)]
        );
        // The log's own verifier still accepts the cosigned note.
        let lv: crate::checkpoint::LogVerifier = log.verifier_key().parse().unwrap();
        assert_eq!(lv.verify(&cosigned).unwrap().size(), 5);
        // A cosignature over another checkpoint does not count.
        let other = log.sign(6, Hash::default()).unwrap();
        let moved = add_signature_lines(other.note(), &[w.cosign(text.as_bytes(), 1)]);
        assert!(valid_cosignatures(&moved, &[v]).is_empty());
        // Log keys are not cosigner keys and vice versa.
        assert!(log.verifier_key().parse::<CosignerVerifier>().is_err());
        assert!(w
            .verifier_key()
            .parse::<crate::checkpoint::LogVerifier>()
            .is_err());
    }

    #[test]
    fn add_checkpoint_bodies() {
        let req = AddCheckpoint {
            old_size: 10,
            proof: vec![Hash([1; 32]), Hash([2; 32])],
            checkpoint: "o\n12\nAAAA\n\n\u{2014} o abc\n".into(),
        };
        assert_eq!(AddCheckpoint::parse(&req.to_body()).unwrap(), req);
        for bad in [
            "old 1\n",
            "old 01\n\nx",
            "old x\n\nx",
            "new 1\n\nx",
            "old 1\nnotb64\n\nx",
            "old -1\n\nx",
        ] {
            assert!(AddCheckpoint::parse(bad).is_err(), "{bad:?}");
        }
        let many = format!(
            "old 1\n{}\nx",
            format!("{}\n", Hash::default().to_base64()).repeat(64)
        );
        assert!(AddCheckpoint::parse(&many).is_err());
    }
}
