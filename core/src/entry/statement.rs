//! in-toto Statement v1 with a SLSA Provenance v1 predicate, modelled strictly: every field the
//! specifications define, nothing else, so that what we accept also parses under
//! in-toto-attestation's strict model. Free-form structs (`externalParameters`,
//! `internalParameters`, `annotations`) are JSON objects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// `predicateType` of SLSA Provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// provenix's `buildType` for a Nix derivation build (documented in `docs/build-type.md`).
pub const BUILD_TYPE: &str = "https://provenix.dev/nix-build/v1";
/// Prefix of `runDetails.builder.id`; the builder's key name follows.
pub const BUILDER_ID_PREFIX: &str = "https://provenix.dev/builder/";
/// Name of the byproduct holding a TPM 2.0 quote.
pub const TPM_QUOTE_BYPRODUCT: &str = "tpm2-quote";

/// An in-toto Statement v1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: Provenance,
}

/// in-toto ResourceDescriptor v1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ResourceDescriptor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    /// Base64 (standard) bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub download_location: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
}

/// SLSA Provenance v1 predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Provenance {
    pub build_definition: BuildDefinition,
    pub run_details: RunDetails,
}

/// SLSA BuildDefinition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BuildDefinition {
    pub build_type: String,
    pub external_parameters: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub internal_parameters: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_dependencies: Vec<ResourceDescriptor>,
}

/// SLSA RunDetails.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunDetails {
    pub builder: Builder,
    #[serde(default, skip_serializing_if = "BuildMetadata::is_empty")]
    pub metadata: BuildMetadata,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub byproducts: Vec<ResourceDescriptor>,
}

/// SLSA Builder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Builder {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub version: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builder_dependencies: Vec<ResourceDescriptor>,
}

/// SLSA BuildMetadata. Times are RFC 3339 (`2026-11-21T23:25:15Z`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BuildMetadata {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub invocation_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_on: Option<String>,
}

impl BuildMetadata {
    fn is_empty(&self) -> bool {
        self.invocation_id.is_empty() && self.started_on.is_none() && self.finished_on.is_none()
    }
}

/// Whether `s` looks like an RFC 3339 UTC/offset timestamp as protobuf's JSON mapping accepts.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && {
            let mut rest = &s[19..];
            if let Some(frac) = rest.strip_prefix('.') {
                let n = frac.bytes().take_while(u8::is_ascii_digit).count();
                if !(1..=9).contains(&n) {
                    return false;
                }
                rest = &frac[n..];
            }
            rest == "Z"
                || (rest.len() == 6
                    && (rest.starts_with('+') || rest.starts_with('-'))
                    && rest.as_bytes()[3] == b':')
        }
}

impl Statement {
    /// `internalParameters.builtLocally`, if present and boolean.
    pub fn built_locally(&self) -> Option<bool> {
        self.predicate
            .build_definition
            .internal_parameters
            .get("builtLocally")
            .and_then(Value::as_bool)
    }

    /// `internalParameters.counter`, if present.
    pub fn counter(&self) -> Option<u64> {
        self.predicate
            .build_definition
            .internal_parameters
            .get("counter")
            .and_then(Value::as_u64)
    }

    /// `externalParameters.derivation`, if present.
    pub fn derivation(&self) -> Option<&str> {
        self.predicate
            .build_definition
            .external_parameters
            .get("derivation")
            .and_then(Value::as_str)
    }

    /// `internalParameters.drvOutputIds` (CA realisation ids), if present.
    pub fn drv_output_ids(&self) -> Vec<&str> {
        self.predicate
            .build_definition
            .internal_parameters
            .get("drvOutputIds")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// The builder id.
    pub fn builder_id(&self) -> &str {
        &self.predicate.run_details.builder.id
    }
}
