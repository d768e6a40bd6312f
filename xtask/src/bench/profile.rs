//! `perf record -e cpu-clock` around a measurement (`--profile`), summarised as the top symbols.
//! Profiles are taken in extra runs, never during the figures they explain.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Result;

pub struct Perf {
    child: Child,
    file: PathBuf,
}

#[must_use]
pub fn available() -> bool {
    Command::new("perf").arg("--version").output().is_ok_and(|o| o.status.success())
}

impl Perf {
    /// Starts recording `target` (`-p PID` or `-C CPU`) into `file`.
    pub fn start(target: &[String], file: PathBuf) -> Result<Self> {
        let child = Command::new("perf")
            // No build-id cache: perf would hard-link every profiled binary and library under
            // ~/.debug, and a second link to libc is exactly what the engine's multi_link rule
            // refuses for governed processes.
            .args(["record", "-q", "--no-buildid-cache", "--no-buildid", "-e", "cpu-clock", "-F", "2999", "-o"])
            .arg(&file)
            .args(target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300)); // perf attaches
        Ok(Self { child, file })
    }

    /// Stops recording (SIGINT, as Ctrl-C) and returns the top lines of `perf report` sorted by
    /// `sort` (e.g. `comm,dso,sym`).
    pub fn stop(mut self, sort: &str) -> Vec<String> {
        // SAFETY: signalling the perf process we started.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap_or(0), libc::SIGINT) };
        let _ = self.child.wait();
        let o = Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--percent-limit", "1", "--sort", sort, "-i"])
            .arg(&self.file)
            .output();
        o.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()))
                .take(25)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect()
        })
        .unwrap_or_default()
    }
}
