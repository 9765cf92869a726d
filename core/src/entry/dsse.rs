//! DSSE envelopes (<https://github.com/secure-systems-lab/dsse>) with provenix's canonical bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;

use super::EntryError;
use crate::nix::{NixPublicKey, NixSecretKey};

/// The only payload type provenix entries carry.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// DSSE pre-authentication encoding: `"DSSEv1" SP len(type) SP type SP len(body) SP body`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// One DSSE signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsseSignature {
    /// The builder's key name.
    pub keyid: String,
    /// 64-byte Ed25519 signature over the PAE.
    pub sig: Vec<u8>,
}

/// A DSSE envelope, decoded. Untrusted until [`Envelope::verify`] succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub payload: Vec<u8>,
    pub payload_type: String,
    pub signatures: Vec<DsseSignature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
    #[serde(rename = "payloadType", borrow)]
    payload_type: std::borrow::Cow<'a, str>,
    signatures: Vec<RawSignature<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature<'a> {
    #[serde(borrow)]
    keyid: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    sig: std::borrow::Cow<'a, str>,
}

fn b64(field: &str, s: &str) -> Result<Vec<u8>, EntryError> {
    STANDARD
        .decode(s)
        .map_err(|_| EntryError::Malformed(format!("{field} is not standard base64 with padding")))
}

impl Envelope {
    /// Signs `payload` as an in-toto statement with a builder key.
    pub fn sign(payload: Vec<u8>, key: &NixSecretKey) -> Self {
        let sig = key.sign(&pae(PAYLOAD_TYPE, &payload)).to_vec();
        Self {
            payload,
            payload_type: PAYLOAD_TYPE.to_owned(),
            signatures: vec![DsseSignature {
                keyid: key.name().to_owned(),
                sig,
            }],
        }
    }

    /// Parses the JSON form (fields in any order; unknown fields refused; strict base64).
    pub fn from_json(json: &[u8]) -> Result<Self, EntryError> {
        let raw: RawEnvelope<'_> = serde_json::from_slice(json)
            .map_err(|e| EntryError::Malformed(format!("envelope: {e}")))?;
        Self::from_raw(raw)
    }

    /// Parses an envelope given as a JSON value (as it sits inside API bodies).
    pub fn from_value(v: &serde_json::value::RawValue) -> Result<Self, EntryError> {
        Self::from_json(v.get().as_bytes())
    }

    fn from_raw(raw: RawEnvelope<'_>) -> Result<Self, EntryError> {
        let payload = b64("payload", &raw.payload)?;
        let signatures = raw
            .signatures
            .iter()
            .map(|s| {
                Ok(DsseSignature {
                    keyid: s.keyid.to_string(),
                    sig: b64("sig", &s.sig)?,
                })
            })
            .collect::<Result<Vec<_>, EntryError>>()?;
        Ok(Self {
            payload,
            payload_type: raw.payload_type.into_owned(),
            signatures,
        })
    }

    /// The canonical JSON bytes (the log leaf): compact, keys in the order `payload,
    /// payloadType, signatures` and `keyid, sig`, standard base64 with padding.
    pub fn canonical_json(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.payload.len() * 4 / 3 + 200);
        out.push_str("{\"payload\":\"");
        STANDARD.encode_string(&self.payload, &mut out);
        out.push_str("\",\"payloadType\":");
        push_json_string(&mut out, &self.payload_type);
        out.push_str(",\"signatures\":[");
        for (i, s) in self.signatures.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"keyid\":");
            push_json_string(&mut out, &s.keyid);
            out.push_str(",\"sig\":\"");
            STANDARD.encode_string(&s.sig, &mut out);
            out.push_str("\"}");
        }
        out.push_str("]}");
        out.into_bytes()
    }

    /// Verifies the (single) signature with `key`; the signature's keyid must name it.
    pub fn verify(&self, key: &NixPublicKey) -> Result<(), EntryError> {
        let [sig] = self.signatures.as_slice() else {
            return Err(EntryError::Malformed(
                "envelope must carry exactly one signature".into(),
            ));
        };
        if sig.keyid != key.name() {
            return Err(EntryError::BadSignature);
        }
        if key.verify(&pae(&self.payload_type, &self.payload), &sig.sig) {
            Ok(())
        } else {
            Err(EntryError::BadSignature)
        }
    }
}

fn push_json_string(out: &mut String, s: &str) {
    // serde_json's escaping of a &str cannot fail.
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn canonical_form_is_stable_under_reordering() {
        let key = NixSecretKey::from_seed("alpha", [7; 32]).unwrap();
        let env = Envelope::sign(b"{}".to_vec(), &key);
        let canon = env.canonical_json();
        let v: serde_json::Value = serde_json::from_slice(&canon).unwrap();
        let reordered = format!(
            r#"{{ "signatures": [{{"sig": {}, "keyid": "alpha"}}], "payloadType": {}, "payload": {} }}"#,
            v["signatures"][0]["sig"], v["payloadType"], v["payload"]
        );
        let back = Envelope::from_json(reordered.as_bytes()).unwrap();
        assert_eq!(back.canonical_json(), canon);
        assert!(back.verify(&key.public()).is_ok());
        assert!(String::from_utf8(canon).unwrap().starts_with(r#"{"payload":"e30=","payloadType":"application/vnd.in-toto+json","signatures":[{"keyid":"alpha","sig":""#));
    }

    #[test]
    fn rejects_unknown_fields_and_loose_base64() {
        assert!(Envelope::from_json(
            br#"{"payload":"e30=","payloadType":"x","signatures":[],"extra":1}"#
        )
        .is_err());
        assert!(
            Envelope::from_json(br#"{"payload":"e30","payloadType":"x","signatures":[]}"#).is_err()
        );
        assert!(
            Envelope::from_json(br#"{"payload":"e3-=","payloadType":"x","signatures":[]}"#)
                .is_err()
        );
    }
}
