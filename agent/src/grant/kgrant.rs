//! Grant -> kernel entries: resolves the objects a grant names (binaries, files, directory trees)
//! to (device, inode) identities and change fingerprints. No kernel needed; unit-tested.
use std::{
    collections::BTreeMap,
    fs::File,
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use mcpguard_common::{
    ACCESS_CONNECT, ACCESS_READ, ACCESS_WRITE, EXEC_NAME_LEN, FP_HAS_GENERATION, Fingerprint, NameKey, ObjKey,
};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("binary `{path}` cannot be used: {source}")]
    BinaryMissing { path: PathBuf, source: std::io::Error },
    #[error("binary `{path}` is not a regular file")]
    NotARegularFile { path: PathBuf },
    #[error("binary `{path}` has sha256 {actual}, but the grant pins {expected}")]
    DigestMismatch { path: PathBuf, expected: String, actual: String },
    #[error("binary `{path}` changed while it was being hashed")]
    ChangedWhileHashing { path: PathBuf },
    #[error("path `{path}` cannot be granted: {source}")]
    PathMissing { path: PathBuf, source: std::io::Error },
    #[error("path `{path}` must be absolute")]
    NotAbsolute { path: PathBuf },
    #[error("network target `{target}`: {msg}")]
    Net { target: String, msg: String },
    #[error("exec `{path}`: {msg}")]
    Cmdline { path: PathBuf, msg: String },
    #[error("unix socket `{path}` cannot be granted: {msg}")]
    UnixSocket { path: PathBuf, msg: String },
}

/// Identity of a file object as the kernel sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    /// Kernel `dev_t` encoding: `(major << 20) | minor`.
    pub dev: u32,
    pub ino: u64,
}

/// Userspace `st_dev` (glibc encoding) -> kernel `dev_t` (`MKDEV`).
#[must_use]
pub fn kernel_dev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev);
    let minor = libc::minor(st_dev);
    (major << 20) | (minor & 0xf_ffff)
}

impl FileId {
    #[must_use]
    pub fn of(md: &std::fs::Metadata) -> Self {
        Self { dev: kernel_dev(md.dev()), ino: md.ino() }
    }
    #[must_use]
    pub fn key(self, grant: u64) -> ObjKey {
        ObjKey { grant, dev: self.dev, _pad: 0, ino: self.ino }
    }
}

/// An approved binary: the object, its fingerprint and content digest at approval time.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecObject {
    /// As requested (for display).
    pub path: PathBuf,
    /// After resolving symlinks: where the object lives.
    pub resolved: PathBuf,
    pub id: FileId,
    pub fingerprint: FingerprintRepr,
    /// Directory holding the binary, and its name: lets the kernel say `binary_changed` when the
    /// approved path later holds another object.
    pub dir: FileId,
    pub name: String,
    pub sha256: String,
}

/// Serialisable copy of [`Fingerprint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FingerprintRepr {
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub generation: Option<u32>,
}

impl From<FingerprintRepr> for Fingerprint {
    fn from(f: FingerprintRepr) -> Self {
        Self {
            size: f.size,
            mtime_sec: f.mtime_sec,
            ctime_sec: f.ctime_sec,
            mtime_nsec: f.mtime_nsec,
            ctime_nsec: f.ctime_nsec,
            generation: f.generation.unwrap_or(0),
            flags: if f.generation.is_some() { FP_HAS_GENERATION } else { 0 },
        }
    }
}

impl ExecObject {
    #[must_use]
    pub fn name_key(&self, grant: u64) -> NameKey {
        let mut name = [0u8; EXEC_NAME_LEN];
        let bytes = self.name.as_bytes();
        let n = bytes.len().min(EXEC_NAME_LEN - 1);
        name[..n].copy_from_slice(&bytes[..n]);
        NameKey { grant, dev: self.dir.dev, _pad: 0, parent_ino: self.dir.ino, name }
    }
}

