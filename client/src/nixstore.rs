//! Querying the builder's Nix store for what an entry claims.
//!
//! - `.drv` files are read directly (their SHA-256 is of the file bytes) and parsed with the
//!   `nix-derivation` crate: outputs, input derivations and sources, system.
//! - NAR hashes, sizes and references come from one `nix path-info --json --recursive` call per
//!   batch of builds (the SRI `sha256-<base64>` there is converted to the entry's hex). The
//!   input closure of each build is then walked in process from those references.
//!
//! What the store says is trusted: it is the builder's own store, and the entry is this
//! builder's claim about it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;

use nix_derivation::{Derivation, Output as DrvOutput};
use provenix_core::entry::{Dependency, Output};
use provenix_core::nix::{NarHash, StorePath};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Largest `.drv` file read (Nix has no limit; real ones are far smaller).
const MAX_DRV_BYTES: u64 = 64 << 20;
/// Store paths per `nix path-info` call (keeps the command line well under ARG_MAX).
const PATHS_PER_CALL: usize = 4000;

/// Why the store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NixStoreError {
    #[error("store {0:?} is not supported: push reads .drv files directly, so it needs a local store (daemon, local, local?root=DIR or an absolute path)")]
    UnsupportedStore(String),
    #[error("cannot run {cmd}: {message}")]
    Spawn { cmd: String, message: String },
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("cannot parse the output of {cmd}: {message}")]
    Output { cmd: String, message: String },
}

/// Where a store's files are on this machine, from a store URI as in `$NIX_REMOTE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLocation {
    uri: Option<String>,
    root: PathBuf,
}

impl StoreLocation {
    /// Accepts Nix's default store (`None`, `auto`, `daemon`, `unix://…`, `local`) and chroot
    /// stores (`local?root=DIR`, or an absolute path, which Nix reads the same way).
    pub fn parse(uri: Option<&str>) -> Result<Self, NixStoreError> {
        let unsupported = || NixStoreError::UnsupportedStore(uri.unwrap_or_default().to_owned());
        let root = match uri.map(str::trim) {
            None | Some("" | "auto" | "daemon" | "local") => PathBuf::from("/"),
            Some(u) if u.starts_with("unix://") => PathBuf::from("/"),
            Some(u) if u.starts_with('/') => PathBuf::from(u.split('?').next().unwrap_or(u)),
            Some(u) => {
                let params = u.strip_prefix("local?").ok_or_else(unsupported)?;
                let mut root = PathBuf::from("/");
                for kv in params.split('&') {
                    match kv.split_once('=') {
                        Some(("root", r)) if r.starts_with('/') && !r.contains('%') => {
                            root = PathBuf::from(r);
                        }
                        Some(("store" | "real" | "root", _)) => return Err(unsupported()),
                        _ => {}
                    }
                }
                root
            }
        };
        Ok(Self {
            uri: uri.map(str::to_owned).filter(|u| !u.trim().is_empty()),
            root,
        })
    }

    /// The store URI to hand to `nix` as `NIX_REMOTE` (`None`: Nix's default).
    pub fn uri(&self) -> Option<&str> {
        self.uri.as_deref()
    }

    /// Where the logical path `p` (e.g. `/nix/store/…`) is on this machine.
    pub fn real_path(&self, p: &Path) -> PathBuf {
        self.root.join(p.strip_prefix("/").unwrap_or(p))
    }
}

/// A store path's metadata as `nix path-info` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub nar_hash: NarHash,
    pub nar_size: u64,
    pub references: Vec<StorePath>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPathInfo {
    path: String,
    #[serde(default)]
    valid: Option<bool>,
    #[serde(default)]
    nar_hash: Option<String>,
    #[serde(default)]
    nar_size: Option<u64>,
    #[serde(default)]
    references: Vec<String>,
}

/// A parsed `.drv` and the SHA-256 of its file.
#[derive(Debug, Clone)]
pub struct DrvFile {
    pub sha256: [u8; 32],
    pub drv: Derivation,
}

