//! `provenix export --config trust.toml STOREPATH -o FILE.intoto.jsonl`: every entry the
//! configured logs hold for a store path, as an in-toto bundle that anyone can check offline;
//! and `provenix verify-receipt --config trust.toml FILE`, which checks one with nothing but the
//! trust file.
//!
//! # The bundle
//! JSON Lines, one line per distinct entry:
//! ```json
//! {"dsseEnvelope":{"payload":"…","payloadType":"application/vnd.in-toto+json","signatures":[…]},
//!  "tlogProofs":["c2sp.org/tlog-proof@v1\nindex 12\n…\n\n<signed checkpoint>", …]}
//! ```
//! `dsseEnvelope` is the log leaf itself (the canonical envelope, DESIGN.md §4): a DSSE
//! verifier checks it with the builder's public key, an in-toto verifier parses its Statement v1
//! / SLSA Provenance v1 payload. `tlogProofs` holds one C2SP `tlog-proof` receipt per log that
//! holds the entry: the index, the inclusion proof of SHA-256(0x00 ‖ canonical envelope) and the
//! log's checkpoint with its witness cosignatures, verbatim.
//!
//! # What `verify-receipt` checks, offline
//! Per line: the envelope parses as a provenix entry and its DSSE signature verifies under the
//! trust file's key of its builder; per receipt: the checkpoint is signed by the trust file's key
//! of the log its origin names, carries the cosignatures that log's `witnesses`/`min-witnesses`
//! require, and its inclusion proof places the entry's recomputed leaf hash at the stated index.
//! It then applies the trust policy to the verified entries (an offline decision; consistency
//! with checkpoints seen before is what `provenix audit` and the substituter's state add).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use provenix_core::entry::Entry;
use provenix_core::merkle::Hash;
use provenix_core::nix::StorePath;
use provenix_core::policy::{Claim, Content, TrustConfig, Votes};
use provenix_core::receipt::TlogProof;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::logclient::{http_client, LogClient};
use crate::verify::parse_store_path;