/// A grant resolved to kernel objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelGrant {
    pub exec: Vec<ExecObject>,
    /// Object -> access bits (ACCESS_READ | ACCESS_WRITE), merged per object.
    #[serde(with = "paths_as_list")]
    pub paths: BTreeMap<FileId, u32>,
    /// For display: requested path -> bits.
    pub path_names: Vec<(PathBuf, u32)>,
    /// IP addresses (prefixes) and ports that may be connected to or listened on, DNS names
    /// resolved when the grant was compiled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<crate::grant::net::NetEntry>,
    /// Unix socket names (`sun_path` bytes; abstract names start with NUL) reachable by name:
    /// abstract sockets, and the resolved paths of granted path sockets (the kill backend's
    /// address programs see only the name). Path sockets are also in `paths` with
    /// [`ACCESS_CONNECT`] on their object, which the deny backends decide on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unix_names: Vec<Vec<u8>>,
    /// For display: each connect/listen target as granted, with what it resolved to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net_names: Vec<(String, Vec<String>)>,
    /// Command-line rules of approved binaries (`cmdline.rs`); a binary not listed runs with
    /// any command line and no code-injecting environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<crate::grant::cmdline::ArgvObject>,
}

/// JSON object keys must be strings: the object map is stored as a list of pairs.
mod paths_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};

    use super::FileId;

    pub fn serialize<S: Serializer>(m: &BTreeMap<FileId, u32>, s: S) -> Result<S::Ok, S::Error> {
        m.iter().collect::<Vec<_>>().serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<FileId, u32>, D::Error> {
        Ok(Vec::<(FileId, u32)>::deserialize(d)?.into_iter().collect())
    }
}

/// `_IOR('v', 1, long)`; the ioctl request type differs between glibc and musl.
const FS_IOC_GETVERSION: libc::Ioctl = 0x8008_7601_u32 as libc::Ioctl;

fn generation(file: &File) -> Option<u32> {
    use std::os::fd::AsRawFd as _;
    let mut v: libc::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes one long to the pointer we pass.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_GETVERSION, &raw mut v) };
    (r == 0).then_some(v as u32)
}

fn fingerprint(md: &std::fs::Metadata, generation: Option<u32>) -> FingerprintRepr {
    FingerprintRepr {
        size: md.size(),
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        ctime_sec: md.ctime(),
        ctime_nsec: md.ctime_nsec() as u32,
        generation,
    }
}

/// sha256 of a file, hex.
pub fn sha256_file(file: &mut File) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Resolves and fingerprints one binary; refuses it if `expected_sha256` is given and differs.
pub fn resolve_exec(path: &Path, expected_sha256: Option<&str>) -> Result<ExecObject, GrantError> {
    if !path.is_absolute() {
        return Err(GrantError::NotAbsolute { path: path.into() });
    }
    let missing = |source| GrantError::BinaryMissing { path: path.into(), source };
    let resolved = std::fs::canonicalize(path).map_err(missing)?;
    let mut file = File::open(&resolved).map_err(missing)?;
    let before = file.metadata().map_err(missing)?;
    if !before.file_type().is_file() || before.file_type().is_fifo() {
        return Err(GrantError::NotARegularFile { path: path.into() });
    }
    let sha256 = sha256_file(&mut file).map_err(missing)?;
    let after = file.metadata().map_err(missing)?;
    let gen_ = generation(&file);
    let fp = fingerprint(&after, gen_);
    if fingerprint(&before, gen_) != fp {
        return Err(GrantError::ChangedWhileHashing { path: path.into() });
    }
    if let Some(expected) = expected_sha256
        && !expected.eq_ignore_ascii_case(&sha256)
    {
        return Err(GrantError::DigestMismatch {
            path: path.into(),
            expected: expected.to_ascii_lowercase(),
            actual: sha256,
        });
    }
    let dir_path = resolved.parent().unwrap_or(Path::new("/"));
    let dir_md = std::fs::metadata(dir_path).map_err(missing)?;
    let name = resolved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(ExecObject {
        path: path.into(),
        resolved: resolved.clone(),
        id: FileId::of(&after),
        fingerprint: fp,
        dir: FileId::of(&dir_md),
        name,
        sha256,
    })
}

/// Resolves a grant. Paths must exist: a grant names objects, not future names.
pub fn compile(
    exec: &[(PathBuf, Option<String>)],
    read: &[PathBuf],
    write: &[PathBuf],
) -> Result<KernelGrant, GrantError> {
    let mut g = KernelGrant::default();
    for (path, sha) in exec {
        g.exec.push(resolve_exec(path, sha.as_deref())?);
    }
    for (list, bits) in [(read, ACCESS_READ), (write, ACCESS_WRITE)] {
        for path in list {
            if !path.is_absolute() {
                return Err(GrantError::NotAbsolute { path: path.clone() });
            }
            // Follows symlinks: granting a symlink grants the object it names.
            let md =
                std::fs::metadata(path).map_err(|source| GrantError::PathMissing { path: path.clone(), source })?;
            *g.paths.entry(FileId::of(&md)).or_default() |= bits;
            g.path_names.push((path.clone(), bits));
        }
    }
    Ok(g)
}

