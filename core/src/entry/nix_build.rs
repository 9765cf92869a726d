//! Building a provenance statement from what a Nix build produced.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::statement::*;
use super::{ClaimedOutput, Envelope};
use crate::nix::{NarHash, NixSecretKey, StorePath};

/// One output of the build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Output name (`out`, `dev`, …).
    pub name: String,
    pub path: StorePath,
    pub nar_hash: NarHash,
    pub nar_size: Option<u64>,
    pub references: Vec<StorePath>,
}

/// An input store path the build used, with its NAR hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub path: StorePath,
    pub nar_hash: NarHash,
}

/// Where the build's expression came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub reference: Option<String>,
    pub attribute: Option<String>,
    /// Full commit hash, when known (also recorded as a resolved dependency).
    pub git_commit: Option<String>,
}

/// Everything a builder claims about one derivation build.
#[derive(Clone, Debug, Default)]
pub struct NixBuild {
    /// The builder's key name.
    pub builder: String,
    pub derivation: Option<StorePath>,
    /// SHA-256 of the `.drv` file's bytes.
    pub drv_sha256: Option<[u8; 32]>,
    pub outputs: Vec<Output>,
    pub dependencies: Vec<Dependency>,
    pub source: Option<Source>,
    /// "I built it" (true) vs "I only vouch for what I hold" (false).
    pub built_locally: bool,
    /// Builder-local monotonic counter.
    pub counter: Option<u64>,
    pub system: Option<String>,
    /// CA derivations: realisation ids `sha256:<hex>!<output>`.
    pub drv_output_ids: Vec<String>,
    /// RFC 3339 times.
    pub started_on: Option<String>,
    pub finished_on: Option<String>,
    pub byproducts: Vec<ResourceDescriptor>,
}

impl NixBuild {
    /// The in-toto statement for this build.
    pub fn to_statement(&self) -> Statement {
        let subject = self
            .outputs
            .iter()
            .map(|o| {
                let mut annotations = Map::new();
                annotations.insert("output".into(), json!(o.name));
                if let Some(size) = o.nar_size {
                    annotations.insert("narSize".into(), json!(size));
                }
                annotations.insert(
                    "references".into(),
                    json!(o
                        .references
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()),
                );
                ResourceDescriptor {
                    name: o.path.to_string(),
                    digest: [("sha256".to_owned(), o.nar_hash.to_hex())].into(),
                    annotations,
                    ..Default::default()
                }
            })
            .collect();

        let mut external = Map::new();
        if let Some(d) = &self.derivation {
            external.insert("derivation".into(), json!(d.to_string()));
        }
        if let Some(s) = &self.source {
            let mut src = Map::new();
            src.insert("uri".into(), json!(s.uri));
            if let Some(r) = &s.reference {
                src.insert("ref".into(), json!(r));
            }
            if let Some(a) = &s.attribute {
                src.insert("attribute".into(), json!(a));
            }
            external.insert("source".into(), Value::Object(src));
        }

        let mut internal = Map::new();
        internal.insert("builtLocally".into(), json!(self.built_locally));
        if let Some(c) = self.counter {
            internal.insert("counter".into(), json!(c));
        }
        if let Some(s) = &self.system {
            internal.insert("system".into(), json!(s));
        }
        if !self.drv_output_ids.is_empty() {
            internal.insert("drvOutputIds".into(), json!(self.drv_output_ids));
        }

        let mut resolved: Vec<ResourceDescriptor> = Vec::new();
        if let (Some(d), Some(h)) = (&self.derivation, &self.drv_sha256) {
            resolved.push(ResourceDescriptor {
                name: d.to_string(),
                digest: [("sha256".to_owned(), hex::encode(h))].into(),
                ..Default::default()
            });
        }
        for dep in &self.dependencies {
            resolved.push(ResourceDescriptor {
                name: dep.path.to_string(),
                digest: [("sha256".to_owned(), dep.nar_hash.to_hex())].into(),
                ..Default::default()
            });
        }
        if let Some(Source {
            uri,
            git_commit: Some(commit),
            ..
        }) = &self.source
        {
            resolved.push(ResourceDescriptor {
                uri: uri.clone(),
                digest: [("gitCommit".to_owned(), commit.clone())].into(),
                ..Default::default()
            });
        }

        Statement {
            type_: STATEMENT_TYPE.into(),
            subject,
            predicate_type: PREDICATE_TYPE.into(),
            predicate: Provenance {
                build_definition: BuildDefinition {
                    build_type: BUILD_TYPE.into(),
                    external_parameters: external,
                    internal_parameters: internal,
                    resolved_dependencies: resolved,
                },
                run_details: RunDetails {
                    builder: Builder {
                        id: format!("{BUILDER_ID_PREFIX}{}", self.builder),
                        ..Default::default()
                    },
                    metadata: BuildMetadata {
                        invocation_id: String::new(),
                        started_on: self.started_on.clone(),
                        finished_on: self.finished_on.clone(),
                    },
                    byproducts: self.byproducts.clone(),
                },
            },
        }
    }

    /// Serialises the statement and signs it with the builder key (whose name must be
    /// `self.builder`).
    pub fn sign(&self, key: &NixSecretKey) -> Envelope {
        // Serialising plain data types into a Vec cannot fail.
        let payload = serde_json::to_vec(&self.to_statement()).unwrap_or_default();
        Envelope::sign(payload, key)
    }

    /// The trace digest this build's TPM quote must carry (see [`trace_digest`]).
    pub fn trace_digest(&self) -> [u8; 32] {
        let outs: Vec<ClaimedOutput> = self
            .outputs
            .iter()
            .map(|o| ClaimedOutput {
                path: o.path.clone(),
                nar_hash: o.nar_hash,
                output: Some(o.name.clone()),
            })
            .collect();
        trace_digest(&self.builder, self.derivation.as_ref(), &outs, self.counter)
    }
}

/// SHA-256 of the domain-separated canonical text of a trace map entry (DESIGN.md §4), the
/// `extraData` of an entry's TPM quote. Outputs are sorted by store path, so the digest does not
/// depend on their order in the statement:
///
/// ```text
/// provenix-trace-v1
/// builder <key name>
/// derivation <.drv path or ->
/// output <name or -> <store path> <NAR hash hex>      (one line per output)
/// counter <decimal or ->
/// ```
pub fn trace_digest(
    builder: &str,
    derivation: Option<&StorePath>,
    outputs: &[ClaimedOutput],
    counter: Option<u64>,
) -> [u8; 32] {
    let mut outs: Vec<&ClaimedOutput> = outputs.iter().collect();
    outs.sort_by(|a, b| a.path.cmp(&b.path));
    let mut text = String::from("provenix-trace-v1\n");
    text.push_str(&format!("builder {builder}\n"));
    match derivation {
        Some(d) => text.push_str(&format!("derivation {d}\n")),
        None => text.push_str("derivation -\n"),
    }
    for o in outs {
        text.push_str(&format!(
            "output {} {} {}\n",
            o.output.as_deref().unwrap_or("-"),
            o.path,
            o.nar_hash.to_hex()
        ));
    }
    match counter {
        Some(c) => text.push_str(&format!("counter {c}\n")),
        None => text.push_str("counter -\n"),
    }
    Sha256::digest(text.as_bytes()).into()
}
