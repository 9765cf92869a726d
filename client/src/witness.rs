//! `provenix witness`: a C2SP tlog-witness (`POST /add-checkpoint`, Ed25519 cosignatures of
//! type 0x04) with its own state: per log origin, the latest checkpoint it cosigned.
//!
//! It cosigns a checkpoint only if the log's key signed it and it is consistent with the last
//! one it cosigned for that origin, so k witnesses' cosignatures on a checkpoint mean k parties
//! saw that tree and never a conflicting one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use provenix_core::checkpoint::{CheckpointError, LogVerifier};
use provenix_core::merkle::{self, Hash};
use provenix_core::witness::{split_note, AddCheckpoint, CosignerKey, MAX_BODY};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// `provenix witness …`
#[derive(clap::Subcommand, Debug)]
pub enum WitnessCommand {
    /// Create a cosigner key pair (the verifier key goes into logs' and users' configs).
    Keygen {
        /// The witness's name (a schema-less URL is conventional, e.g. `witness.example/w1`).
        name: String,
        /// Where to write the secret key (mode 0600, never overwritten).
        #[arg(long)]
        secret_file: PathBuf,
        /// Where to write the verifier key `NAME+HEXID+BASE64`.
        #[arg(long)]
        public_file: PathBuf,
    },
    /// Serve `POST /add-checkpoint` for the logs in the config.
    Serve {
        /// witness.toml (see docs/witness.md).
        #[arg(long)]
        config: PathBuf,
    },
}

/// `witness.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WitnessConfig {
    /// The cosigner secret key file (from `provenix witness keygen`).
    pub key_file: PathBuf,
    /// Listen address (default 127.0.0.1:37516; port 0 picks a free one and prints it).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Directory for the witness's state (`state.json`).
    pub state_dir: PathBuf,
    /// The logs this witness follows.
    #[serde(rename = "log", default)]
    pub logs: Vec<WitnessLog>,
}

/// One `[[log]]` of a witness.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessLog {
    /// The log's C2SP verifier key; its name is the log's origin.
    pub key: String,
}

fn default_listen() -> String {
    "127.0.0.1:37516".into()
}

/// What the witness remembers per origin: the latest checkpoint it cosigned.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StateFile {
    origins: BTreeMap<String, Latest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Latest {
    size: u64,
    root: Hash,
    note: String,
}

struct Witness {
    key: CosignerKey,
    logs: BTreeMap<String, LogVerifier>,
    state_file: PathBuf,
    state: Mutex<StateFile>,
}

/// Runs `provenix witness …`.
pub async fn run(cmd: WitnessCommand) -> anyhow::Result<()> {
    match cmd {
        WitnessCommand::Keygen {
            name,
            secret_file,
            public_file,
        } => {
            let k = CosignerKey::generate(&name)
                .with_context(|| format!("{name:?} is not a usable name (no spaces or '+')"))?;
            crate::keygen::create_file(&secret_file, 0o600, &k.secret_string())?;
            crate::keygen::create_file(&public_file, 0o644, &k.verifier_key())?;
            println!("{}", k.verifier_key());
            Ok(())
        }
        WitnessCommand::Serve { config } => serve(&config).await,
    }
}

/// Loads and checks a witness config.
pub fn load(
    config: &Path,
) -> anyhow::Result<(WitnessConfig, CosignerKey, BTreeMap<String, LogVerifier>)> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let cfg: WitnessConfig =
        toml::from_str(&text).with_context(|| format!("{}", config.display()))?;
    let secret = std::fs::read_to_string(&cfg.key_file)
        .with_context(|| format!("cannot read key-file {}", cfg.key_file.display()))?;
    let key = CosignerKey::from_secret(&secret).with_context(|| {
        format!(
            "{} is not a witness secret key (make one with `provenix witness keygen`)",
            cfg.key_file.display()
        )
    })?;
    let mut logs = BTreeMap::new();
    for l in &cfg.logs {
        let v: LogVerifier = l
            .key
            .parse()
            .with_context(|| format!("log key {:?}", l.key))?;
        anyhow::ensure!(
            logs.insert(v.name().to_owned(), v).is_none(),
            "two [[log]] entries for one origin"
        );
    }
    anyhow::ensure!(
        !logs.is_empty(),
        "{}: no [[log]] to witness",
        config.display()
    );
    Ok((cfg, key, logs))
}

