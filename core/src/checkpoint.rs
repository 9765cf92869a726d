//! C2SP `tlog-checkpoint` in a C2SP `signed-note`, signed with the log's Ed25519 key.
//!
//! - Log secret key: `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 ‖ seed)>` (Go's note format).
//! - Verifier key: `<name>+<hex id>+<base64(0x01 ‖ pub)>`, id = the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ pub).
//! - The checkpoint origin is the key name: a note is accepted only if its origin line equals the
//!   verifier's name, so a checkpoint of one log can never pass for another's.

use std::fmt;

use signed_note::{
    Note, NoteError, Signer as _, StandardSigner, StandardVerifier, Verifier as _, VerifierList,
};

use crate::merkle::{Hash, TreeSize};

/// Why a checkpoint or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed signed note")]
    MalformedNote,
    #[error("malformed checkpoint body (want origin, decimal size, base64 root)")]
    MalformedCheckpoint,
    #[error("no signature by the log key {0}")]
    NotSignedByLog(String),
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    #[error("checkpoint origin {found:?} is not the log's name {expected:?}")]
    OriginMismatch { expected: String, found: String },
    #[error("malformed log verifier key (want NAME+HEXID+BASE64)")]
    BadVerifierKey,
    #[error("malformed log secret key (want PRIVATE+KEY+NAME+HEXID+BASE64)")]
    BadSecretKey,
    #[error("log name must be non-empty with no spaces or '+'")]
    BadName,
}

/// A tree head: origin, size and root hash (plus optional extension lines, kept verbatim).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Checkpoint {
    pub origin: String,
    pub size: TreeSize,
    pub root: Hash,
    /// Zero or more non-empty lines, each ending in `\n`.
    pub extension: String,
}

impl Checkpoint {
    /// A checkpoint with no extension lines.
    pub fn new(origin: &str, size: TreeSize, root: Hash) -> Self {
        Self {
            origin: origin.to_owned(),
            size,
            root,
            extension: String::new(),
        }
    }

    /// The note text: `origin\nsize\nbase64(root)\n` then the extension lines.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.origin,
            self.size,
            self.root.to_base64(),
            self.extension
        )
    }

    /// Parses note text strictly (decimal size without leading zeros, 32-byte root).
    pub fn from_text(text: &[u8]) -> Result<Self, CheckpointError> {
        let cp = tlog_tiles::Checkpoint::from_bytes(text)
            .map_err(|_| CheckpointError::MalformedCheckpoint)?;
        Ok(Self {
            origin: cp.origin().to_owned(),
            size: cp.size(),
            root: Hash(cp.hash().0),
            extension: cp.extension().to_owned(),
        })
    }
}

/// A checkpoint as a log served it: the full signed-note text, and what it says.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    note: String,
    checkpoint: Checkpoint,
}

impl SignedCheckpoint {
    /// The checkpoint it carries.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The whole signed note, exactly as signed (served at `/checkpoint`).
    pub fn note(&self) -> &str {
        &self.note
    }

    /// Tree size.
    pub fn size(&self) -> TreeSize {
        self.checkpoint.size
    }

    /// Root hash.
    pub fn root(&self) -> &Hash {
        &self.checkpoint.root
    }
}

impl fmt::Debug for SignedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SignedCheckpoint({} size={} root={})",
            self.checkpoint.origin, self.checkpoint.size, self.checkpoint.root
        )
    }
}

fn valid_name(name: &str) -> bool {
    signed_note::is_key_name_valid(name)
}

/// Whether `name` is a valid log (note key) name: a checkpoint origin.
pub fn is_valid_log_name(name: &str) -> bool {
    valid_name(name)
}

/// The log's signing key. `Debug` never shows the secret.
#[derive(Clone)]
pub struct LogSigner {
    signer: StandardSigner,
    secret: String,
    verifier_key: String,
}

impl fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogSigner({})", self.verifier_key)
    }
}

