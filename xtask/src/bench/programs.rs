//! Per-program cost in ns per invocation from the kernel's BPF run-time statistics, in a pass of
//! its own (`kernel.bpf_stats_enabled=1` for the pass, restored after: the accounting itself
//! costs every run of every program).
//!
//! Our programs' counters come from `/proc/self/fdinfo` of the program descriptors this process
//! holds (`run_time_ns`, `run_cnt`), so programs loaded by anyone else are never mixed in.
//! Floor: an empty program (`r0 = 0; exit`) loaded here with raw `bpf(2)` and attached to
//! `syscalls:sys_exit_openat` runs next to ours; its ns/run (the accounting plus the call) is
//! subtracted to give each program's own cost. The same floor is applied to the BTF tracepoint
//! programs (an empty `tp_btf` program needs the target's BTF id; not loaded here).
use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::{
    Ctx,
    empty::{EMPTY_NAME, Empty},
    overhead::{Arm, Attached, Workload, run_block},
};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns BPF run-time statistics on; restores the previous value on drop.
struct StatsOn(String);

impl StatsOn {
    fn enable() -> Result<Self> {
        let old = std::fs::read_to_string(STATS_SYSCTL).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(STATS_SYSCTL, "1\n").context("setting kernel.bpf_stats_enabled=1")?;
        Ok(Self(old.trim().to_owned()))
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(STATS_SYSCTL, format!("{}\n", self.0)) {
            eprintln!("bench: WARNING: could not restore kernel.bpf_stats_enabled={}: {e}", self.0);
        }
    }
}

/// prog_id -> (run_time_ns, run_cnt) of every program descriptor this process holds.
fn snapshot() -> BTreeMap<u64, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/proc/self/fdinfo") else { return out };
    for e in rd.flatten() {
        let Ok(s) = std::fs::read_to_string(e.path()) else { continue };
        let field = |k: &str| s.lines().find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok());
        if let (Some(id), Some(ns), Some(cnt)) = (field("prog_id:"), field("run_time_ns:"), field("run_cnt:")) {
            out.insert(id, (ns, cnt));
        }
    }
    out
}

/// Program names by id (`bpftool prog show --json`).
fn names() -> BTreeMap<u64, String> {
    let Ok(o) = std::process::Command::new("bpftool").args(["prog", "show", "--json"]).output() else {
        return BTreeMap::new();
    };
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_owned())))
        .collect()
}

pub fn run(ctx: &Ctx) -> Result<Value> {
    let wl = Workload::all(ctx);
    // By kind, not position: the list has grown (mmap, connect) since the phases were written.
    let by_kind = |k: &str| wl.iter().find(|w| w.kind == k).with_context(|| format!("{k} workload"));
    let (open, forkexec) = (by_kind("open")?, by_kind("forkexec")?);
    let connect = wl.iter().find(|w| w.kind == "connect").context("connect workload")?;
    let mprotect = by_kind("mprotect")?;
    let _stats = StatsOn::enable()?;
    let mut att = Attached::load(ctx)?;
    let _empty = Empty::attach("syscalls", "sys_exit_openat")?;
    let names = names();
    let name = |id: u64| names.get(&id).cloned().unwrap_or_else(|| format!("id{id}"));
    let mut phases = Vec::new();
    let mut floor_pool = (0u64, 0u64);
    // The last two phases repeat a stopped workload with the event reader paused: no
    // wake-up per event (the ring buffer holds them all), to price the wake-up itself.
    let short_open = Workload { iters: 4_000, warmup: 0, ..open.clone() };
    let phases_spec = [
        (open, Arm::UngovernedLive, false),
        (open, Arm::Allowed, false),
        (open, Arm::Stopped, false),
        (forkexec, Arm::Ungoverned, false),
        (forkexec, Arm::Allowed, false),
        (forkexec, Arm::Stopped, false),
        // `mcpg_connect4` and `mcpg_sock_create` (cgroup programs, attached whatever is governed):
        // the `governed` lookup alone, then the grant decision.
        (connect, Arm::UngovernedLive, false),
        (connect, Arm::Allowed, false),
        // `mcpg_mprotect`: the `governed` lookup of a PROT_EXEC call, then `bpf_find_vma` and
        // the W^X decision of the page's file.
        (mprotect, Arm::UngovernedLive, false),
        (mprotect, Arm::Allowed, false),
        (&short_open, Arm::Stopped, true),
        (forkexec, Arm::Stopped, true),
    ];
    for (w, arm, paused) in phases_spec {
        if arm == Arm::UngovernedLive {
            att.hold_idle(ctx, false)?;
        }
        if paused {
            // Catch up first, so that the ring is empty and the reader is at its end.
            std::thread::sleep(Duration::from_millis(100));
            att.pause_consumer(true);
        }
        let lost0 = att.lost();
        let s0 = snapshot();
        run_block(ctx, w, arm, Some(&mut att))?;
        let s1 = snapshot();
        if paused {
            att.pause_consumer(false);
        }
        let lost = att.lost() - lost0;
        let mut progs = Vec::new();
        let mut floor = None;
        for (id, (ns1, c1)) in &s1 {
            let (ns0, c0) = s0.get(id).copied().unwrap_or_default();
            let (dns, dc) = (ns1 - ns0, c1 - c0);
            if dc == 0 {
                continue;
            }
            let n = name(*id);
            if n == EMPTY_NAME {
                floor_pool = (floor_pool.0 + dns, floor_pool.1 + dc);
                floor = Some((dns as f64 / dc as f64, dc));
            } else {
                progs.push((n, dns as f64 / dc as f64, dc));
            }
        }
        phases.push((w.name, arm, paused, lost, floor, progs));
    }
    let pooled = floor_pool.0 as f64 / floor_pool.1.max(1) as f64;
    let out: Vec<Value> = phases
        .iter()
        .map(|(w, arm, paused, lost, floor, progs)| {
            // A phase's own floor when the empty program ran often enough in it, else the pool.
            let f = floor.filter(|f| f.1 >= 1000).map_or(pooled, |f| f.0);
            json!({
                "workload": w, "arm": arm.name(), "event_reader_paused": paused, "events_lost": lost,
                "empty_ns_per_run": floor.map(|f| f.0), "empty_runs": floor.map(|f| f.1), "floor_used_ns": f,
                "programs": progs.iter().map(|(n, ns, c)| json!({
                    "program": n, "runs": c, "ns_per_run_raw": ns, "ns_per_run_net": ns - f,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    eprintln!("bench: per-program statistics: {} phases, empty-program floor {pooled:.1} ns/run", out.len());
    Ok(json!({"empty_program_ns_per_run": pooled, "phases": out}))
}
