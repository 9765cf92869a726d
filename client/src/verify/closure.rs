//! `provenix verify --closure STOREPATH`: the trust policy at every node of a closure, and every
//! link between them (seed 003: "verify every link").
//!
//! 1. The closure is walked from the store path's references: from the local Nix store when the
//!    path is there (one `nix path-info --json --recursive`), else from the narinfos of the trust
//!    file's `[substituter] upstreams`, else from the `references` the agreeing builders' entries
//!    state (level by level, as each level is decided).
//! 2. Every node is decided by the quorum, in batches.
//! 3. For each trusted node, each agreeing builder's entry lists the dependencies its build used
//!    (`resolvedDependencies`) with the NAR hashes it saw. Each is compared with the quorum's
//!    agreed NAR hash for that dependency (dependencies outside the runtime closure are decided
//!    too): a builder that built against content the quorum does not agree on is a weak link.
//! 4. When the closure comes from the local store, each node's local NAR hash is compared with
//!    the agreed one; from upstream narinfos, their `NarHash` is.
//!
//! Weakest links, in order: nodes not trusted; nodes some agreeing builder built against a
//! dependency whose content the quorum agrees is something else; nodes whose local or upstream
//! content differs from the agreed; then dependencies the quorum cannot vouch for (not trusted,
//! no entries), which are reported but do not fail the check.
//!
//! Exit codes as `verify`: 0 every node trusted and every link agrees; 1 otherwise; 2 could
//! not decide (a log unreachable while something was not trusted, or the walk failed).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use provenix_core::nix::{NarHash, StorePath};
use provenix_core::policy::{Decision, TrustConfig};
use serde::Serialize;

use super::{EXIT_NOT_TRUSTED, EXIT_TRUSTED, EXIT_UNDECIDED};
use crate::nixstore::{NixStore, StoreLocation};
use crate::quorum::{Evidence, LogReport, Quorum};
use crate::substituter::upstream::Upstreams;

/// Most nodes walked.
pub const MAX_CLOSURE: usize = 200_000;
/// Upstream narinfos fetched at once.
const NARINFO_CONCURRENCY: usize = 32;

/// Where the references came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The local Nix store (`nix path-info --recursive`).
    LocalStore,
    /// Narinfos of the configured upstream caches.
    Upstreams,
    /// The `references` annotations of the agreeing builders' entries.
    Entries,
}

/// How one recorded dependency compares with the quorum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "status",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum LinkStatus {
    /// The builder's recorded NAR hash is the quorum-agreed one.
    Agrees,
    /// The quorum agrees on other content for that dependency.
    Disagrees { agreed: String },
    /// The quorum does not vouch for that dependency.
    Unverified { why: String },
}

/// One dependency an agreeing builder recorded for a node.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub builder: String,
    pub dependency: StorePath,
    /// The NAR hash the builder recorded.
    pub recorded: String,
    #[serde(flatten)]
    pub status: LinkStatus,
}

/// One node of the closure.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub path: StorePath,
    pub verdict: String,
    pub trusted: bool,
    pub agreed: Vec<String>,
    /// The agreed NAR hash, when trusted.
    pub nar_hash: Option<String>,
    pub references: Vec<StorePath>,
    /// What the local store (or the upstream narinfo) says its NAR hash is, when it differs
    /// from the agreed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_mismatch: Option<String>,
    pub links: Vec<Link>,
    /// Why it is not trusted (the decision's reasons).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// One weak link, for the summary.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Weakness {
    /// `not_trusted`, `dependency_disagrees`, `content_differs`, `dependency_unverified`.
    pub kind: &'static str,
    pub path: StorePath,
    pub message: String,
}

/// The whole result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClosureReport {
    pub root: StorePath,
    pub source: Source,
    pub nodes: Vec<Node>,
    pub trusted: usize,
    pub not_trusted: usize,
    pub links_checked: usize,
    pub links_disagreeing: usize,
    pub links_unverified: usize,
    pub weakest: Vec<Weakness>,
    pub logs: Vec<LogReport>,
    /// Nodes whose references are unknown (no narinfo found upstream).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unwalked: Vec<StorePath>,
}

/// What the walk found about a node before deciding.
#[derive(Clone, Debug, Default)]
struct Walked {
    references: Option<Vec<StorePath>>,
    /// The NAR hash its source states (local store or upstream narinfo).
    stated: Option<NarHash>,
}