/// Compiles the command-line rules of the exec entries `rules` (already resolved into `g.exec`
/// by [`compile`], matched by requested path).
pub fn add_cmdline(g: &mut KernelGrant, rules: &[crate::grant::policy::ExecRule]) -> Result<(), GrantError> {
    let mut by_obj: BTreeMap<FileId, Vec<crate::grant::cmdline::ArgvRule>> = BTreeMap::new();
    for r in rules {
        let Some(obj) = g.exec.iter().find(|e| e.path == r.path) else { continue };
        let rule = crate::grant::cmdline::entry_rule(&obj.resolved, r.args.as_deref(), r.inline_code, &r.env)
            .map_err(|msg| GrantError::Cmdline { path: r.path.clone(), msg })?;
        by_obj.entry(obj.id).or_default().push(rule);
    }
    for (id, rules) in by_obj {
        let path = g.exec.iter().find(|e| e.id == id).map(|e| e.path.clone()).unwrap_or_default();
        if let Some(rules) =
            crate::grant::cmdline::object_rules(rules).map_err(|msg| GrantError::Cmdline { path, msg })?
        {
            g.argv.push(crate::grant::cmdline::ArgvObject { id, rules });
        }
    }
    Ok(())
}

/// Adds `bits` on the objects `paths` name (e.g. `ACCESS_WRITE | ACCESS_METADATA`).
pub fn add_paths(g: &mut KernelGrant, paths: &[PathBuf], bits: u32) -> Result<(), GrantError> {
    for path in paths {
        if !path.is_absolute() {
            return Err(GrantError::NotAbsolute { path: path.clone() });
        }
        let md = std::fs::metadata(path).map_err(|source| GrantError::PathMissing { path: path.clone(), source })?;
        *g.paths.entry(FileId::of(&md)).or_default() |= bits;
        g.path_names.push((path.clone(), bits));
    }
    Ok(())
}

/// Adds the network part of a grant: `connect` and `listen` targets (canonical strings, see
/// `net.rs`). DNS names are resolved now with `resolve`; a Unix path must name an existing socket,
/// which is granted by its object (and by its resolved path, for the kill backend).
pub fn compile_net(
    g: &mut KernelGrant,
    connect: &[String],
    listen: &[String],
    resolve: &mut dyn FnMut(&str) -> std::io::Result<Vec<std::net::IpAddr>>,
) -> Result<(), GrantError> {
    use crate::grant::net::{ConnectTarget, ListenTarget};
    let bad = |target: &str, msg: String| GrantError::Net { target: target.to_owned(), msg };
    for t in connect {
        let target: ConnectTarget = t.parse().map_err(|e: crate::grant::net::NetError| bad(t, e.to_string()))?;
        let shown: Vec<String> = match &target {
            ConnectTarget::UnixPath(path) => {
                let sock_err = |msg: String| GrantError::UnixSocket { path: path.clone(), msg };
                let resolved = std::fs::canonicalize(path).map_err(|e| sock_err(e.to_string()))?;
                let md = std::fs::metadata(&resolved).map_err(|e| sock_err(e.to_string()))?;
                if !md.file_type().is_socket() {
                    return Err(sock_err("not a socket".into()));
                }
                *g.paths.entry(FileId::of(&md)).or_default() |= ACCESS_CONNECT;
                let name = crate::grant::net::unix_kernel_name(&ConnectTarget::UnixPath(resolved.clone()))
                    .ok_or_else(|| sock_err("no kernel name".into()))?;
                crate::grant::net::unix_key(0, &name).map_err(|e| sock_err(e.to_string()))?;
                g.unix_names.push(name);
                vec![resolved.display().to_string()]
            }
            ConnectTarget::UnixAbstract(_) => {
                let name =
                    crate::grant::net::unix_kernel_name(&target).ok_or_else(|| bad(t, "no kernel name".into()))?;
                crate::grant::net::unix_key(0, &name).map_err(|e| bad(t, e.to_string()))?;
                g.unix_names.push(name);
                Vec::new()
            }
            ConnectTarget::Ip { .. } => {
                let entries =
                    crate::grant::net::resolve_connect(&target, resolve).map_err(|e| bad(t, e.to_string()))?;
                let shown = entries.iter().map(ToString::to_string).collect();
                g.net.extend(entries);
                shown
            }
        };
        g.net_names.push((target.to_string(), shown));
    }
    for t in listen {
        let target: ListenTarget = t.parse().map_err(|e: crate::grant::net::NetError| bad(t, e.to_string()))?;
        let e = crate::grant::net::listen_entry(&target);
        g.net_names.push((format!("listen {target}"), vec![e.to_string()]));
        g.net.push(e);
    }
    // The trie entries are checked now (port ranges per prefix), not at install.
    crate::grant::net::lpm_entries(0, &g.net).map_err(|e| bad("(grant)", e.to_string()))?;
    Ok(())
}

