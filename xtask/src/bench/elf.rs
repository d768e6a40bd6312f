//! The "small static binary" the fork+exec workload runs: a 129-byte x86-64 ELF executable
//! (one read+execute `PT_LOAD` segment, no sections, no interpreter, no libc) whose three
//! instructions are `exit_group(0)`. Written by the benchmark itself, so no cross toolchain is
//! needed and the exec cost is the kernel's (fork, exec, exit) and nothing of a C runtime.
use std::path::Path;

use anyhow::{Context as _, Result};

const BASE: u64 = 0x40_0000;
const EHDR: u64 = 64;
const PHDR: u64 = 56;
/// `mov eax, 231 (exit_group)`; `xor edi, edi`; `syscall`.
const CODE: [u8; 9] = [0xb8, 0xe7, 0x00, 0x00, 0x00, 0x31, 0xff, 0x0f, 0x05];

/// The executable's bytes.
#[must_use]
pub fn exit0() -> Vec<u8> {
    let size = EHDR + PHDR + CODE.len() as u64;
    let mut b = Vec::with_capacity(size as usize);
    // ELF header
    b.extend([0x7f, b'E', b'L', b'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */, 0 /* SysV */]);
    b.extend([0u8; 8]);
    b.extend(2u16.to_le_bytes()); // ET_EXEC
    b.extend(0x3eu16.to_le_bytes()); // EM_X86_64
    b.extend(1u32.to_le_bytes()); // EV_CURRENT
    b.extend((BASE + EHDR + PHDR).to_le_bytes()); // e_entry
    b.extend(EHDR.to_le_bytes()); // e_phoff
    b.extend(0u64.to_le_bytes()); // e_shoff
    b.extend(0u32.to_le_bytes()); // e_flags
    b.extend((EHDR as u16).to_le_bytes()); // e_ehsize
    b.extend((PHDR as u16).to_le_bytes()); // e_phentsize
    b.extend(1u16.to_le_bytes()); // e_phnum
    b.extend([0u8; 6]); // e_shentsize, e_shnum, e_shstrndx
    // Program header: the whole file, mapped read+execute at BASE
    b.extend(1u32.to_le_bytes()); // PT_LOAD
    b.extend(5u32.to_le_bytes()); // PF_R | PF_X
    b.extend(0u64.to_le_bytes()); // p_offset
    b.extend(BASE.to_le_bytes()); // p_vaddr
    b.extend(BASE.to_le_bytes()); // p_paddr
    b.extend(size.to_le_bytes()); // p_filesz
    b.extend(size.to_le_bytes()); // p_memsz
    b.extend(0x1000u64.to_le_bytes()); // p_align
    b.extend(CODE);
    b
}

/// Writes the executable to `path` (mode 0755).
pub fn write_exit0(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, exit0()).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_fields() {
        let b = super::exit0();
        assert_eq!(b.len(), 129);
        assert_eq!(&b[..4], b"\x7fELF");
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 0x40_0078, "entry after the headers");
        assert_eq!(u16::from_le_bytes(b[54..56].try_into().unwrap()), 56, "phentsize");
        assert_eq!(u64::from_le_bytes(b[64 + 32..64 + 40].try_into().unwrap()), 129, "filesz");
        assert_eq!(&b[120..], &super::CODE);
    }
}