/// Runs `verify --closure`; returns the exit code.
pub async fn run(
    root: StorePath,
    config: &TrustConfig,
    quorum: &Quorum,
    store: Option<&str>,
    json: bool,
) -> anyhow::Result<u8> {
    let mut decided: HashMap<StorePath, (Decision, Evidence)> = HashMap::new();
    let mut logs: Vec<LogReport> = Vec::new();
    let env_store = std::env::var("NIX_REMOTE").ok();
    let loc = StoreLocation::parse(store.or(env_store.as_deref()))
        .map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    let local = loc.real_path(Path::new(&root.to_string())).exists();
    let (source, walked) = if local {
        (Source::LocalStore, walk_local(loc, &root).await?)
    } else if let Some(sub) = config
        .substituter
        .as_ref()
        .filter(|s| !s.upstreams.is_empty())
    {
        let up = Upstreams::new(&sub.upstreams, sub.log_timeout).map_err(|e| anyhow::anyhow!(e))?;
        (
            Source::Upstreams,
            walk_upstreams(&up, &root, sub.log_timeout).await?,
        )
    } else {
        (
            Source::Entries,
            walk_entries(quorum, &root, &mut decided, &mut logs).await?,
        )
    };

    // Decide every node not decided during the walk.
    let todo: Vec<StorePath> = walked
        .keys()
        .filter(|p| !decided.contains_key(*p))
        .cloned()
        .collect();
    decide_into(quorum, &todo, &mut decided, &mut logs).await;

    // Dependencies recorded by agreeing builders that are not closure nodes: decide them too.
    let mut extra: BTreeSet<StorePath> = BTreeSet::new();
    for (d, ev) in decided.values() {
        for (_, deps) in agreeing_deps(d, ev) {
            for (p, _) in deps {
                if !decided.contains_key(p) {
                    extra.insert(p.clone());
                }
            }
        }
    }
    let extra: Vec<StorePath> = extra.into_iter().collect();
    decide_into(quorum, &extra, &mut decided, &mut logs).await;

    let report = assemble(root, source, &walked, &decided, logs);
    let unreachable = report.logs.iter().any(|l| {
        matches!(
            l.failure,
            Some(provenix_core::policy::LogFailureKind::Unreachable(_))
        )
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    let clean = report.not_trusted == 0
        && report.links_disagreeing == 0
        && report.nodes.iter().all(|n| n.content_mismatch.is_none());
    Ok(if clean {
        EXIT_TRUSTED
    } else if report.not_trusted > 0 && unreachable {
        if !json {
            println!("could not decide: a log was unreachable, its votes might change the answer");
        }
        EXIT_UNDECIDED
    } else {
        EXIT_NOT_TRUSTED
    })
}

async fn decide_into(
    quorum: &Quorum,
    paths: &[StorePath],
    decided: &mut HashMap<StorePath, (Decision, Evidence)>,
    logs: &mut Vec<LogReport>,
) {
    if paths.is_empty() {
        return;
    }
    let (out, lookup) = quorum.decide(paths).await;
    for (p, (d, ev)) in paths.iter().zip(out) {
        decided.insert(p.clone(), (d, ev));
    }
    logs.extend(lookup.logs);
}

/// The claims of the builders that agreed on a trusted decision: builder → recorded deps.
fn agreeing_deps<'a>(
    d: &'a Decision,
    ev: &'a Evidence,
) -> Vec<(&'a str, &'a [(StorePath, NarHash)])> {
    let Some(content) = d.trusted_outputs() else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    ev.claims
        .iter()
        .zip(&ev.claim_deps)
        .filter(|(c, _)| &c.outputs == content && d.agreed.contains(&c.builder))
        .filter(|(c, deps)| seen.insert((c.builder.as_str(), deps.as_slice())))
        .map(|(c, deps)| (c.builder.as_str(), deps.as_slice()))
        .collect()
}

async fn walk_local(
    loc: StoreLocation,
    root: &StorePath,
) -> anyhow::Result<BTreeMap<StorePath, Walked>> {
    let store = NixStore::new(loc, None);
    let r = root.clone();
    let infos = tokio::task::spawn_blocking(move || store.path_info(&[r], true))
        .await
        .context("nix path-info task")??;
    anyhow::ensure!(
        infos.len() <= MAX_CLOSURE,
        "the closure has more than {MAX_CLOSURE} paths"
    );
    Ok(infos
        .into_iter()
        .map(|(p, info)| {
            let w = match info {
                Some(i) => Walked {
                    references: Some(i.references.into_iter().filter(|r| r != &p).collect()),
                    stated: Some(i.nar_hash),
                },
                None => Walked::default(),
            };
            (p, w)
        })
        .collect())
}

async fn walk_upstreams(
    up: &Upstreams,
    root: &StorePath,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<StorePath, Walked>> {
    let mut out: BTreeMap<StorePath, Walked> = BTreeMap::new();
    let mut level = vec![root.clone()];
    out.insert(root.clone(), Walked::default());
    while !level.is_empty() {
        let fetched: Vec<(StorePath, Result<Option<_>, String>)> = futures::stream::iter(level)
            .map(|p| async move {
                let r = up.narinfo(&p.hash(), 0, timeout).await;
                (p, r)
            })
            .buffer_unordered(NARINFO_CONCURRENCY)
            .collect()
            .await;
        let mut next = Vec::new();
        for (p, r) in fetched {
            let ni = match r {
                Ok(Some(ni)) => ni,
                Ok(None) => continue,
                Err(e) => anyhow::bail!("upstream narinfo of {p}: {e}"),
            };
            let refs: Vec<StorePath> = ni
                .narinfo
                .references()
                .iter()
                .filter(|r| *r != &p)
                .cloned()
                .collect();
            for r in &refs {
                if !out.contains_key(r) {
                    out.insert(r.clone(), Walked::default());
                    next.push(r.clone());
                }
            }
            anyhow::ensure!(
                out.len() <= MAX_CLOSURE,
                "the closure has more than {MAX_CLOSURE} paths"
            );
            if let Some(w) = out.get_mut(&p) {
                w.references = Some(refs);
                w.stated = Some(*ni.narinfo.nar_hash());
            }
        }
        level = next;
    }
    Ok(out)
}

async fn walk_entries(
    quorum: &Quorum,
    root: &StorePath,
    decided: &mut HashMap<StorePath, (Decision, Evidence)>,
    logs: &mut Vec<LogReport>,
) -> anyhow::Result<BTreeMap<StorePath, Walked>> {
    let mut out: BTreeMap<StorePath, Walked> = BTreeMap::new();
    out.insert(root.clone(), Walked::default());
    let mut level: VecDeque<StorePath> = VecDeque::from([root.clone()]);
    while !level.is_empty() {
        let paths: Vec<StorePath> = level.drain(..).collect();
        decide_into(quorum, &paths, decided, logs).await;
        for p in paths {
            let Some((d, ev)) = decided.get(&p) else {
                continue;
            };
            let meta = ev.agreed_meta(d);
            // Only references the agreeing builders state: an untrusted node's are unknown.
            let refs: BTreeSet<StorePath> = meta
                .references
                .iter()
                .flatten()
                .filter(|r| *r != &p)
                .cloned()
                .collect();
            if d.is_trusted() {
                for r in &refs {
                    if !out.contains_key(r) {
                        out.insert(r.clone(), Walked::default());
                        level.push_back(r.clone());
                    }
                }
                if let Some(w) = out.get_mut(&p) {
                    w.references = Some(refs.into_iter().collect());
                }
            }
            anyhow::ensure!(
                out.len() <= MAX_CLOSURE,
                "the closure has more than {MAX_CLOSURE} paths"
            );
        }
    }
    Ok(out)
}

fn assemble(
    root: StorePath,
    source: Source,
    walked: &BTreeMap<StorePath, Walked>,
    decided: &HashMap<StorePath, (Decision, Evidence)>,
    logs: Vec<LogReport>,
) -> ClosureReport {
    let agreed_hash = |p: &StorePath| -> Result<NarHash, String> {
        match decided.get(p) {
            None => Err("not decided".into()),
            Some((d, _)) => match d.trusted_nar_hash() {
                Some(h) => Ok(*h),
                None => Err(format!("the quorum does not trust it ({})", d.verdict)),
            },
        }
    };
    let mut nodes = Vec::new();
    let mut weakest: Vec<(u8, Weakness)> = Vec::new();
    let (mut checked, mut disagreeing, mut unverified) = (0, 0, 0);
    for (path, w) in walked {
        let Some((d, ev)) = decided.get(path) else {
            continue;
        };
        let mut links = Vec::new();
        for (builder, deps) in agreeing_deps(d, ev) {
            for (dep, recorded) in deps {
                checked += 1;
                let status = match agreed_hash(dep) {
                    Ok(h) if &h == recorded => LinkStatus::Agrees,
                    Ok(h) => {
                        disagreeing += 1;
                        weakest.push((
                            1,
                            Weakness {
                                kind: "dependency_disagrees",
                                path: path.clone(),
                                message: format!(
                                    "{builder} built it against {dep} with {}, but the quorum agrees on {}",
                                    recorded.to_nix32_prefixed(),
                                    h.to_nix32_prefixed()
                                ),
                            },
                        ));
                        LinkStatus::Disagrees {
                            agreed: h.to_nix32_prefixed(),
                        }
                    }
                    Err(why) => {
                        unverified += 1;
                        weakest.push((
                            3,
                            Weakness {
                                kind: "dependency_unverified",
                                path: path.clone(),
                                message: format!("{builder} built it against {dep}: {why}"),
                            },
                        ));
                        LinkStatus::Unverified { why }
                    }
                };
                links.push(Link {
                    builder: builder.to_owned(),
                    dependency: dep.clone(),
                    recorded: recorded.to_nix32_prefixed(),
                    status,
                });
            }
        }
        let nar_hash = d.trusted_nar_hash().copied();
        let content_mismatch = match (nar_hash, w.stated) {
            (Some(agreed), Some(stated)) if agreed != stated => {
                let what = match source {
                    Source::LocalStore => "the local store holds",
                    _ => "the upstream narinfo states",
                };
                weakest.push((
                    2,
                    Weakness {
                        kind: "content_differs",
                        path: path.clone(),
                        message: format!(
                            "{what} {}, but the quorum agrees on {}",
                            stated.to_nix32_prefixed(),
                            agreed.to_nix32_prefixed()
                        ),
                    },
                ));
                Some(stated.to_nix32_prefixed())
            }
            _ => None,
        };
        let reasons: Vec<String> = if d.is_trusted() {
            Vec::new()
        } else {
            d.reasons.iter().map(ToString::to_string).collect()
        };
        if !d.is_trusted() {
            let why = reasons.last().cloned().unwrap_or_default();
            let message = match d.verdict {
                provenix_core::policy::Verdict::NotTrusted => why,
                _ => format!("{}: {why}", d.verdict),
            };
            weakest.push((
                0,
                Weakness {
                    kind: "not_trusted",
                    path: path.clone(),
                    message,
                },
            ));
        }
        nodes.push(Node {
            path: path.clone(),
            verdict: d.verdict.to_string(),
            trusted: d.is_trusted(),
            agreed: d.agreed.clone(),
            nar_hash: nar_hash.map(|h| h.to_nix32_prefixed()),
            references: w.references.clone().unwrap_or_default(),
            content_mismatch,
            links,
            reasons,
        });
    }
    weakest.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.path.cmp(&b.1.path)));
    let trusted = nodes.iter().filter(|n| n.trusted).count();
    let unwalked = walked
        .iter()
        .filter(|(_, w)| w.references.is_none())
        .map(|(p, _)| p.clone())
        .collect();
    ClosureReport {
        root,
        source,
        not_trusted: nodes.len() - trusted,
        trusted,
        nodes,
        links_checked: checked,
        links_disagreeing: disagreeing,
        links_unverified: unverified,
        weakest: weakest.into_iter().map(|(_, w)| w).collect(),
        logs,
        unwalked,
    }
}

