//! The public vectors in `../shared/vectors/tlog/` through provenix's own verifier.
//! Set `PROVENIX_VECTORS` to point elsewhere; the directory is required (CI has it).

// Test helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use provenix_core::checkpoint::{Checkpoint, LogSigner, LogVerifier};
use provenix_core::merkle::{self, Hash, MemoryTree};
use provenix_core::tile::{self, TileKind, TilePath};
use serde_json::Value;

fn vectors() -> PathBuf {
    let dir = std::env::var_os("PROVENIX_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors"));
    assert!(
        dir.join("tlog").is_dir(),
        "test vectors not found at {} (set PROVENIX_VECTORS)",
        dir.display()
    );
    dir
}

fn json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out.sort();
}

fn b64_hash(v: &Value) -> Result<Hash, ()> {
    let bytes = STANDARD.decode(v.as_str().ok_or(())?).map_err(|_| ())?;
    Hash::from_slice(&bytes).map_err(|_| ())
}

fn b64_proof(v: &Value) -> Result<Vec<Hash>, ()> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Array(a) => a.iter().map(b64_hash).collect(),
        _ => Err(()),
    }
}

fn hex_hash(v: &Value) -> Hash {
    Hash(
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    )
}

#[test]
fn transparency_dev_inclusion_vectors() {
    let mut files = Vec::new();
    walk(
        &vectors().join("tlog/transparency-dev-merkle/testdata/inclusion"),
        &mut files,
    );
    assert!(files.len() > 40, "only {} inclusion vectors", files.len());
    for f in &files {
        let v = json(f);
        let got = (|| {
            let leaf = b64_hash(&v["leafHash"])?;
            let root = b64_hash(&v["root"])?;
            let proof = b64_proof(&v["proof"])?;
            merkle::verify_inclusion(
                &leaf,
                v["leafIdx"].as_u64().ok_or(())?,
                v["treeSize"].as_u64().ok_or(())?,
                &proof,
                &root,
            )
            .map_err(|_| ())
        })();
        assert_eq!(
            got.is_err(),
            v["wantErr"].as_bool().unwrap(),
            "{}: {}",
            f.display(),
            v["desc"]
        );
    }
}

/// The one case where transparency-dev's verifier and ours differ on purpose: its roots are
/// 12-byte "don't care" strings that it compares byte-wise when the sizes are equal; provenix
/// roots are always parsed as 32-byte hashes first, so such input never reaches a comparison.
const STRICT_LENGTH_DIVERGENCE: &str = "sizes-are-equal-one-and-proof-is-empty.json";