/// What one build is about, before signing: everything the entry says but counter and times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildFacts {
    pub derivation: StorePath,
    pub drv_sha256: [u8; 32],
    pub system: String,
    /// Sorted by output name.
    pub outputs: Vec<Output>,
    /// The build's input closure (input sources and the used outputs of input derivations,
    /// with everything they reference), sorted by path.
    pub dependencies: Vec<Dependency>,
    /// The direct inputs only (a subset of `dependencies`), sorted by path.
    pub direct_inputs: Vec<StorePath>,
}

/// Why one build could not be described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    /// The store will never be able to answer (derivation or output gone, unsupported kind):
    /// the record goes to `failed/`.
    #[error("{0}")]
    Permanent(String),
    /// The store could not answer now; try again later.
    #[error("{0}")]
    Transient(String),
}

/// One Nix store, queried with `nix` and by reading files.
#[derive(Debug, Clone)]
pub struct NixStore {
    loc: StoreLocation,
    nix: PathBuf,
}

fn to_core(p: &nix_derivation::StorePath) -> Result<StorePath, String> {
    let s = p.to_absolute_path();
    s.parse()
        .map_err(|e| format!("store path {s:?} in derivation: {e}"))
}

impl NixStore {
    /// A store at `loc`, queried with the `nix` binary in `bin_dir` (or on `PATH`).
    pub fn new(loc: StoreLocation, bin_dir: Option<&Path>) -> Self {
        Self {
            loc,
            nix: bin_dir.map_or_else(|| PathBuf::from("nix"), |d| d.join("nix")),
        }
    }

    /// The store's location.
    pub fn location(&self) -> &StoreLocation {
        &self.loc
    }

    /// Reads and parses a `.drv` file. `Ok(None)` if it is not there.
    pub fn read_drv(&self, path: &StorePath) -> Result<Option<DrvFile>, String> {
        let real = self.loc.real_path(Path::new(&path.to_string()));
        let f = match std::fs::File::open(&real) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", real.display())),
        };
        let mut bytes = Vec::new();
        f.take(MAX_DRV_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {}: {e}", real.display()))?;
        if bytes.len() as u64 > MAX_DRV_BYTES {
            return Err(format!("{path} is larger than {MAX_DRV_BYTES} bytes"));
        }
        let name = path.name().strip_suffix(".drv").unwrap_or(path.name());
        let drv = Derivation::from_aterm_bytes(&bytes, name)
            .map_err(|e| format!("{path} does not parse as a derivation: {e}"))?;
        Ok(Some(DrvFile {
            sha256: Sha256::digest(&bytes).into(),
            drv,
        }))
    }

    /// `nix path-info --json [--recursive] PATHS`: metadata per path; `None` for a path that
    /// is not valid in the store (only reported without `--recursive`, which fails instead).
    pub fn path_info(
        &self,
        paths: &[StorePath],
        recursive: bool,
    ) -> Result<BTreeMap<StorePath, Option<PathInfo>>, NixStoreError> {
        let mut out = BTreeMap::new();
        for chunk in paths.chunks(PATHS_PER_CALL) {
            self.path_info_call(chunk, recursive, &mut out)?;
        }
        Ok(out)
    }

