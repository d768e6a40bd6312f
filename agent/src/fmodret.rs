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

/// (program in the object, kernel function whose return value it decides).
pub const FMOD_PROGS: [(&str, &str); 4] = [
    (mcpguard_common::PROG_FMOD_EXEC, "security_bprm_check"),
    (mcpguard_common::PROG_FMOD_OPEN, "security_file_open"),
    (mcpguard_common::PROG_FMOD_MMAP, "security_mmap_file"),
    (mcpguard_common::PROG_FMOD_KILL, "security_task_kill"),
];

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> std::io::Result<RawFd> {
    // SAFETY: attr is a valid, zero-initialised bpf_attr of the size passed.
    let r =
        unsafe { libc::syscall(libc::SYS_bpf, cmd as libc::c_long, std::ptr::from_mut(attr), size_of::<bpf_attr>()) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r as RawFd) }
}

fn map_fd(map: &Map) -> Option<RawFd> {
    match map {
        Map::HashMap(m) | Map::Array(m) | Map::PerCpuArray(m) | Map::RingBuf(m) => Some(m.fd().as_fd().as_raw_fd()),
        _ => None,
    }
}

/// `BPF_PROG_LOAD` of one fmod_ret program. The verifier runs without a log first: at log level 1
/// it formats every instruction it processes (hundreds of thousands for the open walk), which
/// made this load ~5x slower under TCG; only a refused program is loaded again with the log, for
/// the message.
fn load_one(insns: &[aya_obj::generated::bpf_insn], prog: &str, func: &str, btf_id: u32) -> Result<OwnedFd, String> {
    let license = CString::new("GPL").expect("no NUL");
    let attempt = |log: &mut [u8]| {
        // SAFETY: all-zero is a valid bpf_attr.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the PROG_LOAD member of the union.
        unsafe {
            let u = &mut attr.__bindgen_anon_3;
            u.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
            u.expected_attach_type = bpf_attach_type::BPF_MODIFY_RETURN as u32;
            u.insn_cnt = u32::try_from(insns.len()).unwrap_or(u32::MAX);
            u.insns = insns.as_ptr() as u64;
            u.license = license.as_ptr() as u64;
            u.attach_btf_id = btf_id;
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
            Err(format!("loading {prog} (fmod_ret {func}): {e}; verifier: {tail}"))
        }
    }
}

/// Loads and attaches the fmod_ret programs; returns their links.
pub fn attach(object: &[u8], ebpf: &Ebpf, vmlinux: &Btf) -> Result<Vec<(&'static str, OwnedFd)>, String> {
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
    let mut links = Vec::new();
    let optional: Vec<(&'static str, &'static str, bool)> =
        mcpguard_common::PATH_HOOKS.iter().map(|h| (h.2, h.3, h.4)).collect();
    let all = FMOD_PROGS.iter().map(|&(p, f)| (p, f, true)).chain(optional);
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
