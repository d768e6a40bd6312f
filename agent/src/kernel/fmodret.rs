//! fmod_ret backend loader. aya 0.14 cannot load `fmod_ret` programs, so the programs are
//! compiled as `fentry/security_*` sections (which aya parses but never loads here), and this
//! module loads them itself: it parses the same object with aya-obj, relocates map references
//! against the maps aya already created (including `.rodata` with the BTF offsets), and issues
//! `BPF_PROG_LOAD` with `expected_attach_type = BPF_MODIFY_RETURN` and `BPF_LINK_CREATE`.
use std::{
    collections::HashSet,
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use aya::{Ebpf, maps::Map};
use aya_obj::{
    btf::{Btf, BtfKind},
    generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_prog_type},
};

use mcpguard_common::FMOD_PROGS;

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<RawFd> {
    // SAFETY: attr is a valid, zero-initialised bpf_attr of the size passed.
    let r =
        unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, std::ptr::from_mut(attr), size_of::<bpf_attr>()) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r as RawFd) }
}

fn map_fd(map: &Map) -> Option<RawFd> {
    match map {
        Map::HashMap(m)
        | Map::Array(m)
        | Map::PerCpuArray(m)
        | Map::RingBuf(m)
        | Map::LpmTrie(m)
        | Map::ProgramArray(m) => Some(m.fd().as_fd().as_raw_fd()),
        _ => None,
    }
}

/// `BPF_PROG_LOAD` of one fmod_ret program. The verifier runs without a log first: at log level 1
/// it formats every instruction it processes (hundreds of thousands for the open walk), which
/// made this load ~5x slower under TCG; only a refused program is loaded again with the log, for
/// the message.
fn load_one(insns: &[aya_obj::generated::bpf_insn], prog: &str, func: &str, btf_id: u32) -> Result<OwnedFd, String> {
    load_typed(insns, prog, &format!("fmod_ret {func}"), RawKind::FmodRet { btf_id })
}

/// What a program is loaded as.
#[derive(Clone, Copy)]
enum RawKind {
    FmodRet {
        btf_id: u32,
    },
    /// A cgroup socket-address program with this attach type.
    SockAddr {
        attach_type: u32,
    },
}

fn load_typed(
    insns: &[aya_obj::generated::bpf_insn],
    prog: &str,
    what: &str,
    kind: RawKind,
) -> Result<OwnedFd, String> {
    let license = CString::new("GPL").expect("no NUL");
    let attempt = |log: &mut [u8]| {
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the PROG_LOAD member of the union.
        unsafe {
            let u = &mut attr.__bindgen_anon_3;
            match kind {
                RawKind::FmodRet { btf_id } => {
                    u.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
                    u.expected_attach_type = bpf_attach_type::BPF_MODIFY_RETURN as u32;
                    u.attach_btf_id = btf_id;
                }
                RawKind::SockAddr { attach_type } => {
                    u.prog_type = bpf_prog_type::BPF_PROG_TYPE_CGROUP_SOCK_ADDR as u32;
                    u.expected_attach_type = attach_type;
                }
            }
            u.insn_cnt = u32::try_from(insns.len()).unwrap_or(u32::MAX);
            u.insns = insns.as_ptr() as u64;
            u.license = license.as_ptr() as u64;
            for (i, b) in prog.bytes().take(15).enumerate() {
                u.prog_name[i] = b as libc::c_char;
            }
            if !log.is_empty() {
                u.log_level = 1;
                u.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
                u.log_buf = log.as_mut_ptr() as u64;
            }
        }
        // SAFETY: on success the kernel returned a new fd we own.
        sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
    };
    if let Ok(fd) = attempt(&mut []) {
        return Ok(fd);
    }
    let mut log = vec![0u8; 1 << 20];
    match attempt(&mut log) {
        Ok(fd) => Ok(fd),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            let tail = String::from_utf8_lossy(&log[end.saturating_sub(600)..end]).into_owned();
            Err(format!("loading {prog} ({what}): {e}; verifier: {tail}"))
        }
    }
}

/// The object parsed again, its map references relocated against the maps aya created.
fn relocated(object: &[u8], ebpf: &Ebpf) -> Result<aya_obj::Object, String> {
    let mut obj = aya_obj::Object::parse(object).map_err(|e| format!("parsing object: {e}"))?;
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    let mut fds = Vec::new();
    for (name, map) in ebpf.maps() {
        let fd = map_fd(map).ok_or_else(|| format!("map {name}: unexpected map type"))?;
        fds.push((name.to_owned(), fd));
    }
    let obj_maps = obj.maps.clone();
    obj.relocate_maps(fds.iter().filter_map(|(n, fd)| obj_maps.get(n).map(|m| (n.as_str(), *fd, m))), &text_sections)
        .map_err(|e| format!("relocating maps: {e}"))?;
    obj.relocate_calls(&text_sections).map_err(|e| format!("relocating calls: {e}"))?;
    Ok(obj)
}