    fn path_info_call(
        &self,
        paths: &[StorePath],
        recursive: bool,
        out: &mut BTreeMap<StorePath, Option<PathInfo>>,
    ) -> Result<(), NixStoreError> {
        if paths.is_empty() {
            return Ok(());
        }
        let cmd_name = format!(
            "{} path-info --json{}",
            self.nix.display(),
            if recursive { " --recursive" } else { "" }
        );
        let mut cmd = Command::new(&self.nix);
        cmd.args([
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
        ]);
        if recursive {
            cmd.arg("--recursive");
        }
        cmd.args(paths.iter().map(ToString::to_string));
        if let Some(uri) = self.loc.uri() {
            cmd.env("NIX_REMOTE", uri);
        }
        cmd.stdin(Stdio::null());
        let o = cmd.output().map_err(|e| NixStoreError::Spawn {
            cmd: cmd_name.clone(),
            message: e.to_string(),
        })?;
        if !o.status.success() {
            let stderr = String::from_utf8_lossy(&o.stderr);
            let stderr: String = stderr.trim().chars().take(2000).collect();
            return Err(NixStoreError::Command {
                cmd: cmd_name,
                status: o.status.to_string(),
                stderr,
            });
        }
        let bad = |message: String| NixStoreError::Output {
            cmd: cmd_name.clone(),
            message,
        };
        let raw: Vec<RawPathInfo> =
            serde_json::from_slice(&o.stdout).map_err(|e| bad(e.to_string()))?;
        for r in raw {
            let path: StorePath = r
                .path
                .parse()
                .map_err(|e| bad(format!("path {:?}: {e}", r.path)))?;
            if r.valid == Some(false) {
                out.insert(path, None);
                continue;
            }
            let nar_hash: NarHash = r
                .nar_hash
                .as_deref()
                .ok_or_else(|| bad(format!("{path}: no narHash")))?
                .parse()
                .map_err(|e| bad(format!("{path}: narHash: {e}")))?;
            let nar_size = r
                .nar_size
                .ok_or_else(|| bad(format!("{path}: no narSize")))?;
            let mut references = r
                .references
                .iter()
                .map(|s| s.parse::<StorePath>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("{path}: reference: {e}")))?;
            references.sort();
            out.insert(
                path,
                Some(PathInfo {
                    nar_hash,
                    nar_size,
                    references,
                }),
            );
        }
        Ok(())
    }

    /// Describes a batch of builds (derivation path and, when Nix gave them, `OUT_PATHS`) with
    /// as few `nix` calls as possible: normally one.
    pub fn describe(
        &self,
        builds: &[(StorePath, Vec<StorePath>)],
    ) -> Vec<Result<BuildFacts, FactsError>> {
        let mut drvs: HashMap<StorePath, Result<Option<Rc<DrvFile>>, String>> = HashMap::new();
        let mut read = |p: &StorePath| -> Result<Option<Rc<DrvFile>>, String> {
            drvs.entry(p.clone())
                .or_insert_with(|| self.read_drv(p).map(|o| o.map(Rc::new)))
                .clone()
        };
        // 1. Derivations: outputs and direct inputs, from the .drv files.
        let mut plans: Vec<Result<Plan, FactsError>> = builds
            .iter()
            .map(|(drv_path, out_paths)| plan(drv_path, out_paths, &mut read))
            .collect();

        // 2. One recursive path-info over every output and direct input of the batch.
        let mut roots: BTreeSet<StorePath> = BTreeSet::new();
        for p in plans.iter().flatten() {
            roots.extend(p.outputs.iter().map(|(_, path)| path.clone()));
            roots.extend(p.inputs.iter().cloned());
        }
        let roots: Vec<StorePath> = roots.into_iter().collect();
        let infos = match self.path_info(&roots, true) {
            Ok(m) => m,
            Err(first) => {
                // Find paths that are gone, fail only the builds that need them, retry the rest.
                let invalid: BTreeSet<StorePath> = match self.path_info(&roots, false) {
                    Ok(m) => m
                        .into_iter()
                        .filter_map(|(p, i)| i.is_none().then_some(p))
                        .collect(),
                    Err(e) => return transient_all(builds.len(), &e),
                };
                if invalid.is_empty() {
                    return transient_all(builds.len(), &first);
                }
                for p in &mut plans {
                    let gone = p.as_ref().ok().and_then(|plan| {
                        plan.paths()
                            .find(|x| invalid.contains(*x))
                            .map(|g| format!(
                                "{g} is not valid in the store (garbage-collected?): cannot describe the build of {}",
                                plan.derivation
                            ))
                    });
                    if let Some(msg) = gone {
                        *p = Err(FactsError::Permanent(msg));
                    }
                }
                let roots: Vec<StorePath> =
                    roots.into_iter().filter(|r| !invalid.contains(r)).collect();
                match self.path_info(&roots, true) {
                    Ok(m) => m,
                    Err(e) => return transient_all(builds.len(), &e),
                }
            }
        };

        // 3. Per build: outputs with their info, and the input closure walked from references.
        plans
            .into_iter()
            .map(|p| p.and_then(|plan| facts(plan, &infos)))
            .collect()
    }
}

fn transient_all(n: usize, e: &NixStoreError) -> Vec<Result<BuildFacts, FactsError>> {
    (0..n)
        .map(|_| Err(FactsError::Transient(e.to_string())))
        .collect()
}

