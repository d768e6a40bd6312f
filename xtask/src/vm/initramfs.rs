//! The guest's root filesystem: busybox (for `/init` only, kept out of the tests' paths), a
//! merged-/usr layout, the host's own dynamic binaries that the scenarios run (at the same
//! paths, with their shared libraries and `/etc/ld.so.cache`), and the static test binaries at
//! their host paths (the engine tests name the helper by its absolute build path).
use std::{
    collections::BTreeSet,
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::cpio::{Archive, Node};

/// Where busybox and its applet links live in the guest (not on the tests' PATH).
pub const BB_DIR: &str = "/.mcpg";

/// Host binaries every run includes (the engine fixtures and scenarios use them); more are found
/// by scanning the test sources for `"/usr/bin/NAME"` literals.
pub const BASE_BINARIES: &[&str] = &[
    "/usr/bin/dash",
    "/bin/sh",
    "/usr/bin/sh",
    "/usr/bin/cat",
    "/usr/bin/true",
    "/usr/bin/false",
    "/usr/bin/tee",
    "/usr/bin/setsid",
    "/usr/bin/sleep",
    "/usr/bin/head",
    "/usr/bin/env",
];

pub struct Spec<'a> {
    /// Static busybox on the host.
    pub busybox: &'a Path,
    /// Host paths (binaries, scripts, files) to include, with their shared libraries.
    pub host_paths: &'a [PathBuf],
    /// Static binaries built for the guest: (host file to read, path in the guest). The
    /// content may differ from the host path (a debug-stripped copy).
    pub guest_binaries: &'a [(PathBuf, PathBuf)],
    /// The `/init` script.
    pub init: &'a str,
    /// Extra small files: (guest path, contents).
    pub files: &'a [(&'a str, Vec<u8>)],
}

/// Builds the archive. Returns it and the list of shared libraries pulled in (for the log).
pub fn build(spec: &Spec<'_>) -> Result<(Archive, Vec<PathBuf>)> {
    let mut a = Archive::default();
    // Merged /usr, as on the host.
    for d in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64"] {
        a.add(d, Node::Dir)?;
    }
    a.add("bin", Node::Symlink("usr/bin".into()))?;
    a.add("sbin", Node::Symlink("usr/sbin".into()))?;
    a.add("lib", Node::Symlink("usr/lib".into()))?;
    a.add("lib64", Node::Symlink("usr/lib64".into()))?;
    for d in ["proc", "sys", "dev", "tmp", "run", "root", "etc", "var/tmp"] {
        a.add(d, Node::Dir)?;
    }
    a.add(&format!("{BB_DIR}/busybox"), Node::HostFile { src: spec.busybox.to_path_buf(), mode: 0o755 })?;
    a.add("init", Node::Data { data: spec.init.as_bytes().to_vec(), mode: 0o755 })?;
    for (p, data) in spec.files {
        a.add(p, Node::Data { data: data.clone(), mode: 0o644 })?;
    }
    a.add("etc/ld.so.cache", Node::HostFile { src: "/etc/ld.so.cache".into(), mode: 0o644 })?;

    let mut libs = BTreeSet::new();
    for p in spec.host_paths {
        add_host_path(&mut a, p, 0)?;
        libs.extend(shared_libraries(p)?);
    }
    for lib in &libs {
        add_host_path(&mut a, lib, 0)?;
    }
    for (src, dst) in spec.guest_binaries {
        let dst = dst.to_str().context("non-UTF-8 path")?;
        if a.contains(dst) {
            bail!("{dst} is already in the initramfs");
        }
        a.add(dst, Node::HostFile { src: src.clone(), mode: 0o755 })?;
    }
    Ok((a, libs.into_iter().collect()))
}

/// The path with every directory symlink resolved (on the host), file name kept: where the
/// object lives in the merged-/usr layout.
fn placed(p: &Path) -> Result<PathBuf> {
    let parent = p.parent().context("path without parent")?;
    let name = p.file_name().context("path without file name")?;
    let dir = std::fs::canonicalize(parent).with_context(|| format!("resolving {}", parent.display()))?;
    Ok(dir.join(name))
}

/// Adds a host path: a regular file with its mode, or a symlink as a symlink plus (recursively)
/// its target.
fn add_host_path(a: &mut Archive, p: &Path, depth: u32) -> Result<()> {
    if depth > 16 {
        bail!("symlink loop at {}", p.display());
    }
    let at = placed(p)?;
    let at_s = at.to_str().context("non-UTF-8 path")?;
    let md = std::fs::symlink_metadata(&at).with_context(|| format!("host file {}", p.display()))?;
    if md.file_type().is_symlink() {
        let target = std::fs::read_link(&at)?;
        let t = target.to_str().context("non-UTF-8 symlink")?.to_string();
        a.add(at_s, Node::Symlink(t))?;
        let resolved = if target.is_absolute() { target } else { at.parent().unwrap().join(target) };
        add_host_path(a, &normalize(&resolved), depth + 1)
    } else if md.is_file() {
        use std::os::unix::fs::PermissionsExt as _;
        a.add(at_s, Node::HostFile { src: at.clone(), mode: md.permissions().mode() })
    } else {
        bail!("{} is neither a file nor a symlink", p.display())
    }
}

/// Lexical `..`/`.` removal (for symlink targets like `../lib/x`).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// The shared libraries (and loader) `ldd` lists for a dynamic executable; none for a static
/// binary or a non-ELF file.
fn shared_libraries(p: &Path) -> Result<Vec<PathBuf>> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut magic = [0u8; 4];
    use std::io::Read as _;
    if f.read_exact(&mut magic).is_err() || &magic != b"\x7fELF" {
        return Ok(Vec::new());
    }
    let out = Command::new("ldd").arg(p).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable") || String::from_utf8_lossy(&out.stderr).contains("not a dynamic") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", p.display(), String::from_utf8_lossy(&out.stderr));
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("ldd {}: {line}", p.display());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.trim(),
            None => line,
        };
        let path = path.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// `"/usr/bin/NAME"` (and `/bin/`, `/usr/sbin/`) string literals in the given sources.
pub fn binaries_named_in(sources: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
    let mut found = BTreeSet::new();
    for src in sources {
        let text = std::fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
        for prefix in ["\"/usr/bin/", "\"/bin/", "\"/usr/sbin/", "\"/sbin/"] {
            let mut rest = text.as_str();
            while let Some(i) = rest.find(prefix) {
                let lit = &rest[i + 1..];
                let end = lit.find('"').unwrap_or(lit.len());
                let path = &lit[..end];
                let name = &path[prefix.len() - 1..];
                if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c)) {
                    found.insert(PathBuf::from(path));
                }
                rest = &lit[end..];
            }
        }
    }
    Ok(found)
}

/// Source files of a directory tree with the given extension.
pub fn sources_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sources_under(&p, ext));
        } else if p.extension().is_some_and(|x| x == ext) {
            out.push(p);
        }
    }
    out.sort();
    out
}