/// Loads and attaches the fmod_ret programs (exec, open, mmap, signals, path operations and the
/// network hooks); returns their links.
pub fn attach(object: &[u8], ebpf: &Ebpf, vmlinux: &Btf) -> Result<Vec<(&'static str, OwnedFd)>, String> {
    let obj = relocated(object, ebpf)?;
    let mut links = Vec::new();
    let optional: Vec<(&'static str, &'static str, bool)> =
        mcpguard_common::PATH_HOOKS.iter().map(|h| (h.2, h.3, h.4)).collect();
    let net = mcpguard_common::NET_HOOKS.iter().map(|h| (h.2, h.3, true));
    let times = [(mcpguard_common::PROG_FMOD_TIMES, mcpguard_common::FMOD_TIMES_FN, true)];
    let all = FMOD_PROGS.iter().map(|&(p, f)| (p, f, true)).chain(optional).chain(net).chain(times);
    for (prog, func, required) in all {
        if !required && vmlinux.id_by_type_name_kind(func, BtfKind::Func).is_err() {
            log::info!("{func} not in this kernel: {prog} not attached");
            continue;
        }
        let p = obj.programs.get(prog).ok_or_else(|| format!("program {prog} missing from the object"))?;
        let insns = &obj.functions[&p.function_key()].instructions;
        let btf_id = vmlinux
            .id_by_type_name_kind(func, BtfKind::Func)
            .map_err(|e| format!("{func} not found in kernel BTF: {e}"))?;
        let prog_fd = load_one(insns, prog, func, btf_id)?;
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.link_create.__bindgen_anon_1.prog_fd = prog_fd.as_raw_fd() as u32;
        attr.link_create.attach_type = bpf_attach_type::BPF_MODIFY_RETURN as u32;
        let link =
            sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map_err(|e| format!("attaching {prog} to {func}: {e}"))?;
        // SAFETY: the kernel returned a new fd we own; the link keeps the program alive.
        links.push((prog, unsafe { OwnedFd::from_raw_fd(link) }));
    }
    Ok(links)
}

/// Loads the Unix-socket address programs (`UNIX_ADDR_PROGS`) and attaches them to the cgroup
/// `cgroup` (an open directory of the cgroup v2 hierarchy); returns their links. Fails on kernels
/// before 6.7, which have no such attach types.
pub fn attach_unix_addr(
    object: &[u8],
    ebpf: &Ebpf,
    cgroup: std::os::fd::BorrowedFd<'_>,
) -> Result<Vec<(&'static str, OwnedFd)>, String> {
    let obj = relocated(object, ebpf)?;
    let mut links = Vec::new();
    for (prog, attach_type) in mcpguard_common::UNIX_ADDR_PROGS {
        let p = obj.programs.get(prog).ok_or_else(|| format!("program {prog} missing from the object"))?;
        let insns = &obj.functions[&p.function_key()].instructions;
        let fd =
            load_typed(insns, prog, &format!("cgroup attach type {attach_type}"), RawKind::SockAddr { attach_type })?;
        links.push((prog, cgroup_link(fd.as_fd(), cgroup, attach_type).map_err(|e| format!("attaching {prog}: {e}"))?));
    }
    Ok(links)
}

/// `BPF_LINK_CREATE` of a loaded cgroup program on `cgroup`: the link detaches when its last fd
/// (or pin) goes, and other programs on the cgroup keep running (links are multi-attach).
pub fn cgroup_link(
    prog: std::os::fd::BorrowedFd<'_>,
    cgroup: std::os::fd::BorrowedFd<'_>,
    attach_type: u32,
) -> std::io::Result<OwnedFd> {
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.link_create.__bindgen_anon_1.prog_fd = prog.as_raw_fd() as u32;
    attr.link_create.__bindgen_anon_2.target_fd = cgroup.as_raw_fd() as u32;
    attr.link_create.attach_type = attach_type;
    // SAFETY: the kernel returned a new fd we own.
    sys_bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Pins a link fd at `path` (BPF_OBJ_PIN).
pub fn pin(fd: &OwnedFd, path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let p = CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: all-zero is a valid bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.__bindgen_anon_4.pathname = p.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = fd.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr).map(|_| ())
}
