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

/// Field `i` of a `/proc/.../stat` line, numbered from the first after the command name (0 is
/// the state, 1 the parent pid). The command name may hold spaces and parentheses, so fields
/// are counted from the last `)`.
fn stat_field(stat: &str, i: usize) -> Option<&str> {
    stat.rsplit_once(')')?.1.split_whitespace().nth(i)
}

/// Two clock-tick fields of a `/proc/.../stat` file (numbered as in [`stat_field`]), summed,
/// in seconds.
fn stat_secs(path: &str, a: usize, b: usize) -> f64 {
    let Ok(s) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let get = |i: usize| {
        stat_field(&s, i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get(a) + get(b)) / 100.0
}

/// The parent pid in a `/proc/PID/stat` line.
fn parent(stat: &str) -> Option<u32> {
    stat_field(stat, 1)?.parse().ok()
}

/// The pids of this process's children: every process whose `/proc/PID/stat` names this one as
/// its parent. A process that is gone by the time it is read is skipped.
pub fn children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(p.path().join("stat")).ok()?;
            (parent(&stat) == Some(me)).then_some(pid)
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::{children, parent};

    #[test]
    fn parent_pid_from_a_stat_line() {
        assert_eq!(parent("42 (nginx) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent("42 (a b) c) (d) R 1234 1 1"), Some(1234));
        assert_eq!(parent("42 (nginx"), None);
        assert_eq!(parent("42 (x) S"), None);
    }

    #[test]
    fn this_process_is_its_childs_parent() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        assert_eq!(parent(&stat), Some(std::process::id()));
        assert!(children().contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
