//! RFC 6962 / RFC 9162 Merkle trees over SHA-256, behind provenix's own types.
//!
//! Hashing and the proof algorithms come from `tlog_tiles` (a port of Go's `sumdb/tlog`, which
//! reproduces the public vectors byte-for-byte). This module adds the types that cross our
//! boundaries ([`Hash`](struct@Hash), [`LeafIndex`], [`TreeSize`]), input checks that keep every panic in the
//! library unreachable, [`MemoryTree`], an append-only store of every tree node, and
//! [`Frontier`], the right edge of a tree that an auditor keeps to extend it.
//!
//! Hashes are stored in "stored hash index" order (Go's tlog layout): appending leaf `n` appends
//! the leaf hash and the hashes of every subtree it completes, so the vector only ever grows.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tlog_tiles::tlog;

/// A SHA-256 tree hash (leaf, node or root).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The root of the empty tree: SHA-256 of the empty string.
    pub const EMPTY_ROOT: Hash = Hash(tlog::EMPTY_HASH.0);

    /// Standard base64 with padding, as every provenix JSON body carries hashes.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Parses standard base64 of exactly 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, ProofError> {
        let v = STANDARD.decode(s).map_err(|_| ProofError::MalformedHash)?;
        Self::from_slice(&v)
    }

    /// Exactly 32 bytes, or an error (RFC 9162 verifiers must reject other lengths).
    pub fn from_slice(v: &[u8]) -> Result<Self, ProofError> {
        Ok(Self(v.try_into().map_err(|_| ProofError::MalformedHash)?))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", hex::encode(self.0))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl serde::Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for Hash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Hash::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

impl From<tlog::Hash> for Hash {
    fn from(h: tlog::Hash) -> Self {
        Hash(h.0)
    }
}

impl From<Hash> for tlog::Hash {
    fn from(h: Hash) -> Self {
        tlog::Hash(h.0)
    }
}

/// The position of a leaf in the log, from 0.
pub type LeafIndex = u64;
/// The number of leaves in a tree.
pub type TreeSize = u64;

/// Longest proof we accept: no tree of u64 size needs more (inclusion ≤ 64, consistency ≤ 2·64
/// in theory; in practice ≤ 64 + 1). Longer inputs are rejected before any work.
pub const MAX_PROOF_LEN: usize = 130;

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ data).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Hash(h.finalize().into())
}

/// RFC 6962 interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    tlog::node_hash((*left).into(), (*right).into()).into()
}

/// Why a proof or a proof request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("hash is not 32 bytes of standard base64")]
    MalformedHash,
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {requested} is larger than the tree ({have})")]
    SizeOutOfRange { requested: u64, have: u64 },
    #[error("consistency needs 0 < from <= to (got {from} -> {to})")]
    BadRange { from: u64, to: u64 },
    #[error("proof has {0} hashes; no valid proof is that long")]
    TooLong(usize),
    #[error("proof does not verify")]
    Invalid,
}

/// Verifies an RFC 9162 §2.1.3.2 inclusion proof that leaf `index` with hash `leaf` is in the
/// tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: LeafIndex,
    size: TreeSize,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::TooLong(proof.len()));
    }
    let p: Vec<tlog::Hash> = proof.iter().map(|h| (*h).into()).collect();
    tlog::check_record(&p, size, (*root).into(), index, (*leaf).into())
        .map_err(|_| ProofError::Invalid)
}

/// Verifies an RFC 9162 §2.1.4.2 consistency proof between the tree of `from` leaves with root
/// `from_root` and the tree of `to` leaves with root `to_root`.
///
/// `from == 0` is refused here (there is nothing to prove; callers decide what an empty old
/// tree means), as is `from > to`. `from == to` verifies only with an empty proof and equal roots.
pub fn verify_consistency(
    from: TreeSize,
    to: TreeSize,
    proof: &[Hash],
    from_root: &Hash,
    to_root: &Hash,
) -> Result<(), ProofError> {
    if from == 0 || from > to {
        return Err(ProofError::BadRange { from, to });
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::TooLong(proof.len()));
    }
    let p: Vec<tlog::Hash> = proof.iter().map(|h| (*h).into()).collect();
    tlog::check_tree(&p, to, (*to_root).into(), from, (*from_root).into())
        .map_err(|_| ProofError::Invalid)
}

