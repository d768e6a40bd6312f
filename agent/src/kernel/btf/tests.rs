//! BTF reader tests: synthetic blobs (values, errors, malformed input) and the real vmlinux.
use super::BtfError::*;
use super::*;

macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!("expected {}, got {other:?}", stringify!($pattern)),
        }
    };
}

const KFLAG: u8 = 0x80;

/// Assembles BTF blobs. Everything after magic/version/flags is u32 words, so the blob
/// can be emitted in either byte order.
#[derive(Default)]
struct Builder {
    /// String section without its leading NUL (offset 0 is the empty name).
    strings: Vec<u8>,
    words: Vec<u32>,
    types: u32,
}

impl Builder {
    fn str(&mut self, s: &str) -> u32 {
        let off = self.strings.len() as u32 + 1;
        self.strings.extend(s.bytes().chain([0]));
        if s.is_empty() { 0 } else { off }
    }

    /// `kind` may carry [`KFLAG`]; STRUCT/UNION `extra` is members, 3 words each.
    fn add(&mut self, name: &str, kind: u8, size_or_type: u32, extra: &[u32]) -> u32 {
        let composite = matches!(kind & !KFLAG, kind::STRUCT | kind::UNION);
        let vlen = if composite { extra.len() as u32 / 3 } else { 0 };
        let name_off = self.str(name);
        let info = (u32::from(kind & !KFLAG) << 24) | (u32::from(kind >> 7) << 31) | vlen;
        self.words.extend([name_off, info, size_or_type]);
        self.words.extend_from_slice(extra);
        self.types += 1;
        self.types
    }

    /// `members`: (name, type id, offset word).
    fn composite(&mut self, name: &str, kind: u8, size: u32, m: &[(&str, u32, u32)]) -> u32 {
        let mut words = Vec::new();
        for &(member, ty, offset) in m {
            words.extend([self.str(member), ty, offset]);
        }
        self.add(name, kind, size, &words)
    }

    fn blob(&self, be: bool) -> Vec<u8> {
        let magic = if be { [0xeb, 0x9f] } else { [0x9f, 0xeb] };
        let (type_len, str_len) = (self.words.len() as u32 * 4, self.strings.len() as u32 + 1);
        let header = [24, 0, type_len, type_len, str_len];
        let words = header.into_iter().chain(self.words.iter().copied());
        let bytes = words.flat_map(|w| if be { w.to_be_bytes() } else { w.to_le_bytes() });
        let mut out = vec![magic[0], magic[1], 1, 0];
        out.extend(bytes.chain([0]).chain(self.strings.iter().copied()));
        out
    }
}

/// `struct outer` (72 bytes): x@0, flags:3 bitfield@4, nested@8 (inner: a@0, b@8),
/// anonymous union {u_long, u_int}@24, td@32 (const inner_t), ptr@48, arr@56 (int[4]).
/// Also an empty `struct outer` declared first and `struct legacy` with old-style bitfields.
fn sample(be: bool) -> Vec<u8> {
    let mut b = Builder::default();
    b.composite("outer", kind::STRUCT, 0, &[]);
    let int = b.add("int", kind::INT, 4, &[32]);
    let long = b.add("long", kind::INT, 8, &[64]);
    let members = [("a", int, 0), ("b", long, 64)];
    let inner = b.composite("inner", kind::STRUCT, 16, &members);
    let inner_t = b.add("inner_t", kind::TYPEDEF, inner, &[]);
    let const_inner_t = b.add("", kind::CONST, inner_t, &[]);
    let anon = b.composite("", kind::UNION, 8, &[("u_long", long, 0), ("u_int", int, 0)]);
    let ptr = b.add("", kind::PTR, inner, &[]);
    let arr = b.add("", kind::ARRAY, 0, &[int, int, 4]);
    let members = [
        ("x", int, 0),
        ("flags", int, (3 << 24) | 32),
        ("nested", inner, 64),
        ("", anon, 192),
        ("td", const_inner_t, 256),
        ("ptr", ptr, 384),
        ("arr", arr, 448),
    ];
    b.composite("outer", kind::STRUCT | KFLAG, 72, &members);
    let u3 = b.add("u3", kind::INT, 4, &[3]);
    b.composite("legacy", kind::STRUCT, 8, &[("bf", u3, 0), ("odd", int, 12)]);
    b.blob(be)
}

