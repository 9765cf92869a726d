//! What the benchmarks read about processes and files (memory and CPU from `/proc`, bytes on
//! disk; a value that cannot be read is 0), and the empty PostgreSQL database a run starts from.

use std::path::Path;

/// A `/proc/PID/status` field given in kB (`VmRSS:`, `VmHWM:`), in bytes.
pub fn status_bytes(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Two clock-tick fields of a `/proc/.../stat` file (numbered from the first after the command
/// name), summed, in seconds.
fn stat_secs(path: &str, a: usize, b: usize) -> f64 {
    let Ok(s) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(a) + get(b)) / 100.0
}

/// utime + stime of a process, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    stat_secs(&format!("/proc/{pid}/stat"), 11, 12)
}

/// CPU seconds (user + system) of this process's children that have been waited for
/// (`cutime` + `cstime` in `/proc/self/stat`, 10 ms resolution).
pub fn children_cpu_secs() -> f64 {
    stat_secs("/proc/self/stat", 13, 14)
}

/// Bytes of the files under `p`, recursively.
pub fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Drops and creates database `name` on the server of `admin` (a URL to its `postgres`
/// database); returns the URL of the new one. `name` is one of the benchmarks' own constants.
pub async fn fresh_database(admin: &str, name: &str) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    let mut c = sqlx::PgConnection::connect(admin).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut c)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await?;
    Ok(admin.replacen("/postgres?", &format!("/{name}?"), 1))
}