fn print_text(r: &ClosureReport) {
    let source = match r.source {
        Source::LocalStore => "references from the local store",
        Source::Upstreams => "references from the upstream narinfos",
        Source::Entries => "references from the agreeing entries",
    };
    println!(
        "closure of {}: {} path(s) ({source})",
        r.root,
        r.nodes.len()
    );
    println!("  trusted: {}, not trusted: {}", r.trusted, r.not_trusted);
    println!(
        "  dependencies recorded by agreeing builders: {} checked, {} agree with the quorum, {} disagree, {} unverified",
        r.links_checked,
        r.links_checked - r.links_disagreeing - r.links_unverified,
        r.links_disagreeing,
        r.links_unverified
    );
    if !r.unwalked.is_empty() {
        println!(
            "  references unknown for {} path(s) (no narinfo upstream or not trusted)",
            r.unwalked.len()
        );
    }
    if r.weakest.is_empty() {
        println!("  every node trusted, every link agrees");
    } else {
        println!("weakest links:");
        for w in &r.weakest {
            let tag = match w.kind {
                "not_trusted" => "NOT TRUSTED",
                "dependency_disagrees" => "DISAGREES",
                "content_differs" => "CONTENT DIFFERS",
                _ => "unverified",
            };
            println!("  {tag} {}: {}", w.path, w.message);
        }
    }
    println!("  logs:");
    let mut seen = BTreeSet::new();
    for l in &r.logs {
        if let Some(f) = &l.failure {
            if seen.insert((l.log.clone(), f.to_string())) {
                println!("    - {}: FAILED, {f}", l.log);
            }
        } else if seen.insert((l.log.clone(), String::new())) {
            println!(
                "    - {}: ok, checkpoint size {}",
                l.log,
                l.checkpoint_size.unwrap_or_default()
            );
        }
    }
}
