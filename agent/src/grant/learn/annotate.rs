//! What the filesystem says about each observation when the session ends (the CLI, right after
//! the daemon's answer): whether the path is still the object observed (by device and inode),
//! whether it was created during the session, the sha256 of executed binaries, the virtualenv a
//! path lies in. Display paths are repaired where the kernel cut a component (names longer than
//! 31 bytes), by finding the one entry of that prefix that is the object observed.
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::observations::{CallRecord, Run};
use crate::grant::kgrant::{FileId, kernel_dev, sha256_file};

/// Longest path component an event carries whole (`EVENT_NAME_LEN` minus the NUL).
const CUT: usize = mcpguard_common::EVENT_NAME_LEN - 1;

fn id(md: &std::fs::Metadata) -> FileId {
    FileId { dev: kernel_dev(md.dev()), ino: md.ino() }
}

/// `path` with cut components completed: for a component of exactly [`CUT`] bytes that does not
/// exist, the one entry of the directory starting with it (the object `ino` for the last one).
#[must_use]
pub fn repair(path: &str, ino: u64) -> String {
    let mut cur = PathBuf::from("/");
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for (i, c) in parts.iter().enumerate() {
        let next = cur.join(c);
        if c.len() != CUT || next.symlink_metadata().is_ok() {
            cur = next;
            continue;
        }
        let last = i + 1 == parts.len();
        let found: Vec<PathBuf> = std::fs::read_dir(&cur)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(c))
            .filter(|e| !last || ino == 0 || e.metadata().is_ok_and(|m| m.ino() == ino))
            .map(|e| e.path())
            .collect();
        match found.as_slice() {
            [one] => cur.clone_from(one),
            _ => return path.to_owned(),
        }
    }
    cur.to_string_lossy().into_owned()
}

fn created_since(md: &std::fs::Metadata, since: SystemTime) -> bool {
    md.created().is_ok_and(|b| b >= since)
}

/// The virtualenv (directory holding `pyvenv.cfg`) above `path`, if any.
fn venv_of(path: &Path) -> Option<String> {
    path.ancestors().skip(1).find(|a| a.join("pyvenv.cfg").is_file()).map(|a| a.to_string_lossy().into_owned())
}

/// Annotates every observation of `run` (see [`super::observations::Observation`]); `since` is
/// when the session started (objects born after it were created by the session).
pub fn annotate(run: &mut Run, since: SystemTime) {
    for o in &mut run.observations {
        let Some(p) = o.path.clone() else { continue };
        if !p.starts_with('/') {
            continue;
        }
        let p = repair(&p, o.ino);
        let md = std::fs::metadata(&p);
        o.now = Some(match &md {
            Err(_) => "missing".into(),
            Ok(m) if o.ino != 0 && id(m) != (FileId { dev: o.dev, ino: o.ino }) => "replaced".into(),
            Ok(m) if m.is_dir() => "dir".into(),
            Ok(_) => "file".into(),
        });
        let written = o.access.contains('w') || !matches!(o.hook.as_str(), "open" | "exec" | "mmap" | "mprotect");
        o.created = written && md.as_ref().is_ok_and(|m| created_since(m, since));
        if o.created || o.now.as_deref() == Some("missing") || o.now.as_deref() == Some("replaced") {
            o.parent_before = Path::new(&p)
                .ancestors()
                .skip(1)
                .find(|a| std::fs::metadata(a).is_ok_and(|m| m.is_dir() && !created_since(&m, since)))
                .map(|a| a.to_string_lossy().into_owned());
        }
        if o.hook == "exec" && o.now.as_deref() == Some("file") {
            o.sha256 = std::fs::File::open(&p).and_then(|mut f| sha256_file(&mut f)).ok();
        }
        o.venv = venv_of(Path::new(&p));
        o.path = Some(p);
    }
}

/// The proxy's view of one call: its string arguments that name existing absolute paths,
/// canonical (as the proxy resolves them before checking a template's roots).
pub fn call_paths(c: &mut CallRecord) {
    let Some(args) = c.arguments.as_object() else { return };
    for (k, v) in args {
        if let Some(s) = v.as_str()
            && s.starts_with('/')
            && let Ok(p) = std::fs::canonicalize(s)
        {
            c.paths.insert(k.clone(), p.to_string_lossy().into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::learn::observations::Observation;

    #[test]
    fn cut_names_are_repaired_and_created_files_found() {
        let dir = std::env::temp_dir().join(format!("mcpg-annot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let long = "a".repeat(40) + ".so";
        std::fs::write(dir.join(&long), "x").unwrap();
        let ino = std::fs::metadata(dir.join(&long)).unwrap().ino();
        let cut = format!("{}/{}", dir.display(), &long[..CUT]);
        assert_eq!(repair(&cut, ino), dir.join(&long).display().to_string());
        assert_eq!(repair(&cut, ino + 1), cut, "not the object observed: left as it was");
        let since = SystemTime::now() - std::time::Duration::from_secs(3600);
        let mut run = Run {
            observations: vec![Observation {
                hook: "open".into(),
                access: "w".into(),
                path: Some(cut.clone()),
                ino,
                dev: kernel_dev(std::fs::metadata(&dir).unwrap().dev()),
                ..Observation::default()
            }],
            ..Run::default()
        };
        annotate(&mut run, since);
        let o = &run.observations[0];
        assert_eq!(o.now.as_deref(), Some("file"));
        // The file is younger than `since` where the filesystem keeps birth times.
        if std::fs::metadata(dir.join(&long)).unwrap().created().is_ok() {
            assert!(o.created, "{o:?}");
            assert!(o.parent_before.is_some());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