async fn serve(config: &Path) -> anyhow::Result<()> {
    let (cfg, key, logs) = load(config)?;
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("cannot create state-dir {}", cfg.state_dir.display()))?;
    let state_file = cfg.state_dir.join("state.json");
    let state = match std::fs::read(&state_file) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is corrupt", state_file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => StateFile::default(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", state_file.display())),
    };
    let addr: SocketAddr = cfg
        .listen
        .parse()
        .with_context(|| format!("listen = {:?}", cfg.listen))?;
    let w = Arc::new(Witness {
        key,
        logs,
        state_file,
        state: Mutex::new(state),
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("provenix witness: {}", w.key.verifier_key());
    println!(
        "provenix witness: listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, router(w))
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
    Ok(())
}

fn router(w: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .with_state(w)
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    if body.len() > MAX_BODY {
        return plain(StatusCode::BAD_REQUEST, "body too large\n");
    }
    let Ok(body) = std::str::from_utf8(&body) else {
        return plain(StatusCode::BAD_REQUEST, "body is not UTF-8\n");
    };
    let req = match AddCheckpoint::parse(body) {
        Ok(r) => r,
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let origin = req.checkpoint.lines().next().unwrap_or_default().to_owned();
    let Some(log) = w.logs.get(&origin) else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("unknown log origin {origin:?}\n"),
        );
    };
    let cp = match log.verify(&req.checkpoint) {
        Ok(cp) => cp,
        Err(CheckpointError::NotSignedByLog(_) | CheckpointError::BadSignature(_)) => {
            return plain(
                StatusCode::FORBIDDEN,
                "no valid signature by the log's key\n",
            );
        }
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    if req.old_size > cp.size() {
        return plain(
            StatusCode::BAD_REQUEST,
            "old size is larger than the checkpoint\n",
        );
    }
    if req.old_size == 0 && !req.proof.is_empty() {
        return plain(
            StatusCode::BAD_REQUEST,
            "a proof from size 0 must be empty\n",
        );
    }
    // Check and update under one lock, persisting before answering (tlog-witness).
    let mut state = w.state.lock().await;
    let (have_size, have_root) = state
        .origins
        .get(&origin)
        .map_or((0, None), |l| (l.size, Some(l.root)));
    let conflict = || {
        (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "text/x.tlog.size")],
            format!("{have_size}\n"),
        )
            .into_response()
    };
    if req.old_size != have_size {
        return conflict();
    }
    if let Some(root) = have_root {
        if cp.size() == have_size {
            if *cp.root() != root {
                tracing::error!(%origin, size = have_size, "log presented two different roots for one size");
                return conflict();
            }
        } else if merkle::verify_consistency(have_size, cp.size(), &req.proof, &root, cp.root())
            .is_err()
        {
            tracing::error!(%origin, from = have_size, to = cp.size(), "inconsistent checkpoint refused");
            return plain(
                StatusCode::UNPROCESSABLE_ENTITY,
                "consistency proof does not verify\n",
            );
        }
    }
    let mut next = state.clone();
    next.origins.insert(
        origin.clone(),
        Latest {
            size: cp.size(),
            root: *cp.root(),
            note: req.checkpoint.clone(),
        },
    );
    if let Err(e) = persist(&w.state_file, &next) {
        tracing::error!(error = %e, "cannot persist witness state");
        return plain(StatusCode::SERVICE_UNAVAILABLE, "cannot persist state\n");
    }
    *state = next;
    drop(state);
    let Ok((text, _)) = split_note(&req.checkpoint) else {
        return plain(StatusCode::BAD_REQUEST, "malformed note\n");
    };
    plain(StatusCode::OK, w.key.cosign(text.as_bytes(), now()))
}

fn persist(path: &Path, state: &StateFile) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
