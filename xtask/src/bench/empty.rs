//! An empty BPF program (`r0 = 0; exit`) attached to a syscall tracepoint with raw `bpf(2)` and
//! `perf_event_open(2)`: the floor of the mechanism the kill backend uses. Used as the
//! statistics floor (programs.rs) and as the "floor" arms of the overhead section (what any
//! program on these tracepoints costs, whatever it does).
use std::{fs::File, os::fd::FromRawFd as _};

use anyhow::{Result, bail};

pub const EMPTY_NAME: &str = "bench_empty";

/// The empty program and its perf-event attachment (both closed on drop: detached).
pub struct Empty {
    _prog: File,
    _event: File,
}

fn tracepoint_id(category: &str, name: &str) -> Result<u64> {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if let Ok(s) = std::fs::read_to_string(format!("{root}/events/{category}/{name}/id")) {
            return Ok(s.trim().parse()?);
        }
    }
    bail!("tracepoint {category}:{name} not found (is tracefs mounted?)")
}

impl Empty {
    pub fn attach(category: &str, name: &str) -> Result<Self> {
        // Two instructions: BPF_ALU64|BPF_MOV|BPF_K r0 = 0; BPF_JMP|BPF_EXIT.
        let insns: [u64; 2] = [0xb7, 0x95];
        let license = b"GPL\0";
        // union bpf_attr, BPF_PROG_LOAD layout: prog_type@0 insn_cnt@4 insns@8 license@16 ...
        // prog_name@48 (16 bytes). Everything else zero.
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&5u32.to_le_bytes()); // BPF_PROG_TYPE_TRACEPOINT
        attr[4..8].copy_from_slice(&2u32.to_le_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_le_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_le_bytes());
        attr[48..48 + EMPTY_NAME.len()].copy_from_slice(EMPTY_NAME.as_bytes());
        // SAFETY: BPF_PROG_LOAD (5) with a valid attr; the pointers outlive the call.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len() as u32) };
        if fd < 0 {
            bail!("loading the empty program: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let prog = unsafe { File::from_raw_fd(i32::try_from(fd)?) };
        // struct perf_event_attr (PERF_ATTR_SIZE_VER0 = 64 bytes): type@0 size@4 config@8
        // sample_period@16 ... wakeup_events@48.
        let mut pattr = [0u8; 64];
        pattr[0..4].copy_from_slice(&2u32.to_le_bytes()); // PERF_TYPE_TRACEPOINT
        pattr[4..8].copy_from_slice(&64u32.to_le_bytes());
        pattr[8..16].copy_from_slice(&tracepoint_id(category, name)?.to_le_bytes());
        pattr[16..24].copy_from_slice(&1u64.to_le_bytes());
        pattr[48..52].copy_from_slice(&1u32.to_le_bytes());
        // SAFETY: perf_event_open(attr, pid -1, cpu 0, group -1, PERF_FLAG_FD_CLOEXEC): a
        // tracepoint event; its BPF program runs for the tracepoint on every CPU.
        let efd = unsafe { libc::syscall(libc::SYS_perf_event_open, pattr.as_ptr(), -1, 0, -1, 8) };
        if efd < 0 {
            bail!("perf_event_open {category}:{name}: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor.
        let event = unsafe { File::from_raw_fd(i32::try_from(efd)?) };
        use std::os::fd::AsRawFd as _;
        // SAFETY: PERF_EVENT_IOC_SET_BPF / PERF_EVENT_IOC_ENABLE on our event.
        unsafe {
            if libc::ioctl(event.as_raw_fd(), 0x4004_2408, prog.as_raw_fd()) != 0 {
                bail!("PERF_EVENT_IOC_SET_BPF: {}", std::io::Error::last_os_error());
            }
            libc::ioctl(event.as_raw_fd(), 0x2400, 0);
        }
        Ok(Self { _prog: prog, _event: event })
    }
}
