//! PostgreSQL for tests: the README's test command starts one server and exports
//! `PROVENIX_TEST_PG` (a URL to a database with CREATE DATABASE rights); each test gets a
//! fresh database of its own.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection as _;

/// A throwaway database, dropped with the value.
#[derive(Debug)]
pub struct PgDb {
    pub url: String,
    admin_url: String,
    name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The admin URL, or `None` (after printing why) when PostgreSQL tests cannot run here.
/// In CI (`PROVENIX_CI=1`) a missing server is a failure.
pub fn admin_url() -> Option<String> {
    match std::env::var("PROVENIX_TEST_PG") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                !crate::ci(),
                "PROVENIX_TEST_PG must be set in CI (the test script starts PostgreSQL)"
            );
            eprintln!(
                "SKIP: PROVENIX_TEST_PG not set; run the README's test command to start PostgreSQL"
            );
            None
        }
    }
}

/// Replaces the database name in a postgres URL.
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl PgDb {
    /// Creates a fresh database; `None` if PostgreSQL is not available (outside CI).
    pub async fn create() -> Option<Self> {
        let admin_url = admin_url()?;
        let name = format!(
            "provenix_t{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let mut c = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to PROVENIX_TEST_PG: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .expect("create database");
        Some(Self {
            url: with_db(&admin_url, &name),
            admin_url,
            name,
        })
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        // Best effort, on a thread of its own (Drop may run inside or outside a runtime).
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                }
            });
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn db_name_is_replaced() {
        assert_eq!(
            super::with_db("postgres://u@h/postgres?host=/tmp/x", "d"),
            "postgres://u@h/d?host=/tmp/x"
        );
        assert_eq!(
            super::with_db("postgres://u:p@h:5/postgres", "d"),
            "postgres://u:p@h:5/d"
        );
    }
}

/// A private PostgreSQL cluster on a unix socket in a temp dir (benchmarks, fault tests, local
/// runs), stopped on drop. Runs the server as the `postgres` user when we are root (initdb
/// refuses root). [`PgCluster::stop`] and [`PgCluster::start_again`] take it down and bring it
/// back on the same socket, for tests of a database outage.
#[derive(Debug)]
pub struct PgCluster {
    pub url: String,
    /// Extra `-c name=value` settings the server runs with.
    settings: Vec<String>,
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    as_postgres: bool,
}

fn pg_bin() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

impl PgCluster {
    /// Starts a cluster; `None` if PostgreSQL's binaries are not installed.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// Starts a cluster whose server runs with these extra settings (`"shared_buffers=2GB"`).
    pub fn start_with(settings: &[&str]) -> Option<Self> {
        let bin = pg_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("provenix-pg")
            .tempdir()
            .ok()?
            .keep();
        let as_postgres = unsafe_free_is_root();
        if as_postgres {
            std::process::Command::new("chown")
                .arg("postgres:")
                .arg(&dir)
                .status()
                .ok()?;
        }
        let sock = dir.to_str()?.to_owned();
        let c = Self {
            url: format!("postgres://postgres@localhost/postgres?host={sock}"),
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            dir,
            bin,
            as_postgres,
        };
        let data = c.dir.join("data");
        if !c.run(&[
            "initdb",
            "-D",
            data.to_str()?,
            "-A",
            "trust",
            "-U",
            "postgres",
        ]) {
            return None;
        }
        c.start_again().then_some(c)
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when we are root); whether it succeeded.
    fn run(&self, args: &[&str]) -> bool {
        use std::process::Command;
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c.arg(self.bin.join(args[0]));
            c
        } else {
            Command::new(self.bin.join(args[0]))
        };
        c.args(&args[1..]);
        c.stdout(std::process::Stdio::null());
        c.status().map(|s| s.success()).unwrap_or(false)
    }

    /// (Re)starts the server on the cluster's socket and waits until it accepts connections;
    /// whether that worked.
    pub fn start_again(&self) -> bool {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let mut opts = format!(
            "-k {} -c listen_addresses='' -c max_connections=300",
            self.dir.display()
        );
        for s in &self.settings {
            opts.push_str(&format!(" -c {s}"));
        }
        self.run(&[
            "pg_ctl",
            "-D",
            &data.to_string_lossy(),
            "-l",
            &log.to_string_lossy(),
            "-w",
            "-o",
            &opts,
            "start",
        ])
    }

    /// Stops the server: `mode` is pg_ctl's `-m` (`fast`: disconnects clients and shuts down
    /// cleanly; `immediate`: quits at once, as a crash, and recovers from the WAL on the next
    /// start). Whether that worked.
    pub fn stop(&self, mode: &str) -> bool {
        let data = self.dir.join("data");
        self.run(&[
            "pg_ctl",
            "-D",
            &data.to_string_lossy(),
            "-m",
            mode,
            "-w",
            "stop",
        ])
    }
}

fn unsafe_free_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
