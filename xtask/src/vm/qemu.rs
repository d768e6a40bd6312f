//! Boots one guest under QEMU (TCG), captures its serial console to a log file, and reads the
//! lines `/init` prints about the run.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

pub struct Boot<'a> {
    pub name: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub append: String,
    pub log: &'a Path,
    pub timeout: Duration,
    /// Echo every console line (boot included); otherwise only what follows `/init`'s start.
    pub verbose: bool,
}

#[derive(Default, Debug)]
pub struct Outcome {
    /// `MCPG-VM-RESULT rc=N`
    pub rc: Option<i32>,
    pub lsm: Option<String>,
    pub kernel_release: Option<String>,
    /// Guest uptime (s) when the tests started / ended.
    pub up_start: Option<f64>,
    pub up_end: Option<f64>,
    /// From libtest's `test result:` line.
    pub passed: Option<u32>,
    pub failed: Option<u32>,
    pub timed_out: bool,
    /// QEMU's own exit status (None if killed).
    pub qemu_status: Option<i32>,
    pub wall: Duration,
    /// The last console lines (for a failure report).
    pub tail: Vec<String>,
    pub failures: Vec<String>,
    /// `MCPG-VM-WARN ...` lines from `/init` (a mount that failed).
    pub warnings: Vec<String>,
    /// `MCPG-VM-DIST ok` / `MCPG-VM-DIST FAIL why`: the release binary's smoke run.
    pub dist: Option<Result<(), String>>,
}

pub fn qemu_command(b: &Boot<'_>) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg", "-cpu", "max", "-m", "1024", "-smp", "1", "-nic", "none"])
        .args(["-nographic", "-no-reboot", "-monitor", "none", "-serial", "stdio"])
        .arg("-kernel")
        .arg(b.kernel)
        .arg("-initrd")
        .arg(b.initrd)
        .arg("-append")
        .arg(&b.append);
    c
}

pub fn boot(b: &Boot<'_>) -> Result<Outcome> {
    let mut o = Outcome::default();
    let mut in_tests = false;
    let mut in_failures = false;
    let run = run_console(qemu_command(b), b.log, b.timeout, 60, |t, line| {
        if b.verbose || in_tests || line.starts_with("[qemu") {
            eprintln!("[{} {:>4.0}s] {line}", b.name, t.as_secs_f64());
        }
        parse_line(line, &mut o, &mut in_tests, &mut in_failures);
    })?;
    o.timed_out = run.timed_out;
    o.qemu_status = run.status;
    o.wall = run.wall;
    o.tail = run.tail;
    Ok(o)
}

/// How a [`run_console`] ended.
pub struct Console {
    pub timed_out: bool,
    /// QEMU's exit status (None if killed).
    pub status: Option<i32>,
    pub wall: Duration,
    /// The last console lines.
    pub tail: Vec<String>,
}

/// Runs `cmd` (QEMU with the serial console on stdout) until it exits or `timeout` passes (then
/// kills it: our own child). Every console line, without control sequences, goes to `log` and to
/// `line` with the time since the start; stderr lines as `[qemu stderr] ...`. Keeps the last
/// `tail` lines.
pub fn run_console(
    mut cmd: Command,
    log: &Path,
    timeout: Duration,
    tail: usize,
    mut line: impl FnMut(Duration, &str),
) -> Result<Console> {
    let mut logf = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    writeln!(logf, "# {cmd:?}")?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (scripts/setup-vm.sh installs it)")?;
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    let tx2 = tx.clone();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(sanitize(&String::from_utf8_lossy(&buf))).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx2.send(format!("[qemu stderr] {l}")).is_err() {
                break;
            }
        }
    });

    let deadline = started + timeout;
    let (mut timed_out, mut status) = (false, None);
    let mut last = std::collections::VecDeque::new();
    let mut take = |l: String, logf: &mut std::fs::File| -> Result<()> {
        writeln!(logf, "{l}")?;
        line(started.elapsed(), &l);
        last.push_back(l);
        if last.len() > tail {
            last.pop_front();
        }
        Ok(())
    };
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout((deadline - now).min(Duration::from_millis(500))) {
            Ok(l) => take(l, &mut logf)?,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(st) = child.try_wait()? {
                    // Exited; drain what is left.
                    status = st.code();
                    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                        take(l, &mut logf)?;
                    }
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let st = child.wait()?;
    if status.is_none() && !timed_out {
        status = st.code();
    }
    let _ = reader.join();
    let _ = err_reader.join();
    let wall = started.elapsed();
    if timed_out {
        writeln!(logf, "# TIMEOUT after {timeout:?}: qemu killed")?;
    }
    writeln!(logf, "# wall {:.1}s", wall.as_secs_f64())?;
    Ok(Console { timed_out, status, wall, tail: last.into_iter().collect() })
}