/// Computes the RFC 6962 root of a list of leaf hashes (reference implementation for tests,
/// audits of a whole tile, and tile checks).
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::EMPTY_ROOT,
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly less than `n` (n ≥ 2).
fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// An append-only tree holding every node hash in memory (≈ 64 bytes per leaf).
///
/// It can prove inclusion and consistency for any historical size up to its own, compute any
/// historical root, and cut C2SP tiles.
#[derive(Clone, Default)]
pub struct MemoryTree {
    stored: Vec<tlog::Hash>,
    size: u64,
}

impl fmt::Debug for MemoryTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemoryTree(size={})", self.size)
    }
}

struct Reader<'a>(&'a [tlog::Hash]);

impl tlog::HashReader for Reader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog::Hash>, tlog::Error> {
        indexes
            .iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.0.get(i).copied())
                    .ok_or(tlog::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a tree from leaf hashes in order.
    pub fn from_leaves<I: IntoIterator<Item = Hash>>(leaves: I) -> Self {
        let mut t = Self::new();
        for h in leaves {
            t.push(h);
        }
        t
    }

    /// Number of leaves.
    pub fn size(&self) -> TreeSize {
        self.size
    }

    /// Appends a leaf hash; returns its index.
    pub fn push(&mut self, leaf: Hash) -> LeafIndex {
        let n = self.size;
        // Infallible: every index `stored_hashes_for_record_hash` asks for is below
        // `stored_hash_count(n)`, which is exactly what `stored` holds.
        let new = tlog::stored_hashes_for_record_hash(n, leaf.into(), &Reader(&self.stored))
            .unwrap_or_else(|_| unreachable_tree_invariant());
        self.stored.extend(new);
        self.size += 1;
        n
    }

    /// Reserves room for `additional` more leaves.
    pub fn reserve(&mut self, additional: usize) {
        self.stored.reserve(additional.saturating_mul(2));
    }

    /// The hash of leaf `index`, if present.
    pub fn leaf(&self, index: LeafIndex) -> Option<Hash> {
        self.node(0, index)
    }

    /// The hash of the complete subtree at tree `level` (0 = leaves), position `n`, if that
    /// subtree is complete in this tree.
    pub fn node(&self, level: u8, n: u64) -> Option<Hash> {
        if level >= 64 || n.checked_add(1)?.checked_shl(u32::from(level))? > self.size {
            return None;
        }
        let i = usize::try_from(tlog::stored_hash_index(level, n)).ok()?;
        self.stored.get(i).map(|h| (*h).into())
    }

    /// Root of the current tree.
    pub fn root(&self) -> Hash {
        self.root_at(self.size).unwrap_or(Hash::EMPTY_ROOT)
    }

    /// Root of the tree's first `size` leaves.
    pub fn root_at(&self, size: TreeSize) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        tlog::tree_hash(size, &Reader(&self.stored))
            .map(Into::into)
            .map_err(|_| ProofError::Invalid)
    }

    /// Inclusion proof for leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(
        &self,
        index: LeafIndex,
        size: TreeSize,
    ) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        tlog::prove_record(size, index, &Reader(&self.stored))
            .map(|p| p.into_iter().map(Into::into).collect())
            .map_err(|_| ProofError::Invalid)
    }

    /// Consistency proof from the tree of `from` leaves to the tree of `to` leaves.
    /// `from == to` gives an empty proof; `from == 0` is refused (see [`verify_consistency`]).
    pub fn consistency_proof(&self, from: TreeSize, to: TreeSize) -> Result<Vec<Hash>, ProofError> {
        self.check_size(to)?;
        if from == 0 || from > to {
            return Err(ProofError::BadRange { from, to });
        }
        tlog::prove_tree(to, from, &Reader(&self.stored))
            .map(|p| p.into_iter().map(Into::into).collect())
            .map_err(|_| ProofError::Invalid)
    }

    /// The bytes of C2SP tile `level`/`index` with `width` hashes (1..=256): the hashes at tree
    /// level `8·level`, positions `index·256 ..`. `None` if the tree does not cover it.
    pub fn tile(&self, level: u8, index: u64, width: u16) -> Option<Vec<u8>> {
        if !(1..=256).contains(&width) || level >= 8 {
            return None;
        }
        let tree_level = level * 8;
        let start = index.checked_mul(256)?;
        let mut out = Vec::with_capacity(usize::from(width) * 32);
        for i in 0..u64::from(width) {
            out.extend_from_slice(&self.node(tree_level, start.checked_add(i)?)?.0);
        }
        Some(out)
    }

    fn check_size(&self, size: TreeSize) -> Result<(), ProofError> {
        if size > self.size {
            return Err(ProofError::SizeOutOfRange {
                requested: size,
                have: self.size,
            });
        }
        Ok(())
    }
}