#[test]
fn btf_synthetic_offsets_and_sizes() {
    for be in [false, true] {
        let btf = Btf::from_bytes(sample(be)).expect("valid sample BTF");
        let off = |path| btf.member_offset("outer", path).unwrap();
        assert_eq!(off("x"), 0);
        assert_eq!(off("nested"), 8);
        assert_eq!(off("nested.b"), 16);
        assert_eq!(off("u_long"), 24, "anonymous union member");
        assert_eq!(off("u_int"), 24);
        assert_eq!(off("td.b"), 40, "typedef + const resolved");
        assert_eq!(off("ptr"), 48);
        assert_eq!(off("arr"), 56);
        assert_eq!(btf.member_offset("inner_t", "b").unwrap(), 8, "via typedef");
        assert_eq!(btf.struct_size("outer").unwrap(), 72, "sized struct preferred");
        assert_eq!(btf.struct_size("inner").unwrap(), 16);
        let size = |path| btf.member_size("outer", path).unwrap();
        assert_eq!(size("x"), 4);
        assert_eq!(size("nested.b"), 8);
        assert_eq!(size("td"), 16);
        assert_eq!(size("ptr"), 8);
        assert_eq!(size("arr"), 16);
        assert_eq!(btf.try_member_offset("outer", "nested.a").unwrap(), Some(8));
    }
}

#[test]
fn btf_synthetic_errors() {
    let btf = Btf::from_bytes(sample(false)).unwrap();
    assert_err!(btf.member_offset("outer", "flags"), Bitfield { .. });
    assert_err!(btf.member_offset("legacy", "bf"), Bitfield { .. });
    assert_err!(btf.member_offset("legacy", "odd"), Bitfield { .. });
    assert_err!(btf.member_offset("outer", "nope"), MemberNotFound { .. });
    assert_err!(btf.member_offset("outer", "nested.nope"), MemberNotFound { .. });
    assert_err!(btf.member_offset("outer", ""), MemberNotFound { .. });
    assert_err!(btf.member_size("outer", "nope"), MemberNotFound { .. });
    assert_err!(btf.member_offset("nosuch", "x"), TypeNotFound { .. });
    assert_err!(btf.try_member_offset("nosuch", "x"), TypeNotFound { .. });
    assert_err!(btf.member_offset("int", "x"), NotAStruct { .. });
    assert_err!(btf.member_offset("outer", "ptr.a"), NotAStruct { name } if name == "outer.ptr");
    assert_eq!(btf.try_member_offset("outer", "nope").unwrap(), None);
    assert_eq!(btf.try_member_offset("outer", "nested.nope").unwrap(), None);
}

#[test]
fn btf_malformed_input_is_an_error_not_a_panic() {
    let good = sample(false);
    for len in 0..good.len() {
        assert!(Btf::from_bytes(good[..len].to_vec()).is_err(), "{len}-byte prefix");
    }
    assert_err!(Btf::from_bytes(b"\x7fELF\x02\x01\x01\0".to_vec()), BadMagic { .. });
    let mut v2 = good.clone();
    v2[2] = 2;
    assert_err!(Btf::from_bytes(v2), UnsupportedVersion { version: 2 });
    // Corrupt every byte in turn; parsing and lookups may fail but must not panic or hang.
    for (i, value) in (0..good.len()).flat_map(|i| [0, 1, 7, 0x80, 0xff].map(|v| (i, v))) {
        let mut bad = good.clone();
        bad[i] = value;
        if let Ok(btf) = Btf::from_bytes(bad) {
            for path in ["x", "nested.b", "u_int", "td.b", "ptr.a", "arr", "flags"] {
                let _ = (btf.member_offset("outer", path), btf.member_size("outer", path));
            }
            let _ = btf.struct_size("inner_t");
        }
    }
    // Pseudo-random garbage (xorshift) behind a valid magic and version.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..200 {
        let junk = (0..64).map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        });
        let _ = Btf::from_bytes([0x9f, 0xeb, 1, 0].into_iter().chain(junk).collect());
    }
}

/// Kernel-ABI-stable facts about the running kernel's BTF. Fails (does not skip) when
/// `/sys/kernel/btf/vmlinux` is missing: the agent requires it.
#[test]
fn btf_vmlinux_stable_offsets() {
    let btf = Btf::from_sys_fs().expect("/sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)");
    let off = |ty, path| btf.member_offset(ty, path).unwrap();
    assert_eq!(off("list_head", "next"), 0);
    assert_eq!(off("list_head", "prev"), 8);
    assert_eq!(off("path", "mnt"), 0);
    assert_eq!(off("path", "dentry"), 8);
    assert_eq!(off("qstr", "name"), 8);
    assert_eq!(btf.member_size("task_struct", "tgid").unwrap(), 4);
    assert_eq!(off("file", "f_path.dentry"), off("file", "f_path") + 8);
    assert_eq!(off("task_struct", "tgid"), off("task_struct", "pid") + 4);
    let missing = btf.try_member_offset("task_struct", "no_such_member");
    assert_eq!(missing.unwrap(), None);
    assert!(btf.struct_size("task_struct").unwrap() > 1000);
    // Function prototypes (the LSM times program is chosen by `bpf_lsm_inode_setattr`'s: 3 on
    // 6.3+, 2 on 6.1).
    assert_eq!(btf.func_params("vfs_utimes").unwrap(), 2);
    assert!(matches!(btf.func_params("bpf_lsm_inode_setattr").unwrap(), 2 | 3));
    assert!(matches!(btf.func_params("no_such_function_here"), Err(TypeNotFound { .. })));
}
