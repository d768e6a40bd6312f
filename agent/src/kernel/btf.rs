//! Minimal reader for the Linux BPF Type Format (BTF).
//!
//! The eBPF programs read kernel structures (`task_struct`, `file`, `inode`, ...) at fixed
//! byte offsets, and those offsets differ between kernel builds. At load time the agent
//! reads them from the running kernel's BTF (`/sys/kernel/btf/vmlinux`) with this module.
//!
//! Only what that needs is implemented: a raw BTF blob (not ELF) is parsed once, struct and
//! union names are indexed, and member offsets and sizes can be queried. Format reference:
//! <https://docs.kernel.org/bpf/btf.html>. Parsing is defensive: malformed input yields an
//! error, never a panic, and cyclic type graphs are cut off after a bounded number of steps.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

const SYS_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
const BTF_MAGIC: u16 = 0xEB9F;
/// Size of the version-1 header (`struct btf_header`).
const HEADER_LEN: usize = 24;
/// Bound on typedef/modifier chains, anonymous-member nesting and array-of-array chains.
const MAX_DEPTH: u32 = 32;
/// BTF pointers have no size field; the kernel's pointer size is the host's.
const PTR_SIZE: u32 = usize::BITS / 8;

/// BTF type kinds (`BTF_KIND_*`).
mod kind {
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    /// No extra data; its type is its FUNC_PROTO.
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

/// Errors from loading BTF or looking up types in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("not a raw BTF blob (magic {found:#06x}, expected 0xeb9f)")]
    BadMagic { found: u16 },
    #[error("BTF data truncated or out of bounds: {what}")]
    Truncated { what: &'static str },
    #[error("unsupported BTF version {version} (only version 1 is supported)")]
    UnsupportedVersion { version: u8 },
    #[error("unknown BTF type kind {kind} at type id {id}")]
    UnknownKind { kind: u8, id: u32 },
    #[error("malformed BTF: {what}")]
    Malformed { what: &'static str },
    #[error("type `{name}` not found in BTF")]
    TypeNotFound { name: String },
    #[error("`{name}` is not a struct or union")]
    NotAStruct { name: String },
    #[error("member `{member}` not found in `{ty}`")]
    MemberNotFound { ty: String, member: String },
    #[error("member `{ty}.{member}` is a bitfield or not byte-aligned")]
    Bitfield { ty: String, member: String },
    #[error("the type of member `{ty}.{member}` has no size")]
    Unsized { ty: String, member: String },
}

type Result<T> = std::result::Result<T, BtfError>;

/// Kind-specific data kept from the type section.
#[derive(Clone, Copy, Default)]
enum Data {
    #[default]
    None,
    /// INT encoding word: bits 0-7 = nr_bits, 16-23 = bit offset, 24-27 = encoding.
    Int(u32),
    /// ARRAY: (element type id, element count).
    Array(u32, u32),
    /// STRUCT/UNION: (index of the first member in [`Btf::members`], member count).
    Members(usize, u16),
    /// FUNC_PROTO: parameter count.
    Params(u16),
}

#[derive(Clone, Copy, Default)]
struct Type {
    kind: u8,
    kind_flag: bool,
    name_off: u32,
    size_or_type: u32,
    data: Data,
}

impl Type {
    fn is_composite(&self) -> bool {
        matches!(self.kind, kind::STRUCT | kind::UNION)
    }
}

#[derive(Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Bit offset, or `(bitfield_size << 24) | bit_offset` when the parent has `kind_flag`.
    offset: u32,
}

/// A member located inside a struct (offsets relative to the struct searched).
struct Found {
    /// Bit offset.
    off: u32,
    /// Bitfield size in bits (0 if not a `kind_flag` bitfield).
    bits: u32,
    /// Member type id.
    ty: u32,
}

/// Parsed BTF: all types (indexed by type id), struct/union members and the string section.
pub struct Btf {
    /// Index = type id; entry 0 is `void`.
    types: Vec<Type>,
    members: Vec<Member>,
    strings: Vec<u8>,
    /// Named STRUCT/UNION -> preferred type id (first one with a non-zero size).
    structs: HashMap<String, u32>,
    /// Other named types (typedefs, ints, enums, forward decls) -> first type id.
    others: HashMap<String, u32>,
}

impl fmt::Debug for Btf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &(self.types.len() - 1))
            .field("structs", &self.structs.len())
            .finish_non_exhaustive()
    }
}