/// The line without terminal control sequences (SeaBIOS and the firmware clear the screen) and
/// other control characters but tab.
fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut it = raw.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            if it.peek() == Some(&'[') {
                it.next();
                // CSI: parameters and intermediates, then one final byte in @..~
                for f in it.by_ref() {
                    if ('@'..='~').contains(&f) {
                        break;
                    }
                }
            } else {
                it.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

fn parse_line(line: &str, o: &mut Outcome, in_tests: &mut bool, in_failures: &mut bool) {
    // A console line may carry the tail of another write before our marker.
    let line = match line.find("MCPG-VM-") {
        Some(i) => &line[i..],
        None => line,
    };
    if let Some(v) = line.strip_prefix("MCPG-VM-RESULT rc=") {
        o.rc = v.trim().parse().ok();
        *in_tests = false;
    } else if let Some(v) = line.strip_prefix("MCPG-VM-DIST ") {
        let v = v.trim();
        o.dist = Some(if v == "ok" { Ok(()) } else { Err(v.strip_prefix("FAIL ").unwrap_or(v).to_string()) });
    } else if let Some(v) = line.strip_prefix("MCPG-VM-WARN ") {
        o.warnings.push(v.trim().to_string());
    } else if let Some(v) = line.strip_prefix("MCPG-VM-LSM ") {
        o.lsm = Some(v.trim().to_string());
    } else if let Some(v) = line.strip_prefix("MCPG-VM-KERNEL ") {
        o.kernel_release = Some(v.trim().to_string());
    } else if let Some(v) = line.strip_prefix("MCPG-VM-START uptime=") {
        o.up_start = v.split_whitespace().next().and_then(|x| x.parse().ok());
        *in_tests = true;
    } else if let Some(v) = line.strip_prefix("MCPG-VM-END uptime=") {
        o.up_end = v.split_whitespace().next().and_then(|x| x.parse().ok());
    } else if let Some(rest) = line.strip_prefix("test result: ") {
        // "ok. 20 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.2s"
        for part in rest.split(';') {
            let mut w = part.split_whitespace().rev();
            let (Some(label), Some(n)) = (w.next(), w.next()) else { continue };
            match label {
                "passed" => o.passed = n.parse().ok(),
                "failed" => o.failed = n.parse().ok(),
                _ => {}
            }
        }
        *in_failures = false;
    } else if line == "failures:" {
        *in_failures = true;
    } else if *in_failures
        && let Some(name) = line.strip_prefix("    ")
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !o.failures.iter().any(|f| f == name)
    {
        o.failures.push(name.to_string());
    }
}

/// Path of the log for an entry.
pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_sequences_are_stripped_and_markers_found() {
        let l = sanitize("\x1bc\x1b[?7l\x1b[2JMCPG-VM-KERNEL 6.12.1\r\n");
        assert_eq!(l, "MCPG-VM-KERNEL 6.12.1");
        let mut o = Outcome::default();
        let (mut t, mut f) = (false, false);
        parse_line("junk MCPG-VM-RESULT rc=3", &mut o, &mut t, &mut f);
        assert_eq!(o.rc, Some(3));
        parse_line("MCPG-VM-DIST FAIL no EPERM for the refused exec", &mut o, &mut t, &mut f);
        assert_eq!(o.dist, Some(Err("no EPERM for the refused exec".into())));
        parse_line("MCPG-VM-DIST ok", &mut o, &mut t, &mut f);
        assert_eq!(o.dist, Some(Ok(())));
        parse_line(
            "test result: FAILED. 17 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.0s",
            &mut o,
            &mut t,
            &mut f,
        );
        assert_eq!((o.passed, o.failed), (Some(17), Some(2)));
    }
}