/// The grant's network part with its DNS names resolved again: `None` when it names no DNS
/// name or nothing changed. Targets are taken from `net_names` (what the grant was compiled
/// from, after any composition), so a composed grant is refreshed as it was issued.
pub fn refresh_net(
    g: &KernelGrant,
    resolve: &mut dyn FnMut(&str) -> std::io::Result<Vec<std::net::IpAddr>>,
) -> Result<Option<KernelGrant>, GrantError> {
    use crate::grant::net::{ConnectTarget, Host};
    let targets: Vec<(String, ConnectTarget)> = g
        .net_names
        .iter()
        .filter(|(t, _)| !t.starts_with("listen "))
        .filter_map(|(t, _)| t.parse::<ConnectTarget>().ok().map(|c| (t.clone(), c)))
        .collect();
    if !targets.iter().any(|(_, c)| matches!(c, ConnectTarget::Ip { host: Host::Name(_), .. })) {
        return Ok(None);
    }
    let mut new = g.clone();
    new.net.retain(|e| e.kind == mcpguard_common::NET_LISTEN_TCP || e.kind == mcpguard_common::NET_LISTEN_UDP);
    for (name, shown) in &mut new.net_names {
        let Some((_, target)) = targets.iter().find(|(t, _)| t == name) else { continue };
        if !matches!(target, ConnectTarget::Ip { .. }) {
            continue;
        }
        let entries = crate::grant::net::resolve_connect(target, resolve)
            .map_err(|e| GrantError::Net { target: name.clone(), msg: e.to_string() })?;
        *shown = entries.iter().map(ToString::to_string).collect();
        new.net.extend(entries);
    }
    crate::grant::net::lpm_entries(0, &new.net)
        .map_err(|e| GrantError::Net { target: "(grant)".into(), msg: e.to_string() })?;
    let sorted = |v: &[crate::grant::net::NetEntry]| {
        let mut v: Vec<String> = v.iter().map(ToString::to_string).collect();
        v.sort();
        v
    };
    Ok((sorted(&new.net) != sorted(&g.net)).then_some(new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_resolved_again_and_only_changes_are_reported() {
        let mut answer = vec!["10.0.0.1".parse().unwrap()];
        let mut g = KernelGrant::default();
        let targets = ["tcp://api.test:443".to_string(), "tcp://10.9.9.9:80".to_string()];
        compile_net(&mut g, &targets, &["tcp://127.0.0.1:9000".into()], &mut |_| Ok(answer.clone())).unwrap();
        assert!(refresh_net(&g, &mut |_| Ok(answer.clone())).unwrap().is_none(), "same answer: no change");
        answer = vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()];
        let new = refresh_net(&g, &mut |_| Ok(answer.clone())).unwrap().expect("changed");
        let shown: Vec<String> = new.net.iter().map(ToString::to_string).collect();
        assert!(shown.contains(&"tcp connect 10.0.0.2:443".to_string()), "{shown:?}");
        assert!(!shown.contains(&"tcp connect 10.0.0.1:443".to_string()), "{shown:?}");
        assert!(shown.contains(&"tcp connect 10.9.9.9:80".to_string()), "literal kept: {shown:?}");
        assert!(shown.contains(&"tcp listen 127.0.0.1:9000".to_string()), "listen kept: {shown:?}");
        assert_eq!(new.net_names[0].1, vec!["tcp connect 10.0.0.2:443", "tcp connect 10.0.0.3:443"]);
        // A name that stops resolving is an error (the old addresses stay in force).
        let err = refresh_net(&g, &mut |_| Err(std::io::Error::other("NXDOMAIN"))).unwrap_err();
        assert!(err.to_string().contains("api.test"), "{err}");
        // No names: nothing to refresh.
        let mut lit = KernelGrant::default();
        compile_net(&mut lit, &targets[1..], &[], &mut |_| Ok(Vec::new())).unwrap();
        assert!(refresh_net(&lit, &mut |_| Ok(Vec::new())).unwrap().is_none());
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcpg-kgrant-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn kernel_dev_encoding() {
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 70000)), (259 << 20) | 70000);
    }

    #[test]
    fn exec_is_bound_to_object_and_digest() {
        let d = tmpdir("exec");
        let bin = d.join("tool");
        std::fs::write(&bin, b"#!/bin/sh\necho hi\n").unwrap();
        let o = resolve_exec(&bin, None).unwrap();
        assert!(o.sha256.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(o.sha256.len(), 64);
        assert_eq!(o.name, "tool");
        let md = std::fs::metadata(&bin).unwrap();
        assert_eq!(o.id, FileId::of(&md));
        assert_eq!(o.fingerprint.size, 18);
        // pinned digest must match
        let err = resolve_exec(&bin, Some(&"0".repeat(64))).unwrap_err();
        assert!(matches!(err, GrantError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("tool"));
        resolve_exec(&bin, Some(&o.sha256.to_uppercase())).unwrap();
        // a symlink resolves to the object it names
        let link = d.join("link");
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        let l = resolve_exec(&link, None).unwrap();
        assert_eq!(l.id, o.id);
        assert_eq!(l.resolved, std::fs::canonicalize(&bin).unwrap());
        // rewriting the file changes the fingerprint
        std::thread::sleep(std::time::Duration::from_millis(5));
        std::fs::write(&bin, b"#!/bin/sh\necho hx\n").unwrap();
        let o2 = resolve_exec(&bin, None).unwrap();
        assert_ne!(o2.fingerprint, o.fingerprint);
        assert_ne!(o2.sha256, o.sha256);
    }

    #[test]
    fn missing_and_bad_inputs_are_named() {
        let err = resolve_exec(Path::new("/nonexistent/mcpg-tool"), None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/mcpg-tool"), "{err}");
        let err = resolve_exec(Path::new("relative/tool"), None).unwrap_err();
        assert!(matches!(err, GrantError::NotAbsolute { .. }));
        let err = resolve_exec(Path::new("/tmp"), None).unwrap_err();
        assert!(matches!(err, GrantError::NotARegularFile { .. }), "{err}");
        let err = compile(&[], &[PathBuf::from("/nonexistent/dir")], &[]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir"));
    }

    #[test]
    fn read_and_write_bits_merge_per_object() {
        let d = tmpdir("paths");
        let g = compile(&[], std::slice::from_ref(&d), &[d.clone(), PathBuf::from("/tmp")]).unwrap();
        let id = FileId::of(&std::fs::metadata(&d).unwrap());
        assert_eq!(g.paths[&id], ACCESS_READ | ACCESS_WRITE);
        let tmp = FileId::of(&std::fs::metadata("/tmp").unwrap());
        assert_eq!(g.paths[&tmp], ACCESS_WRITE);
        assert_eq!(g.path_names.len(), 3);
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<KernelGrant>(&json).unwrap(), g);
    }

    #[test]
    fn name_key_truncates_consistently() {
        let o = ExecObject {
            path: "/x".into(),
            resolved: "/x".into(),
            id: FileId { dev: 1, ino: 2 },
            fingerprint: FingerprintRepr {
                size: 0,
                mtime_sec: 0,
                mtime_nsec: 0,
                ctime_sec: 0,
                ctime_nsec: 0,
                generation: None,
            },
            dir: FileId { dev: 1, ino: 3 },
            name: "n".repeat(100),
            sha256: String::new(),
        };
        let k = o.name_key(7);
        assert_eq!(k.grant, 7);
        assert_eq!(k.parent_ino, 3);
        assert_eq!(k.name[EXEC_NAME_LEN - 1], 0);
        assert_eq!(k.name[EXEC_NAME_LEN - 2], b'n');
    }
}