struct Plan {
    derivation: StorePath,
    drv_sha256: [u8; 32],
    system: String,
    outputs: Vec<(String, StorePath)>,
    inputs: BTreeSet<StorePath>,
}

impl Plan {
    fn paths(&self) -> impl Iterator<Item = &StorePath> {
        self.outputs
            .iter()
            .map(|(_, p)| p)
            .chain(self.inputs.iter())
    }
}

fn plan(
    drv_path: &StorePath,
    out_paths: &[StorePath],
    read: &mut impl FnMut(&StorePath) -> Result<Option<Rc<DrvFile>>, String>,
) -> Result<Plan, FactsError> {
    let perm = FactsError::Permanent;
    let file = read(drv_path)
        .map_err(FactsError::Transient)?
        .ok_or_else(|| perm(format!("{drv_path} is not in the store")))?;
    let drv = &file.drv;
    let mut outputs = Vec::new();
    for (name, out) in drv.outputs() {
        if matches!(out, DrvOutput::Deferred | DrvOutput::Impure { .. }) {
            return Err(perm(format!(
                "{drv_path}: output {name} is deferred or impure: not supported"
            )));
        }
        let path = match out
            .path(drv.name(), name)
            .map_err(|e| perm(format!("{drv_path}: output {name}: {e}")))?
        {
            Some(p) => to_core(&p).map_err(perm)?,
            None => {
                // Floating content-addressed output: only OUT_PATHS (Nix >= 2.8.1) says where.
                let want = if name == "out" {
                    drv.name().to_owned()
                } else {
                    format!("{}-{name}", drv.name())
                };
                let found: Vec<&StorePath> =
                    out_paths.iter().filter(|p| p.name() == want).collect();
                match found.as_slice() {
                    [p] => (*p).clone(),
                    _ => {
                        return Err(perm(format!(
                            "{drv_path}: output {name} is content-addressed and OUT_PATHS does not name it (Nix 2.8.0 never fills OUT_PATHS)"
                        )))
                    }
                }
            }
        };
        outputs.push((name.clone(), path));
    }
    let mut inputs: BTreeSet<StorePath> = BTreeSet::new();
    for src in drv.input_sources() {
        inputs.insert(to_core(src).map_err(perm)?);
    }
    for (input_drv, wanted) in drv.input_derivations() {
        let input_path = to_core(input_drv).map_err(perm)?;
        let input = read(&input_path)
            .map_err(FactsError::Transient)?
            .ok_or_else(|| perm(format!("input derivation {input_path} is not in the store")))?;
        for out_name in wanted.outputs() {
            let out = input.drv.outputs().get(out_name).ok_or_else(|| {
                perm(format!(
                    "{drv_path} uses output {out_name} of {input_path}, which has no such output"
                ))
            })?;
            let p = out
                .path(input.drv.name(), out_name)
                .map_err(|e| perm(format!("{input_path}: output {out_name}: {e}")))?
                .ok_or_else(|| {
                    perm(format!(
                        "{drv_path} uses {input_path}!{out_name}, a content-addressed output: not supported yet"
                    ))
                })?;
            inputs.insert(to_core(&p).map_err(perm)?);
        }
    }
    Ok(Plan {
        derivation: drv_path.clone(),
        drv_sha256: file.sha256,
        system: drv.system().to_owned(),
        outputs,
        inputs,
    })
}

