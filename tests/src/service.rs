//! Any long-running binary that prints `listening on http://ADDR` when ready.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running service, killed on drop.
#[derive(Debug)]
pub struct Service {
    pub child: Child,
    pub url: String,
    /// stdout lines printed before the listening line.
    pub banner: Vec<String>,
}

impl Service {
    /// Spawns `cmd` and waits (≤ 60 s) for its `listening on http://…` line on stdout.
    pub fn start(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut banner = Vec::new();
        let url = loop {
            assert!(Instant::now() < deadline, "{cmd:?} did not start in time");
            let Some(line) = lines.next() else {
                let status = child.wait().ok();
                panic!("{cmd:?} exited before listening ({status:?}); printed {banner:?}");
            };
            let line = line.unwrap();
            if let Some(i) = line.find("listening on ") {
                break line[i + 13..].split_whitespace().next().unwrap().to_owned();
            }
            banner.push(line);
        };
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Self { child, url, banner }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
