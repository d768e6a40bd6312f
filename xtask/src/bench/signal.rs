//! What a signal costs a session mcpguard launched when the daemon decides it (the kill
//! backend: the launcher's seccomp signal filter hands `kill` to the daemon, `signals.rs`).
//!
//! Workload `signal`: `kill(getpid(), 0)` in a loop — a target inside the session, so each call
//! is answered "run as asked" after the daemon's look. Arms, alternated ABBA in the same run:
//! the workload launched by `mcpguard exec` into a session of the real daemon, and the same
//! binary run directly (ungoverned, no filter). Reported: ns per call of both, and their paired
//! ratio. On the deny backends the kernel's `task_kill` decides and the launcher installs no
//! signal filter; the arm then prices that hook instead.
use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{Ctx, daemon::Daemon, stats, workload};

fn ns_per_op(out: &str) -> Result<f64> {
    let line = out.lines().find(|l| l.starts_with("ns ")).with_context(|| format!("no timing in {out:?}"))?;
    let v: Vec<f64> = line.split(' ').skip(1).map(str::parse).collect::<Result<_, _>>()?;
    Ok(v[0] / v[1])
}

fn run_once(ctx: &Ctx, d: &mut Daemon, launched: bool, iters: u64, n: usize) -> Result<f64> {
    let argv = workload::argv(&ctx.exe, "signal", iters, iters / 10, None);
    let mut cmd = if launched {
        let mut c = std::process::Command::new(&ctx.mcpguard);
        c.arg("--socket").arg(&d.socket);
        c.args(["exec", "--session", &format!("sig-{n}"), "--baseline", super::daemon::BASELINE, "--"]);
        c.args(&argv);
        c
    } else {
        let mut c = std::process::Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "signal workload ({}): {:?} {}",
            if launched { "launched" } else { "direct" },
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ns_per_op(&String::from_utf8_lossy(&out.stdout))
}

pub fn run(ctx: &Ctx, d: &mut Daemon) -> Result<Value> {
    let (iters, blocks) = if ctx.quick { (2_000, 2) } else { (20_000, ctx.blocks.max(4)) };
    let (mut direct, mut launched) = (Vec::new(), Vec::new());
    for (i, slot) in stats::abba(blocks).into_iter().enumerate() {
        if slot == stats::Slot::Base {
            direct.push(run_once(ctx, d, false, iters, i)?);
        } else {
            launched.push(run_once(ctx, d, true, iters, i)?);
        }
    }
    let ratios = stats::paired_ratios(&direct, &launched);
    let r = stats::Summary::of(&ratios);
    eprintln!(
        "bench: kill(self, 0) launched {:.0} ns vs direct {:.0} ns per call: ratio {:.1} (backend {})",
        stats::median(&launched),
        stats::median(&direct),
        r.median,
        d.backend
    );
    Ok(json!({"direct_ns": stats::median(&direct), "launched_ns": stats::median(&launched), "ratio": r.json(),
              "backend": d.backend, "iters": iters}))
}