/// The right edge of a tree (a "compact range" from leaf 0): the roots of the complete subtrees
/// a tree of `size` leaves decomposes into, largest (leftmost) first — one per set bit of
/// `size`, at most 64 hashes.
///
/// It is all an auditor needs to keep between runs: appending the leaves that follow gives the
/// root of every later tree, so a new checkpoint can be checked by recomputation, and a later
/// tree's root that does not come out of the kept edge plus the new leaves proves the log
/// rewrote its history. Built from leaf hashes the caller computed; nothing here is trusted
/// input except through [`Frontier::from_parts`], which checks the shape.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: TreeSize,
    nodes: Vec<Hash>,
}

impl fmt::Debug for Frontier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frontier(size={} root={})", self.size, self.root())
    }
}

impl Frontier {
    /// The edge of the empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// An edge as stored: `nodes` must hold exactly one hash per set bit of `size`.
    pub fn from_parts(size: TreeSize, nodes: Vec<Hash>) -> Result<Self, ProofError> {
        if nodes.len() != size.count_ones() as usize {
            return Err(ProofError::Invalid);
        }
        Ok(Self { size, nodes })
    }

    /// The edge of the first `size` leaves of `tree`.
    pub fn of_tree(tree: &MemoryTree, size: TreeSize) -> Result<Self, ProofError> {
        tree.check_size(size)?;
        let mut nodes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                nodes.push(
                    tree.node(level, start >> level)
                        .ok_or(ProofError::Invalid)?,
                );
                start += 1u64 << level;
            }
        }
        Ok(Self { size, nodes })
    }

    /// Number of leaves covered.
    pub fn size(&self) -> TreeSize {
        self.size
    }

    /// The subtree roots, largest first.
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends the next leaf's hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut n = self.size;
        while n & 1 == 1 {
            match self.nodes.pop() {
                Some(left) => h = node_hash(&left, &h),
                None => break,
            }
            n >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// The RFC 6962 root of the covered tree.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(last) = it.next() else {
            return Hash::EMPTY_ROOT;
        };
        it.fold(*last, |right, left| node_hash(left, &right))
    }
}

