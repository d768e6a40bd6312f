//! A minimal `newc` cpio writer for the initramfs: directories, regular files and symlinks,
//! owned by root, written in sorted order so that every directory precedes its contents.
use std::{collections::BTreeMap, io::Write, path::PathBuf};

use anyhow::{Context as _, Result, bail};

pub enum Node {
    Dir,
    /// Contents from a host file, with this mode (permission bits).
    HostFile {
        src: PathBuf,
        mode: u32,
    },
    /// Contents given inline.
    Data {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink(String),
}

/// Archive paths are relative (no leading `/`), `/`-separated, without `.`/`..` components.
#[derive(Default)]
pub struct Archive {
    nodes: BTreeMap<String, Node>,
}

impl Archive {
    fn key(path: &str) -> Result<String> {
        let k = path.trim_start_matches('/').trim_end_matches('/');
        if k.is_empty() || k.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            bail!("bad archive path {path:?}");
        }
        Ok(k.to_string())
    }

    /// Adds `path` (creating its parent directories). Adding the same path twice is fine if it
    /// is the same kind of node (the first one wins); a conflict is an error.
    pub fn add(&mut self, path: &str, node: Node) -> Result<()> {
        let key = Self::key(path)?;
        let mut parent = String::new();
        let comps: Vec<&str> = key.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.nodes.get(&parent) {
                None => {
                    self.nodes.insert(parent.clone(), Node::Dir);
                }
                Some(Node::Dir) => {}
                Some(_) => bail!("{parent} is not a directory in the archive (adding {path})"),
            }
        }
        match (self.nodes.get(&key), &node) {
            (None, _) => {
                self.nodes.insert(key, node);
            }
            (Some(Node::Dir), Node::Dir) => {}
            (Some(Node::Symlink(a)), Node::Symlink(b)) if a == b => {}
            (Some(Node::HostFile { src: a, .. }), Node::HostFile { src: b, .. }) if a == b => {}
            _ => bail!("conflicting entries for {path} in the archive"),
        }
        Ok(())
    }

    pub fn contains(&self, path: &str) -> bool {
        Self::key(path).is_ok_and(|k| self.nodes.contains_key(&k))
    }

    /// Writes the archive; returns the number of bytes written.
    pub fn write(&self, out: &mut impl Write) -> Result<u64> {
        let mut w = Counting { inner: out, n: 0 };
        let mut ino = 1u32;
        for (path, node) in &self.nodes {
            ino += 1;
            let (mode, data): (u32, std::borrow::Cow<'_, [u8]>) = match node {
                Node::Dir => (0o040_755, (&[][..]).into()),
                Node::HostFile { src, mode } => {
                    let d = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
                    (0o100_000 | (mode & 0o7777), d.into())
                }
                Node::Data { data, mode } => (0o100_000 | (mode & 0o7777), (&data[..]).into()),
                Node::Symlink(t) => (0o120_777, t.as_bytes().into()),
            };
            let nlink = if matches!(node, Node::Dir) { 2 } else { 1 };
            entry(&mut w, path, ino, mode, nlink, &data)?;
        }
        entry(&mut w, "TRAILER!!!", 0, 0, 1, &[])?;
        w.flush()?;
        Ok(w.n)
    }
}

fn entry(w: &mut Counting<'_, impl Write>, name: &str, ino: u32, mode: u32, nlink: u32, data: &[u8]) -> Result<()> {
    let size = u32::try_from(data.len()).context("file too large for newc")?;
    let namesize = u32::try_from(name.len() + 1)?;
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
    // rdevminor, namesize, check
    let hdr = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 0, 0, 0, 0, 0, 0
    );
    w.write_all(hdr.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    w.pad4()?;
    w.write_all(data)?;
    w.pad4()?;
    Ok(())
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Counting<'_, W> {
    fn pad4(&mut self) -> std::io::Result<()> {
        let pad = (4 - (self.n % 4) as usize) % 4;
        self.write_all(&[0u8; 3][..pad])
    }
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_first_and_aligned() {
        let mut a = Archive::default();
        a.add("/usr/bin/x", Node::Data { data: b"abc".to_vec(), mode: 0o755 }).unwrap();
        a.add("/bin", Node::Symlink("usr/bin".into())).unwrap();
        assert!(a.add("/bin/y", Node::Dir).is_err(), "bin is a symlink");
        let mut out = Vec::new();
        let n = a.write(&mut out).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len() % 4, 0);
        // Parse it back: names in order, data, 4-byte alignment of every header.
        let mut names = Vec::new();
        let mut off = 0;
        loop {
            assert_eq!(off % 4, 0);
            let h = std::str::from_utf8(&out[off..off + 110]).unwrap();
            assert!(h.starts_with("070701"));
            let field = |i: usize| usize::from_str_radix(&h[6 + 8 * i..14 + 8 * i], 16).unwrap();
            let (size, namesize) = (field(6), field(11));
            let name = std::str::from_utf8(&out[off + 110..off + 110 + namesize - 1]).unwrap().to_string();
            off = (off + 110 + namesize).next_multiple_of(4);
            let data = &out[off..off + size];
            if name == "usr/bin/x" {
                assert_eq!(data, b"abc");
            }
            if name == "bin" {
                assert_eq!(data, b"usr/bin");
            }
            off = (off + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                break;
            }
            names.push(name);
        }
        assert_eq!(off, out.len());
        assert_eq!(names, ["bin", "usr", "usr/bin", "usr/bin/x"]);
    }
}