impl LogSigner {
    /// A fresh key named `name` (the log's origin).
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        if !valid_name(name) {
            return Err(CheckpointError::BadName);
        }
        let (skey, _vkey) = signed_note::generate_key(&mut rand_core::OsRng, name);
        Self::from_secret(&skey)
    }

    /// From the secret key string (as stored in the data dir's `log.key`).
    pub fn from_secret(skey: &str) -> Result<Self, CheckpointError> {
        let skey = skey.trim();
        let signer = StandardSigner::new(skey).map_err(|_| CheckpointError::BadSecretKey)?;
        let verifier_key = verifier_key_from_secret(skey)?;
        Ok(Self {
            signer,
            secret: skey.to_owned(),
            verifier_key,
        })
    }

    /// The secret in its file format. Handle with care.
    pub fn secret_string(&self) -> &str {
        &self.secret
    }

    /// The name (= checkpoint origin).
    pub fn name(&self) -> &str {
        self.signer.name()
    }

    /// The C2SP verifier key string users put in `trust.toml`.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Signs arbitrary note text (must end in `\n`), returning the whole signed note.
    pub fn sign_note(&self, text: &str) -> Result<String, CheckpointError> {
        let mut note =
            Note::new(text.as_bytes(), &[]).map_err(|_| CheckpointError::MalformedNote)?;
        note.add_sigs(&[&self.signer])
            .map_err(|_| CheckpointError::MalformedNote)?;
        String::from_utf8(note.to_bytes()).map_err(|_| CheckpointError::MalformedNote)
    }

    /// Signs an arbitrary message with the log's Ed25519 key (a detached signature, not a note).
    /// Used for records the log writes itself (TPM enrollment records, DSSE over their PAE).
    /// Domain separation from checkpoints: a signed note's text is newline-terminated lines
    /// starting with the origin (a key name: no spaces), a DSSE PAE starts with `DSSEv1 ` and
    /// the payloads signed this way are compact JSON without a newline, so neither can be
    /// taken for the other.
    pub fn sign_message(&self, msg: &[u8]) -> Result<[u8; 64], CheckpointError> {
        use ed25519_dalek::Signer as _;
        let seed = secret_seed(&self.secret)?;
        Ok(ed25519_dalek::SigningKey::from_bytes(&seed)
            .sign(msg)
            .to_bytes())
    }

    /// Signs a checkpoint for `size`/`root` under this log's origin.
    pub fn sign(&self, size: TreeSize, root: Hash) -> Result<SignedCheckpoint, CheckpointError> {
        let checkpoint = Checkpoint::new(self.name(), size, root);
        let note = self.sign_note(&checkpoint.to_text())?;
        Ok(SignedCheckpoint { note, checkpoint })
    }
}

fn secret_seed(skey: &str) -> Result<[u8; 32], CheckpointError> {
    Ok(secret_parts(skey)?.1)
}

fn verifier_key_from_secret(skey: &str) -> Result<String, CheckpointError> {
    let (name, seed) = secret_parts(skey)?;
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    Ok(signed_note::new_ed25519_verifier_key(
        name,
        &sk.verifying_key(),
    ))
}

fn secret_parts(skey: &str) -> Result<(&str, [u8; 32]), CheckpointError> {
    use base64::Engine as _;
    let mut parts = skey.splitn(5, '+');
    let (_, _, name, _, b64) = (
        parts.next(),
        parts.next(),
        parts.next().ok_or(CheckpointError::BadSecretKey)?,
        parts.next(),
        parts.next().ok_or(CheckpointError::BadSecretKey)?,
    );
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| CheckpointError::BadSecretKey)?;
    let seed: [u8; 32] = raw
        .get(1..)
        .and_then(|s| s.try_into().ok())
        .ok_or(CheckpointError::BadSecretKey)?;
    Ok((name, seed))
}

/// A log's public verifier key: checks notes it signed.
#[derive(Clone)]
pub struct LogVerifier {
    key: String,
    name: String,
    key_id: u32,
    public: ed25519_dalek::VerifyingKey,
}

impl fmt::Debug for LogVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LogVerifier({})", self.key)
    }
}

impl fmt::Display for LogVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl std::str::FromStr for LogVerifier {
    type Err = CheckpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        use base64::Engine as _;
        let v = StandardVerifier::new(s).map_err(|_| CheckpointError::BadVerifierKey)?;
        // `name+hexid+base64(0x01 ‖ public key)`; StandardVerifier accepted the shape.
        // Names and ids contain no `+`; base64 may.
        let raw = s
            .splitn(3, '+')
            .nth(2)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or(CheckpointError::BadVerifierKey)?;
        let public = match raw.as_slice() {
            [0x01, rest @ ..] => <[u8; 32]>::try_from(rest)
                .ok()
                .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
                .ok_or(CheckpointError::BadVerifierKey)?,
            _ => return Err(CheckpointError::BadVerifierKey),
        };
        Ok(Self {
            key: s.to_owned(),
            name: v.name().to_owned(),
            key_id: v.key_id(),
            public,
        })
    }
}

