//! Checking the signatures of many entries at once.
//!
//! [`Entry::verify`] checks one signature with the strict, cofactorless Ed25519 equation
//! (`ed25519_dalek::VerifyingKey::verify_strict`). Here every item is checked with the
//! **cofactored** equation of RFC 8032 §5.1.7, `[8][S]B = [8]R + [8][k]A`, which RFC 8032 names
//! first and which, unlike the cofactorless one, gives the same answer for an item alone and in
//! any batch. The two differ only on a signature whose `R` carries a small-order component:
//! making one needs the secret key, so either way the key's holder signed the entry.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};

use super::{pae, Entry};
use crate::nix::NixPublicKey;

/// Below this many items, [`verify_each`] checks a failed batch's items one at a time instead
/// of halving it again.
const BISECT_MIN: usize = 8;

/// Whether every entry's signature verifies under its paired key (and each entry's `keyid` names
/// that key), with one cofactored batch equation: about a third of [`Entry::verify`]'s time per
/// entry for batches of dozens. `false` says at least one does not; [`verify_each`] says which.
/// Weak (small-order) public keys and non-canonical `S` are refused, as by [`Entry::verify`].
pub fn verify_batch(items: &[(&Entry, &NixPublicKey)]) -> bool {
    let mut seed = Sha512::new();
    seed.update(b"provenix cofactored ed25519 batch v1");
    let mut parts = Vec::with_capacity(items.len());
    for (entry, key) in items {
        let Some(part) = Part::of(entry, key) else {
            return false;
        };
        seed.update(part.k.as_bytes());
        seed.update(part.s.as_bytes());
        parts.push(part);
    }
    if parts.is_empty() {
        return true;
    }
    // The random weights come from a hash of everything checked (Fiat–Shamir): no signer can
    // pick its signature after seeing them. A weight is never zero, so a batch of one is exactly
    // the cofactored single check.
    let seed = seed.finalize();
    let zs: Vec<Scalar> = (0..parts.len() as u64)
        .map(|i| {
            let h = Sha512::new()
                .chain_update(seed)
                .chain_update(i.to_le_bytes())
                .finalize();
            let mut z = [0u8; 16];
            z.copy_from_slice(&h[..16]);
            Scalar::from(u128::from_le_bytes(z).max(1))
        })
        .collect();
    // −(Σ zᵢsᵢ)·B + Σ zᵢ·Rᵢ + Σ (zᵢkᵢ)·Aᵢ, times the cofactor, must be the identity.
    let b_coefficient: Scalar = parts.iter().zip(&zs).map(|(p, z)| z * p.s).sum();
    let scalars = std::iter::once(-b_coefficient)
        .chain(zs.iter().copied())
        .chain(parts.iter().zip(&zs).map(|(p, z)| z * p.k));
    let points = std::iter::once(ED25519_BASEPOINT_POINT)
        .chain(parts.iter().map(|p| p.r))
        .chain(parts.iter().map(|p| p.a));
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
}

/// Whether each entry's signature verifies under its paired key (and its `keyid` names that
/// key), with the cofactored equation: all of them in one [`verify_batch`] first; a batch that
/// fails is halved until the bad items are found, and small groups are checked one by one. An
/// item's result does not depend on which items share its call (up to the batch equation's
/// 2⁻¹²⁸ chance of missing a bad signature); honest input costs one batch.
pub fn verify_each(items: &[(&Entry, &NixPublicKey)]) -> Vec<bool> {
    let mut out = vec![false; items.len()];
    bisect(items, &mut out);
    out
}

fn bisect(items: &[(&Entry, &NixPublicKey)], out: &mut [bool]) {
    if items.is_empty() {
        return;
    }
    if verify_batch(items) {
        out.fill(true);
    } else if items.len() == 1 {
        out[0] = false;
    } else if items.len() < BISECT_MIN {
        for (item, o) in items.iter().zip(out.iter_mut()) {
            *o = verify_batch(std::slice::from_ref(item));
        }
    } else {
        let mid = items.len() / 2;
        let (a, b) = items.split_at(mid);
        let (oa, ob) = out.split_at_mut(mid);
        bisect(a, oa);
        bisect(b, ob);
    }
}

/// One signature's terms: `S`, `R`, the public key `A` and `k = H(R ‖ A ‖ M)`.
struct Part {
    s: Scalar,
    r: EdwardsPoint,
    a: EdwardsPoint,
    k: Scalar,
}

impl Part {
    fn of(entry: &Entry, key: &NixPublicKey) -> Option<Self> {
        let [sig] = entry.envelope.signatures.as_slice() else {
            return None;
        };
        let vk = key.verifying_key();
        if sig.keyid != key.name() || vk.is_weak() || sig.sig.len() != 64 {
            return None;
        }
        let (r_bytes, s_bytes) = sig.sig.split_at(32);
        let s = Option::from(Scalar::from_canonical_bytes(s_bytes.try_into().ok()?))?;
        let r = CompressedEdwardsY::from_slice(r_bytes).ok()?.decompress()?;
        let k = Scalar::from_hash(
            Sha512::new()
                .chain_update(r_bytes)
                .chain_update(vk.as_bytes())
                .chain_update(pae(&entry.envelope.payload_type, &entry.envelope.payload)),
        );
        Some(Self {
            s,
            r,
            a: vk.to_edwards(),
            k,
        })
    }
}