const fn truncated(what: &'static str) -> BtfError {
    BtfError::Truncated { what }
}

const fn malformed(what: &'static str) -> BtfError {
    BtfError::Malformed { what }
}

/// Bounds-checked reader of u32 words in the blob's byte order.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Big-endian blob (words are byte-swapped after a little-endian read).
    be: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], pos: usize, be: bool) -> Self {
        Self { buf, pos, be }
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(truncated(what))?;
        let bytes = self.buf.get(self.pos..end).ok_or(truncated(what))?;
        self.pos = end;
        Ok(bytes)
    }

    fn words<const N: usize>(&mut self, what: &'static str) -> Result<[u32; N]> {
        let mut out = [0; N];
        for word in &mut out {
            let bytes: [u8; 4] = self.skip(4, what)?.try_into().unwrap_or_default();
            let le = u32::from_le_bytes(bytes);
            *word = if self.be { le.swap_bytes() } else { le };
        }
        Ok(out)
    }
}

/// The NUL-terminated string at `off` in the string section.
fn str_at(strings: &[u8], off: u32) -> Result<&str> {
    let tail = strings.get(off as usize..).ok_or(truncated("string offset"))?;
    let len = tail.iter().position(|&b| b == 0).ok_or(truncated("unterminated string"))?;
    std::str::from_utf8(&tail[..len]).map_err(|_| malformed("non-UTF-8 name"))
}

impl Btf {
    /// Loads the running kernel's BTF from `/sys/kernel/btf/vmlinux`.
    pub fn from_sys_fs() -> Result<Self> {
        Self::from_file(Path::new(SYS_BTF_PATH))
    }