#[test]
fn transparency_dev_consistency_vectors() {
    let mut files = Vec::new();
    walk(
        &vectors().join("tlog/transparency-dev-merkle/testdata/consistency"),
        &mut files,
    );
    assert!(files.len() > 40, "only {} consistency vectors", files.len());
    let mut diverged = Vec::new();
    for f in &files {
        let v = json(f);
        let got = (|| {
            let r1 = b64_hash(&v["root1"])?;
            let r2 = b64_hash(&v["root2"])?;
            let proof = b64_proof(&v["proof"])?;
            merkle::verify_consistency(
                v["size1"].as_u64().ok_or(())?,
                v["size2"].as_u64().ok_or(())?,
                &proof,
                &r1,
                &r2,
            )
            .map_err(|_| ())
        })();
        let want_err = v["wantErr"].as_bool().unwrap();
        if got.is_err() != want_err {
            diverged.push(f.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert_eq!(diverged, vec![STRICT_LENGTH_DIVERGENCE.to_owned()]);
}

#[test]
fn rfc6962_reference_constants() {
    let v = json(&vectors().join("tlog/transparency-dev-merkle/rfc6962-8-leaf-constants.json"));
    let leaves: Vec<Hash> = v["leaf_inputs_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| merkle::leaf_hash(&hex::decode(x.as_str().unwrap()).unwrap()))
        .collect();
    let tree = MemoryTree::from_leaves(leaves.iter().copied());
    let levels = v["node_hashes_by_level"].as_array().unwrap();
    for (level, hashes) in levels.iter().enumerate() {
        for (n, h) in hashes.as_array().unwrap().iter().enumerate() {
            assert_eq!(
                tree.node(level as u8, n as u64),
                Some(hex_hash(h)),
                "level {level} node {n}"
            );
        }
    }
    // root_hashes_by_size[n] is the root of the first n leaves (index 0: the empty tree).
    let roots = v["root_hashes_by_size"].as_array().unwrap();
    assert_eq!(roots.len(), 9);
    for (size, r) in roots.iter().enumerate() {
        assert_eq!(
            tree.root_at(size as u64).unwrap(),
            hex_hash(r),
            "root of size {size}"
        );
    }
}

#[test]
fn derived_n64_every_proof() {
    let v = json(&vectors().join("tlog/derived/rfc6962-byte-leaves-n64.json"));
    let leaves: Vec<Hash> = (0u8..64).map(|i| merkle::leaf_hash(&[i])).collect();
    for (i, h) in v["leaf_hashes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(leaves[i], hex_hash(h));
    }
    let tree = MemoryTree::from_leaves(leaves.iter().copied());
    for size in 0..=64u64 {
        assert_eq!(
            tree.root_at(size).unwrap(),
            hex_hash(&v["roots"][size.to_string()])
        );
    }
    let inc = v["inclusion"].as_array().unwrap();
    assert_eq!(inc.len(), 2080);
    for c in inc {
        let (i, n) = (c["index"].as_u64().unwrap(), c["size"].as_u64().unwrap());
        let want: Vec<Hash> = c["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(hex_hash)
            .collect();
        assert_eq!(
            tree.inclusion_proof(i, n).unwrap(),
            want,
            "inclusion {i}@{n}"
        );
        merkle::verify_inclusion(&leaves[i as usize], i, n, &want, &tree.root_at(n).unwrap())
            .unwrap();
    }
    let con = v["consistency"].as_array().unwrap();
    assert_eq!(con.len(), 2080);
    for c in con {
        let (m, n) = (c["size1"].as_u64().unwrap(), c["size2"].as_u64().unwrap());
        let want: Vec<Hash> = c["proof"]
            .as_array()
            .unwrap()
            .iter()
            .map(hex_hash)
            .collect();
        assert_eq!(
            tree.consistency_proof(m, n).unwrap(),
            want,
            "consistency {m}->{n}"
        );
        merkle::verify_consistency(
            m,
            n,
            &want,
            &tree.root_at(m).unwrap(),
            &tree.root_at(n).unwrap(),
        )
        .unwrap();
    }
}

#[test]
fn signed_note_vectors() {
    let v = json(&vectors().join("tlog/signed-note/ed25519-signed-notes.json"));
    let notes = v.as_array().unwrap();
    assert_eq!(notes.len(), 3);
    let mut resigned = 0;
    for n in notes {
        let verifier: LogVerifier = n["vkey"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            format!("{:08x}", verifier.key_id()),
            n["key_id_hex"].as_str().unwrap()
        );
        let note = n["note"].as_str().unwrap();
        let text = verifier.verify_note(note).unwrap();
        assert_eq!(text, n["signed_text"].as_str().unwrap().as_bytes());
        // Any change to the text breaks it.
        let tampered = note.replacen("is", "IS", 1);
        assert!(verifier.verify_note(&tampered).is_err());
        if let Some(sk) = n["private_key_string"].as_str() {
            let signer = LogSigner::from_secret(sk).unwrap();
            assert_eq!(signer.verifier_key(), n["vkey"].as_str().unwrap());
            assert_eq!(
                signer
                    .sign_note(n["signed_text"].as_str().unwrap())
                    .unwrap(),
                note
            );
            resigned += 1;
        }
    }
    assert_eq!(resigned, 1);
}

#[test]
fn tile_path_vectors() {
    let v = json(&vectors().join("tlog/derived/tlog-tiles-paths.json"));
    for (n, want) in v["index_encoding"].as_object().unwrap() {
        assert_eq!(
            tile::encode_index(n.parse().unwrap()),
            want.as_str().unwrap()
        );
    }
    for (size, shape) in v["sizes"].as_object().unwrap() {
        let size: u64 = size.parse().unwrap();
        let levels = shape["tree_tiles"].as_array().unwrap();
        let mut expected_tiles = 0u64;
        for l in levels {
            let level = l["level"].as_u64().unwrap() as u8;
            let (full, partial) = tile::level_shape(size, level);
            assert_eq!(
                full,
                l["full_tiles"].as_u64().unwrap(),
                "size {size} level {level}"
            );
            assert_eq!(u64::from(partial), l["partial_width"].as_u64().unwrap());
            expected_tiles += full + u64::from(partial > 0);
            for key in ["last_full_path", "partial_path"] {
                if let Some(p) = l[key].as_str() {
                    let t = TilePath::parse(p.strip_prefix("tile/").unwrap()).unwrap();
                    assert_eq!(t.to_string(), p);
                    assert_eq!(t.kind, TileKind::Hashes { level });
                }
            }
        }
        if size < 1 << 24 {
            assert_eq!(
                tile::tiles_for_size(size).len() as u64,
                expected_tiles,
                "size {size}"
            );
        }
        let bundles = &shape["entry_bundles"];
        let (full, partial) = tile::level_shape(size, 0);
        assert_eq!(full, bundles["full_bundles"].as_u64().unwrap());
        assert_eq!(
            u64::from(partial),
            bundles["partial_width"].as_u64().unwrap()
        );
        if let Some(p) = bundles["partial_path"].as_str() {
            let t = TilePath::parse(p.strip_prefix("tile/").unwrap()).unwrap();
            assert_eq!(t.kind, TileKind::Entries);
            assert_eq!(t.to_string(), p);
        }
    }
}

#[test]
fn sunlight_real_tiles_recompute_the_checkpoint_root() {
    let dir = vectors().join(
        "tlog/sunlight-skylight-testdata/cmd/skylight/testdata/witness/mirror/000de184301123b9278c086a7d9f68c9577e83872224c197058fd90784ea9706",
    );
    let cp_note = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    let body = cp_note.split("\n\n").next().unwrap().to_owned() + "\n";
    let cp = Checkpoint::from_text(body.as_bytes()).unwrap();
    assert_eq!(cp.size, 300);
    let mut leaves = Vec::new();
    for rel in ["tile/0/000", "tile/0/001.p/44"] {
        let t = TilePath::parse(rel.strip_prefix("tile/").unwrap()).unwrap();
        let bytes = std::fs::read(dir.join(rel)).unwrap();
        assert_eq!(bytes.len(), usize::from(t.width) * 32);
        leaves.extend(bytes.chunks(32).map(|c| Hash::from_slice(c).unwrap()));
    }
    let tree = MemoryTree::from_leaves(leaves.iter().copied());
    assert_eq!(tree.root(), cp.root);
    // Our tiles, cut from the recomputed tree, equal the published ones byte for byte.
    assert_eq!(
        tree.tile(0, 0, 256).unwrap(),
        std::fs::read(dir.join("tile/0/000")).unwrap()
    );
    assert_eq!(
        tree.tile(0, 1, 44).unwrap(),
        std::fs::read(dir.join("tile/0/001.p/44")).unwrap()
    );
    assert_eq!(
        tree.tile(1, 0, 1).unwrap(),
        std::fs::read(dir.join("tile/1/000.p/1")).unwrap()
    );
}

#[test]
fn cosignature_vectors_verify() {
    use provenix_core::witness::{self, CosignerVerifier};
    let v =
        json(&vectors().join("tlog/tlog-cosignature/ed25519-cosignatures-sunlight-testdata.json"));
    let recs = v.as_array().unwrap();
    assert_eq!(recs.len(), 3);
    for r in recs {
        let w: CosignerVerifier = r["cosigner_vkey"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            format!("{:08x}", w.key_id()),
            r["key_id_hex"].as_str().unwrap()
        );
        let note = r["checkpoint_note"].as_str().unwrap();
        let got = witness::valid_cosignatures(note, std::slice::from_ref(&w));
        assert_eq!(
            got,
            vec![(w.name().to_owned(), r["timestamp"].as_u64().unwrap())],
            "{}",
            r["source"]
        );
        assert_eq!(
            witness::cosigned_message(
                r["note_text"].as_str().unwrap().as_bytes(),
                r["timestamp"].as_u64().unwrap()
            ),
            r["signed_message"].as_str().unwrap().as_bytes()
        );
        // One flipped bit in the cosigned text, and the cosignature no longer counts.
        let tampered = note.replacen("\n300\n", "\n301\n", 1);
        assert!(witness::valid_cosignatures(&tampered, &[w]).is_empty());
    }
}