fn facts(
    plan: Plan,
    infos: &BTreeMap<StorePath, Option<PathInfo>>,
) -> Result<BuildFacts, FactsError> {
    let info = |p: &StorePath| -> Result<&PathInfo, FactsError> {
        infos
            .get(p)
            .and_then(Option::as_ref)
            .ok_or_else(|| FactsError::Transient(format!("nix path-info did not report {p}")))
    };
    let mut outputs = Vec::with_capacity(plan.outputs.len());
    for (name, path) in &plan.outputs {
        let i = info(path)?;
        outputs.push(Output {
            name: name.clone(),
            path: path.clone(),
            nar_hash: i.nar_hash,
            nar_size: Some(i.nar_size),
            references: i.references.clone(),
        });
    }
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    let mut closure: BTreeMap<StorePath, NarHash> = BTreeMap::new();
    let mut todo: Vec<StorePath> = plan.inputs.iter().cloned().collect();
    while let Some(p) = todo.pop() {
        if closure.contains_key(&p) {
            continue;
        }
        let i = info(&p)?;
        closure.insert(p, i.nar_hash);
        todo.extend(
            i.references
                .iter()
                .filter(|r| !closure.contains_key(*r))
                .cloned(),
        );
    }
    Ok(BuildFacts {
        derivation: plan.derivation,
        drv_sha256: plan.drv_sha256,
        system: plan.system,
        outputs,
        dependencies: closure
            .into_iter()
            .map(|(path, nar_hash)| Dependency { path, nar_hash })
            .collect(),
        direct_inputs: plan.inputs.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn store_locations() {
        let root = |u: Option<&str>| {
            StoreLocation::parse(u)
                .unwrap()
                .real_path(Path::new("/nix/store/x"))
        };
        assert_eq!(root(None), Path::new("/nix/store/x"));
        assert_eq!(root(Some("daemon")), Path::new("/nix/store/x"));
        assert_eq!(
            root(Some("unix:///nix/var/nix/daemon-socket/socket")),
            Path::new("/nix/store/x")
        );
        assert_eq!(
            root(Some("local?root=/tmp/b")),
            Path::new("/tmp/b/nix/store/x")
        );
        assert_eq!(root(Some("/tmp/c")), Path::new("/tmp/c/nix/store/x"));
        assert_eq!(
            StoreLocation::parse(Some("local?root=/tmp/b"))
                .unwrap()
                .uri(),
            Some("local?root=/tmp/b")
        );
        assert_eq!(StoreLocation::parse(None).unwrap().uri(), None);
        for bad in [
            "ssh://h",
            "http://h",
            "local?store=/x",
            "local?root=rel",
            "file:///x",
        ] {
            assert_eq!(
                StoreLocation::parse(Some(bad)).unwrap_err(),
                NixStoreError::UnsupportedStore(bad.into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn reads_a_real_derivation_file() {
        // A .drv that Nix 2.8 wrote on this machine (see NIX-FACTS.md for how to build it).
        let text = r#"Derive([("out","/nix/store/ah5bz1dcwprp4q1mn4w2dads8b172lfr-top-x1","","")],[("/nix/store/9ryzmcinnk52fqhivbbvrzih7admilyc-dep-x1.drv",["out"])],[],"x86_64-linux","/bin/sh",["-c","read x < /nix/store/4m30d0hymh8k5jfnj6mn4ifm8jkih49r-dep-x1; echo $x /nix/store/4m30d0hymh8k5jfnj6mn4ifm8jkih49r-dep-x1 > $out"],[("builder","/bin/sh"),("name","top-x1"),("out","/nix/store/ah5bz1dcwprp4q1mn4w2dads8b172lfr-top-x1"),("system","x86_64-linux")])"#;
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("nix/store");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(
            store.join("92wwbnb2x9qbsi4lyajmkzmz0ypak6ki-top-x1.drv"),
            text,
        )
        .unwrap();
        let loc =
            StoreLocation::parse(Some(&format!("local?root={}", dir.path().display()))).unwrap();
        let s = NixStore::new(loc, None);
        let p: StorePath = "/nix/store/92wwbnb2x9qbsi4lyajmkzmz0ypak6ki-top-x1.drv"
            .parse()
            .unwrap();
        let f = s.read_drv(&p).unwrap().unwrap();
        assert_eq!(f.sha256, <[u8; 32]>::from(Sha256::digest(text.as_bytes())));
        assert_eq!(f.drv.system(), "x86_64-linux");
        let missing: StorePath = "/nix/store/92wwbnb2x9qbsi4lyajmkzmz0ypak6ki-other.drv"
            .parse()
            .unwrap();
        assert!(s.read_drv(&missing).unwrap().is_none());
        // The input derivation is missing: a permanent failure naming it.
        let r = plan(&p, &[], &mut |q| s.read_drv(q).map(|o| o.map(Rc::new)));
        assert_eq!(
            r.err(),
            Some(FactsError::Permanent(
                "input derivation /nix/store/9ryzmcinnk52fqhivbbvrzih7admilyc-dep-x1.drv is not in the store".into()
            ))
        );
    }
}