    /// Loads a raw BTF blob from a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        match std::fs::read(&path) {
            Ok(data) => Self::from_bytes(data),
            Err(source) => Err(BtfError::Io { path, source }),
        }
    }

    /// Parses a raw BTF blob (either byte order) and indexes its struct/union names.
    pub fn from_bytes(data: Vec<u8>) -> Result<Self> {
        let [m0, m1, version, ..] = data[..] else {
            return Err(truncated("header"));
        };
        let big_endian = match u16::from_le_bytes([m0, m1]) {
            BTF_MAGIC => false,
            m if m.swap_bytes() == BTF_MAGIC => true,
            found => return Err(BtfError::BadMagic { found }),
        };
        if version != 1 {
            return Err(BtfError::UnsupportedVersion { version });
        }
        let [hdr_len, type_off, type_len, str_off, str_len] = Reader::new(&data, 4, big_endian).words("header")?;
        let hdr_len = hdr_len as usize;
        if hdr_len < HEADER_LEN {
            return Err(malformed("header length too small"));
        }
        // Section offsets are relative to the end of the header.
        let section = |off: u32, len: u32, what| {
            let start = hdr_len.checked_add(off as usize).ok_or(truncated(what))?;
            Reader::new(&data, start, big_endian).skip(len as usize, what)
        };
        let type_sec = section(type_off, type_len, "type section")?;
        let strings = section(str_off, str_len, "string section")?.to_vec();

        let mut types = vec![Type::default()]; // id 0: void
        let mut members = Vec::new();
        let mut r = Reader::new(type_sec, 0, big_endian);
        while r.pos < type_sec.len() {
            let id = u32::try_from(types.len()).map_err(|_| malformed("too many types"))?;
            let [name_off, info, size_or_type] = r.words("type")?;
            let kind = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as u16;
            if kind == 0 || kind > kind::ENUM64 {
                return Err(BtfError::UnknownKind { kind, id });
            }
            let data = match kind {
                kind::INT => Data::Int(r.words::<1>("int")?[0]),
                kind::ARRAY => {
                    let [elem, _index_type, nelems] = r.words("array")?;
                    Data::Array(elem, nelems)
                }
                kind::STRUCT | kind::UNION => {
                    let start = members.len();
                    for _ in 0..vlen {
                        let [name_off, type_id, offset] = r.words("member")?;
                        members.push(Member { name_off, type_id, offset });
                    }
                    Data::Members(start, vlen)
                }
                kind::FUNC_PROTO => {
                    r.skip(8 * usize::from(vlen), "func_proto params")?;
                    Data::Params(vlen)
                }
                _ => {
                    let vlen = usize::from(vlen);
                    let extra = match kind {
                        kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
                        kind::DATASEC | kind::ENUM64 => 12 * vlen,
                        kind::VAR | kind::DECL_TAG => 4,
                        _ => 0,
                    };
                    r.skip(extra, "type data")?;
                    Data::None
                }
            };
            let kind_flag = info >> 31 == 1;
            types.push(Type { kind, kind_flag, name_off, size_or_type, data });
        }

        let (mut structs, mut others) = (HashMap::new(), HashMap::new());
        for (id, t) in (0u32..).zip(&types).filter(|(_, t)| t.name_off != 0) {
            match t.kind {
                kind::STRUCT | kind::UNION => {
                    let name = str_at(&strings, t.name_off)?;
                    let prev = structs.get(name).map(|&p: &u32| types[p as usize].size_or_type);
                    if prev.is_none() || (prev == Some(0) && t.size_or_type != 0) {
                        structs.insert(name.to_owned(), id);
                    }
                }
                kind::INT | kind::ENUM | kind::ENUM64 | kind::FWD | kind::TYPEDEF | kind::FLOAT => {
                    others.entry(str_at(&strings, t.name_off)?.to_owned()).or_insert(id);
                }
                _ => {}
            }
        }
        Ok(Self { types, members, strings, structs, others })
    }

    /// Byte offset of a member of a named struct/union. `member_path` may be dotted
    /// (`"f_path.dentry"`) to descend into nested struct members; members of anonymous
    /// struct/union members are found transparently (as in C). Typedefs and
    /// const/volatile/restrict qualifiers on the way are resolved.
    pub fn member_offset(&self, struct_name: &str, member_path: &str) -> Result<u32> {
        let found = self.try_member_offset(struct_name, member_path)?;
        found.ok_or_else(|| not_found(struct_name, member_path))
    }

    /// Like [`Btf::member_offset`], but `Ok(None)` when the member does not exist (for fields
    /// that vary between kernels, e.g. `inode.i_mtime_sec` on 6.11+ vs `i_mtime` before).
    pub fn try_member_offset(&self, struct_name: &str, member_path: &str) -> Result<Option<u32>> {
        let found = self.lookup(struct_name, member_path)?;
        Ok(found.map(|(offset, _)| offset))
    }

    /// Byte size of a member's type (after resolving typedef/const/volatile), for sanity checks.
    pub fn member_size(&self, struct_name: &str, member_path: &str) -> Result<u32> {
        let found = self.lookup(struct_name, member_path)?;
        let (_, type_id) = found.ok_or_else(|| not_found(struct_name, member_path))?;
        let size = self.type_size(type_id, 0)?;
        size.ok_or_else(|| BtfError::Unsized { ty: struct_name.into(), member: member_path.into() })
    }

    /// Number of parameters of the kernel function `name` (its `FUNC`'s prototype).
    pub fn func_params(&self, name: &str) -> Result<usize> {
        for t in self.types.iter().filter(|t| t.kind == kind::FUNC && t.name_off != 0) {
            if str_at(&self.strings, t.name_off)? == name {
                return match self.ty(t.size_or_type)?.data {
                    Data::Params(n) => Ok(usize::from(n)),
                    _ => Err(malformed("FUNC without a prototype")),
                };
            }
        }
        Err(BtfError::TypeNotFound { name: name.into() })
    }

    /// Byte size of a named struct/union.
    pub fn struct_size(&self, struct_name: &str) -> Result<u32> {
        Ok(self.ty(self.find_struct(struct_name)?)?.size_or_type)
    }

    fn ty(&self, id: u32) -> Result<&Type> {
        self.types.get(id as usize).ok_or(malformed("type id out of range"))
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type (and its id).
    fn resolve(&self, mut id: u32) -> Result<(u32, &Type)> {
        for _ in 0..MAX_DEPTH {
            let t = self.ty(id)?;
            match t.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST => id = t.size_or_type,
                kind::RESTRICT | kind::TYPE_TAG => id = t.size_or_type,
                _ => return Ok((id, t)),
            }
        }
        Err(malformed("type reference chain too long"))
    }

    /// Type id of the named struct/union (or of the struct a typedef of that name refers to).
    fn find_struct(&self, name: &str) -> Result<u32> {
        if let Some(&id) = self.structs.get(name) {
            return Ok(id);
        }
        let not_found = || BtfError::TypeNotFound { name: name.into() };
        match self.resolve(*self.others.get(name).ok_or_else(not_found)?)? {
            (id, t) if t.is_composite() => Ok(id),
            _ => Err(BtfError::NotAStruct { name: name.into() }),
        }
    }

    fn members_of(&self, t: &Type) -> &[Member] {
        match t.data {
            Data::Members(start, len) => {
                let range = start..start + usize::from(len);
                self.members.get(range).unwrap_or_default()
            }
            _ => &[],
        }
    }

    /// Finds the member `name` of the struct/union `t`, descending into anonymous members.
    fn find_member(&self, t: &Type, name: &str, depth: u32) -> Result<Option<Found>> {
        if depth > MAX_DEPTH {
            return Err(malformed("anonymous members nested too deeply"));
        }
        for m in self.members_of(t) {
            let (off, bits) = match t.kind_flag {
                true => (m.offset & 0xff_ffff, m.offset >> 24),
                false => (m.offset, 0),
            };
            let member_name = match m.name_off {
                0 => "",
                name_off => str_at(&self.strings, name_off)?,
            };
            if !member_name.is_empty() {
                if member_name == name {
                    let ty = m.type_id;
                    return Ok(Some(Found { off, bits, ty }));
                }
                continue;
            }
            let (_, inner) = self.resolve(m.type_id)?;
            if inner.is_composite()
                && let Some(mut found) = self.find_member(inner, name, depth + 1)?
            {
                let total = found.off.checked_add(off);
                found.off = total.ok_or(malformed("offset overflow"))?;
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// True for an INT that only occupies part of its storage (legacy bitfield encoding).
    fn is_int_bitfield(&self, type_id: u32) -> Result<bool> {
        let (_, t) = self.resolve(type_id)?;
        Ok(match t.data {
            Data::Int(encoding) => {
                let (bits, offset) = (encoding & 0xff, (encoding >> 16) & 0xff);
                offset != 0 || u64::from(bits) != u64::from(t.size_or_type) * 8
            }
            _ => false,
        })
    }

    /// Resolves a dotted member path to (byte offset, member type id); `None` if a component
    /// does not exist.
    fn lookup(&self, struct_name: &str, member_path: &str) -> Result<Option<(u32, u32)>> {
        let mut type_id = self.find_struct(struct_name)?;
        let (mut offset, mut prefix_len) = (0u32, 0usize);
        for component in member_path.split('.') {
            let (_, t) = self.resolve(type_id)?;
            if !t.is_composite() {
                let prefix = member_path.get(..prefix_len.saturating_sub(1));
                let name = format!("{struct_name}.{}", prefix.unwrap_or(member_path));
                return Err(BtfError::NotAStruct { name });
            }
            prefix_len += component.len() + 1;
            if component.is_empty() {
                return Ok(None);
            }
            let Some(found) = self.find_member(t, component, 0)? else {
                return Ok(None);
            };
            if found.bits != 0 || found.off % 8 != 0 || self.is_int_bitfield(found.ty)? {
                let (ty, member) = (struct_name.into(), member_path.into());
                return Err(BtfError::Bitfield { ty, member });
            }
            let total = offset.checked_add(found.off / 8);
            offset = total.ok_or(malformed("offset overflow"))?;
            type_id = found.ty;
        }
        Ok(Some((offset, type_id)))
    }

    /// Byte size of a type, `None` for types without one (void, functions, ...).
    fn type_size(&self, type_id: u32, depth: u32) -> Result<Option<u32>> {
        if depth > MAX_DEPTH {
            return Err(malformed("array nesting too deep"));
        }
        let (_, t) = self.resolve(type_id)?;
        Ok(match (t.kind, t.data) {
            (_, Data::Array(elem, nelems)) => match self.type_size(elem, depth + 1)? {
                Some(size) => Some(size.checked_mul(nelems).ok_or(malformed("array too big"))?),
                None => None,
            },
            (kind::PTR, _) => Some(PTR_SIZE),
            (kind::INT | kind::ENUM | kind::ENUM64 | kind::FLOAT, _) => Some(t.size_or_type),
            (kind::STRUCT | kind::UNION, _) => Some(t.size_or_type),
            _ => None,
        })
    }
}

fn not_found(struct_name: &str, member_path: &str) -> BtfError {
    let (ty, member) = (struct_name.into(), member_path.into());
    BtfError::MemberNotFound { ty, member }
}

#[cfg(test)]
mod tests;