#[allow(clippy::panic)]
#[cold]
fn unreachable_tree_invariant() -> ! {
    panic!("MemoryTree invariant broken: stored hashes out of step with size")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn roots_match_reference() {
        for n in 0..70u64 {
            let l = leaves(n);
            let t = MemoryTree::from_leaves(l.iter().copied());
            assert_eq!(t.root(), root_of(&l), "n={n}");
            for m in 0..=n {
                assert_eq!(t.root_at(m).unwrap(), root_of(&l[..m as usize]));
            }
        }
    }

    #[test]
    fn million_leaf_root_matches_cross_checked_value() {
        // ../shared/vectors/tlog/README.txt: leaves = SHA-256(0x00 ‖ u64_be(i)), N = 1,000,000.
        let t = MemoryTree::from_leaves(leaves(1_000_000));
        assert_eq!(
            hex::encode(t.root().0),
            "8ed0805dba1b06ac61a0a2fd76302bbdff69af7305fe8dd16e1dd05ce3ea3295"
        );
    }

    #[test]
    fn frontier_roots_match_the_tree() {
        let l = leaves(600);
        let t = MemoryTree::from_leaves(l.iter().copied());
        let mut f = Frontier::new();
        assert_eq!(f.root(), Hash::EMPTY_ROOT);
        for (i, h) in l.iter().enumerate() {
            f.push(*h);
            let n = i as u64 + 1;
            assert_eq!(f.root(), t.root_at(n).unwrap(), "n={n}");
            assert_eq!(f.nodes().len(), n.count_ones() as usize);
            assert_eq!(Frontier::of_tree(&t, n).unwrap(), f);
        }
        let again = Frontier::from_parts(f.size(), f.nodes().to_vec()).unwrap();
        assert_eq!(again.root(), f.root());
        assert!(Frontier::from_parts(f.size() + 1, f.nodes().to_vec()).is_err());
        assert!(Frontier::of_tree(&t, 601).is_err());
    }

    #[test]
    fn frontier_reproduces_the_million_leaf_vector() {
        let mut f = Frontier::new();
        for h in leaves(1_000_000) {
            f.push(h);
        }
        assert_eq!(
            hex::encode(f.root().0),
            "8ed0805dba1b06ac61a0a2fd76302bbdff69af7305fe8dd16e1dd05ce3ea3295"
        );
    }

    #[test]
    fn tiles_are_level_slices() {
        let t = MemoryTree::from_leaves(leaves(300));
        let tile = t.tile(0, 1, 44).unwrap();
        assert_eq!(tile.len(), 44 * 32);
        assert_eq!(&tile[..32], &t.leaf(256).unwrap().0);
        assert!(t.tile(0, 1, 45).is_none());
        let l1 = t.tile(1, 0, 1).unwrap();
        assert_eq!(l1, root_of(&leaves(256)).0.to_vec());
        assert!(t.tile(1, 0, 2).is_none());
    }

    #[test]
    fn out_of_range_requests_are_errors_not_panics() {
        let t = MemoryTree::from_leaves(leaves(10));
        assert!(t.inclusion_proof(10, 10).is_err());
        assert!(t.inclusion_proof(0, 11).is_err());
        assert!(t.consistency_proof(0, 5).is_err());
        assert!(t.consistency_proof(6, 5).is_err());
        assert!(t.consistency_proof(3, 11).is_err());
        assert!(t.node(63, u64::MAX).is_none());
        assert!(t.tile(0, u64::MAX, 256).is_none());
        let empty = MemoryTree::new();
        assert_eq!(empty.root(), Hash::EMPTY_ROOT);
        let h = Hash::default();
        assert!(verify_inclusion(&h, 0, 0, &[], &h).is_err());
        assert!(verify_consistency(0, 0, &[], &h, &h).is_err());
        assert_eq!(
            verify_inclusion(&h, 0, 2, &vec![h; 200], &h),
            Err(ProofError::TooLong(200))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn proofs_verify_and_any_bit_flip_fails(n in 1u64..300, i in 0u64..300, m in 1u64..300, bit in 0usize..256) {
            let l = leaves(n);
            let t = MemoryTree::from_leaves(l.iter().copied());
            let i = i % n;
            let root = t.root();
            let p = t.inclusion_proof(i, n).unwrap();
            prop_assert!(verify_inclusion(&l[i as usize], i, n, &p, &root).is_ok());
            if !p.is_empty() {
                let mut bad = p.clone();
                let k = bit % bad.len();
                bad[k].0[(bit / 8) % 32] ^= 1 << (bit % 8);
                prop_assert!(verify_inclusion(&l[i as usize], i, n, &bad, &root).is_err());
                prop_assert!(verify_inclusion(&l[i as usize], i, n, &p[..p.len()-1], &root).is_err());
            }
            let mut extended = p.clone();
            extended.push(root);
            prop_assert!(verify_inclusion(&l[i as usize], i, n, &extended, &root).is_err());

            let m = m % n + 1;
            let old = t.root_at(m).unwrap();
            let c = t.consistency_proof(m, n).unwrap();
            prop_assert!(verify_consistency(m, n, &c, &old, &root).is_ok());
            if !c.is_empty() {
                let mut bad = c.clone();
                let k = bit % bad.len();
                bad[k].0[(bit / 8) % 32] ^= 1 << (bit % 8);
                prop_assert!(verify_consistency(m, n, &bad, &old, &root).is_err());
            }
            let mut extended = c.clone();
            extended.push(root);
            prop_assert!(verify_consistency(m, n, &extended, &old, &root).is_err());
        }
    }
}