/// Largest bundle line read by `verify-receipt` (an entry of 64 KiB and a few receipts).
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Arguments of `provenix export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The trust file (its logs are asked).
    #[arg(long)]
    pub config: PathBuf,
    /// Where to write the bundle (`.intoto.jsonl`); `-` for stdout.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// The store path.
    pub store_path: String,
}

/// Arguments of `provenix verify-receipt`.
#[derive(clap::Args, Debug)]
pub struct VerifyReceiptArgs {
    /// The trust file (builder, log and witness keys; nothing is fetched).
    #[arg(long)]
    pub config: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// A bundle written by `provenix export`.
    pub bundle: PathBuf,
}

/// One line of a bundle.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleLine {
    /// The DSSE envelope (the log leaf).
    pub dsse_envelope: Box<RawValue>,
    /// C2SP `tlog-proof` receipts, one per log holding the entry.
    pub tlog_proofs: Vec<String>,
}

/// Runs `provenix export`.
pub async fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let path = parse_store_path(&args.store_path)?;
    let config = crate::substituter::load_config(&args.config)?;
    let key = path.hash().to_string();
    let http = http_client(Duration::from_secs(30));
    // Leaf hash → (canonical envelope, receipts), in the order first seen.
    let mut lines: BTreeMap<Hash, (Vec<u8>, Vec<String>)> = BTreeMap::new();
    let mut order: Vec<Hash> = Vec::new();
    let mut failures = Vec::new();
    for log in &config.logs {
        let client = LogClient::with_http(&log.url, http.clone())?;
        let resp = match client.lookup(&key).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", log.url));
                continue;
            }
        };
        let (cp, entries) = match resp.verify(&log.key) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: its answer does not verify: {e}", log.url));
                continue;
            }
        };
        for (checked, raw) in entries.iter().zip(&resp.entries) {
            let receipt = TlogProof {
                extra: None,
                index: checked.index,
                proof: raw.inclusion_proof.clone(),
                checkpoint: cp.note().to_owned(),
            }
            .to_text();
            let leaf = checked.entry.leaf_hash();
            let slot = lines.entry(leaf).or_insert_with(|| {
                order.push(leaf);
                (checked.entry.leaf_bytes().to_vec(), Vec::new())
            });
            slot.1.push(receipt);
        }
    }
    for f in &failures {
        eprintln!("provenix export: skipped log {f}");
    }
    if lines.is_empty() {
        anyhow::bail!(
            "no configured log holds an entry for {path}{}",
            if failures.is_empty() {
                ""
            } else {
                " (some logs failed, see above)"
            }
        );
    }
    let mut out = Vec::new();
    for leaf in &order {
        let Some((envelope, receipts)) = lines.get(leaf) else {
            continue;
        };
        let line = BundleLine {
            dsse_envelope: RawValue::from_string(String::from_utf8(envelope.clone())?)?,
            tlog_proofs: receipts.clone(),
        };
        serde_json::to_writer(&mut out, &line)?;
        out.push(b'\n');
    }
    if args.output.as_os_str() == "-" {
        std::io::stdout().write_all(&out)?;
    } else {
        std::fs::write(&args.output, &out)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        let receipts: usize = lines.values().map(|(_, r)| r.len()).sum();
        eprintln!(
            "provenix export: {} entr{} for {path} with {receipts} receipt(s) written to {}",
            lines.len(),
            if lines.len() == 1 { "y" } else { "ies" },
            args.output.display()
        );
    }
    Ok(())
}

/// The verdict on one receipt.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptResult {
    /// The log named by the checkpoint's origin.
    pub log: Option<String>,
    pub index: Option<u64>,
    pub checkpoint_size: Option<u64>,
    /// Witnesses whose cosignature verified.
    pub cosigners: Vec<String>,
    /// `None` when it verified.
    pub error: Option<String>,
}

/// The verdict on one bundle line.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LineResult {
    pub line: usize,
    pub builder: Option<String>,
    pub outputs: Vec<String>,
    /// `None` when the envelope's signature verified under the trust file's key.
    pub signature_error: Option<String>,
    pub receipts: Vec<ReceiptResult>,
}

impl LineResult {
    /// Whether the envelope and every receipt verified, and there is at least one receipt.
    pub fn ok(&self) -> bool {
        self.signature_error.is_none()
            && !self.receipts.is_empty()
            && self.receipts.iter().all(|r| r.error.is_none())
    }
}

/// Verifies one bundle line offline; returns the result and, if it counts, the entry.
pub fn verify_line(config: &TrustConfig, n: usize, text: &str) -> (LineResult, Option<Entry>) {
    let mut res = LineResult {
        line: n,
        builder: None,
        outputs: Vec::new(),
        signature_error: None,
        receipts: Vec::new(),
    };
    let line: BundleLine = match serde_json::from_str(text) {
        Ok(l) => l,
        Err(e) => {
            res.signature_error = Some(format!("not a bundle line: {e}"));
            return (res, None);
        }
    };
    let entry = match Entry::parse(line.dsse_envelope.get().as_bytes()) {
        Ok(e) => e,
        Err(e) => {
            res.signature_error = Some(format!("not a provenix entry: {e}"));
            return (res, None);
        }
    };
    res.builder = Some(entry.keyid().to_owned());
    res.outputs = entry.outputs().iter().map(|o| o.path.to_string()).collect();
    res.signature_error = match config.builder(entry.keyid()) {
        None => Some(format!(
            "builder {:?} is not in the trust file",
            entry.keyid()
        )),
        Some(b) => entry
            .verify(&b.key)
            .err()
            .map(|e| format!("DSSE signature: {e}")),
    };
    let leaf = entry.leaf_hash();
    for text in &line.tlog_proofs {
        res.receipts.push(verify_receipt(config, text, &leaf));
    }
    let counts = res.ok();
    (res, counts.then_some(entry))
}

fn verify_receipt(config: &TrustConfig, text: &str, leaf: &Hash) -> ReceiptResult {
    let mut r = ReceiptResult {
        log: None,
        index: None,
        checkpoint_size: None,
        cosigners: Vec::new(),
        error: None,
    };
    let proof = match TlogProof::parse(text) {
        Ok(p) => p,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    r.index = Some(proof.index);
    let origin = proof.checkpoint.lines().next().unwrap_or_default();
    r.log = Some(origin.to_owned());
    let Some(log) = config.logs.iter().find(|l| l.key.name() == origin) else {
        r.error = Some(format!("log {origin:?} is not in the trust file"));
        return r;
    };
    match proof.verify(leaf, &log.key, &log.witnesses, log.min_witnesses) {
        Ok(v) => {
            r.checkpoint_size = Some(v.checkpoint.size());
            r.cosigners = v.cosigners.into_iter().map(|(n, _)| n).collect();
        }
        Err(e) => r.error = Some(e.to_string()),
    }
    r
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VerifyReport<'a> {
    ok: bool,
    lines: &'a [LineResult],
    decisions: Vec<&'a provenix_core::policy::Decision>,
}

/// Runs `provenix verify-receipt`; returns the exit code: 0 every line verified, 1 some did not.
pub fn verify_bundle(args: &VerifyReceiptArgs) -> anyhow::Result<u8> {
    let config = crate::substituter::load_config(&args.config)?;
    let f = std::fs::File::open(&args.bundle)
        .with_context(|| format!("cannot read {}", args.bundle.display()))?;
    let mut reader = std::io::BufReader::new(f);
    let mut results = Vec::new();
    let mut entries = Vec::new();
    let mut buf = String::new();
    let mut n = 0;
    loop {
        buf.clear();
        let read = std::io::Read::take(&mut reader, MAX_LINE_BYTES as u64 + 1)
            .read_line(&mut buf)
            .with_context(|| format!("cannot read {}", args.bundle.display()))?;
        if read == 0 {
            break;
        }
        n += 1;
        anyhow::ensure!(
            buf.len() <= MAX_LINE_BYTES || buf.ends_with('\n'),
            "{}: line {n} is longer than {MAX_LINE_BYTES} bytes",
            args.bundle.display()
        );
        if buf.trim().is_empty() {
            continue;
        }
        let (res, entry) = verify_line(&config, n, buf.trim_end());
        results.push(res);
        entries.extend(entry);
    }
    anyhow::ensure!(
        !results.is_empty(),
        "{}: no bundle lines",
        args.bundle.display()
    );
    let decisions = decide_offline(&config, &entries);
    let ok = results.iter().all(LineResult::ok);
    if args.json {
        let rep = VerifyReport {
            ok,
            lines: &results,
            decisions: decisions.iter().collect(),
        };
        println!("{}", serde_json::to_string_pretty(&rep)?);
    } else {
        for r in &results {
            let sig = match &r.signature_error {
                None => "signature ok".to_owned(),
                Some(e) => format!("signature NOT OK: {e}"),
            };
            println!(
                "line {}: entry by {} for {}: {sig}",
                r.line,
                r.builder.as_deref().unwrap_or("?"),
                r.outputs.join(", ")
            );
            if r.receipts.is_empty() {
                println!("  no receipt");
            }
            for rc in &r.receipts {
                let at = format!(
                    "{} #{}",
                    rc.log.as_deref().unwrap_or("?"),
                    rc.index.map_or("?".into(), |i| i.to_string())
                );
                match &rc.error {
                    None => println!(
                        "  receipt {at}: ok (checkpoint {}{})",
                        rc.checkpoint_size.unwrap_or_default(),
                        if rc.cosigners.is_empty() {
                            String::new()
                        } else {
                            format!(", cosigned by {}", rc.cosigners.join(", "))
                        }
                    ),
                    Some(e) => println!("  receipt {at}: NOT OK: {e}"),
                }
            }
        }
        for d in &decisions {
            print!("offline decision (receipts and signatures only): {d}");
        }
        println!(
            "{}: {} of {} line(s) verified",
            if ok { "ok" } else { "FAILED" },
            results.iter().filter(|r| r.ok()).count(),
            results.len()
        );
    }
    Ok(u8::from(!ok))
}

/// The trust policy applied to the verified entries, for each store path every one of them
/// claims (the exported path).
fn decide_offline(config: &TrustConfig, entries: &[Entry]) -> Vec<provenix_core::policy::Decision> {
    let mut common: Option<BTreeSet<StorePath>> = None;
    for e in entries {
        let paths: BTreeSet<StorePath> = e.outputs().iter().map(|o| o.path.clone()).collect();
        common = Some(match common {
            None => paths,
            Some(c) => c.intersection(&paths).cloned().collect(),
        });
    }
    let attest = crate::quorum::NoAttestationVerifier;
    let claims: Vec<Claim> = entries
        .iter()
        .filter_map(|e| Some((e, config.builder(e.keyid())?)))
        .map(|(e, b)| Claim {
            builder: e.keyid().to_owned(),
            log: "bundle".into(),
            index: None,
            outputs: e
                .outputs()
                .iter()
                .map(|o| (o.path.clone(), o.nar_hash))
                .collect::<Content>(),
            built_locally: e.statement().built_locally().unwrap_or(false),
            attestation: crate::quorum::AttestationVerifier::verify(&attest, b, e),
        })
        .collect();
    common
        .unwrap_or_default()
        .into_iter()
        .map(|path| {
            config.policy.decide(&Votes {
                path,
                claims: claims.clone(),
                rejected: Vec::new(),
                log_failures: Vec::new(),
            })
        })
        .collect()
}