impl LogVerifier {
    /// The log's name, which every checkpoint's origin must equal.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Verifies a detached Ed25519 signature made with [`LogSigner::sign_message`] (strict
    /// verification: no malleable or small-order signatures).
    pub fn verify_message(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.public.verify_strict(msg, &sig).is_ok()
    }

    /// Verifies a signed checkpoint note: a valid signature by this key, a well-formed checkpoint
    /// body, and an origin equal to the key name. Signatures by other keys (witnesses) are
    /// ignored here.
    pub fn verify(&self, note_text: &str) -> Result<SignedCheckpoint, CheckpointError> {
        let text = self.verify_note(note_text)?;
        let checkpoint = Checkpoint::from_text(&text)?;
        if checkpoint.origin != self.name {
            return Err(CheckpointError::OriginMismatch {
                expected: self.name.clone(),
                found: checkpoint.origin,
            });
        }
        Ok(SignedCheckpoint {
            note: note_text.to_owned(),
            checkpoint,
        })
    }

    /// Verifies any signed note carries a valid signature by this key; returns the signed text.
    pub fn verify_note(&self, note_text: &str) -> Result<Vec<u8>, CheckpointError> {
        let note =
            Note::from_bytes(note_text.as_bytes()).map_err(|_| CheckpointError::MalformedNote)?;
        let verifier =
            StandardVerifier::new(&self.key).map_err(|_| CheckpointError::BadVerifierKey)?;
        let list = VerifierList::new(vec![Box::new(verifier)]);
        match note.verify(&list) {
            Ok(_) => {}
            Err(NoteError::UnverifiedNote) => {
                return Err(CheckpointError::NotSignedByLog(self.key.clone()));
            }
            Err(NoteError::InvalidSignature { name, .. }) => {
                return Err(CheckpointError::BadSignature(name));
            }
            Err(_) => return Err(CheckpointError::MalformedNote),
        }
        Ok(note.text().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip() {
        let s = LogSigner::generate("log.example").unwrap();
        let v: LogVerifier = s.verifier_key().parse().unwrap();
        let root = crate::merkle::leaf_hash(b"x");
        let cp = s.sign(7, root).unwrap();
        let got = v.verify(cp.note()).unwrap();
        assert_eq!(got.size(), 7);
        assert_eq!(got.root(), &root);
        assert!(cp.note().starts_with("log.example\n7\n"));
        let again = LogSigner::from_secret(s.secret_string()).unwrap();
        assert_eq!(again.verifier_key(), s.verifier_key());
        assert!(!format!("{s:?}").contains(&s.secret_string()[20..]));
        let sig = s.sign_message(b"DSSEv1 1 x 1 y").unwrap();
        assert!(v.verify_message(b"DSSEv1 1 x 1 y", &sig));
        assert!(!v.verify_message(b"DSSEv1 1 x 1 z", &sig));
        assert!(!v.verify_message(b"DSSEv1 1 x 1 y", &sig[..63]));
        let other: LogVerifier = LogSigner::generate("log.example")
            .unwrap()
            .verifier_key()
            .parse()
            .unwrap();
        assert!(!other.verify_message(b"DSSEv1 1 x 1 y", &sig));
    }

    #[test]
    fn refuses_other_logs_and_tampering() {
        let a = LogSigner::generate("a.example").unwrap();
        let b = LogSigner::generate("b.example").unwrap();
        let va: LogVerifier = a.verifier_key().parse().unwrap();
        let note = b.sign(1, Hash::default()).unwrap();
        assert!(matches!(
            va.verify(note.note()),
            Err(CheckpointError::NotSignedByLog(_))
        ));
        let note = a.sign(1, Hash::default()).unwrap();
        let tampered = note.note().replacen("\n1\n", "\n2\n", 1);
        assert!(matches!(
            va.verify(&tampered),
            Err(CheckpointError::BadSignature(_))
        ));
        assert_eq!(va.verify("garbage"), Err(CheckpointError::MalformedNote));
        assert!("nope".parse::<LogVerifier>().is_err());
        assert!(LogSigner::generate("has space").is_err());
    }
}
