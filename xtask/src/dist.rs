//! `cargo xtask dist`: the release artifacts.
//!
//! - `target/dist/mcpguard`: the daemon and CLI, static (musl, release profile, symbols
//!   stripped), with the eBPF object embedded by the agent's build.rs. Checked to be an ELF
//!   without an interpreter (`PT_INTERP`), so it runs on any x86_64 Linux.
//! - `target/dist/mcpguard_VERSION_amd64.deb`: a staged tree (`packaging/deb/` for the control
//!   files, the unit, the maintainer scripts) built with Debian's own
//!   `dpkg-deb --build --root-owner-group`; the man page is generated from the binary's `--help`
//!   texts. `--lintian` runs `lintian` on it and fails on any tag not explained in
//!   `packaging/deb/lintian-overrides`.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

pub const TARGET: &str = "x86_64-unknown-linux-musl";
/// Debian revision of the package (the upstream version is the workspace's).
const DEB_REVISION: &str = "1";

#[derive(clap::Args)]
pub struct Args {
    /// Run lintian on the package and fail on any tag not overridden (apt install lintian).
    #[arg(long)]
    pub lintian: bool,
}

/// What `dist` produced.
pub struct Dist {
    pub binary: PathBuf,
    pub deb: PathBuf,
    pub version: String,
}

pub fn run(a: &Args) -> Result<()> {
    let d = build()?;
    if a.lintian {
        lintian(&d.deb)?;
    }
    println!("dist: mcpguard {}", d.version);
    println!("dist: {}", d.binary.display());
    println!("dist: {}", d.deb.display());
    Ok(())
}

/// The Debian package version: workspace version + revision.
pub fn deb_version() -> String {
    format!("{}-{DEB_REVISION}", env!("CARGO_PKG_VERSION"))
}

pub fn build() -> Result<Dist> {
    let root = crate::vm::workspace_root();
    let binary = static_binary(&root)?;
    let dist = binary.parent().context("dist binary without a directory")?.to_path_buf();
    let version = deb_version();
    let deb = dist.join(format!("mcpguard_{version}_amd64.deb"));
    let t = Instant::now();
    package(&root, &binary, &dist, &version, &deb)?;
    eprintln!("dist: packaged {} in {:.1}s", deb.display(), t.elapsed().as_secs_f64());
    Ok(Dist { binary, deb, version })
}

/// `target/dist/mcpguard`: built static, stripped, checked to have no program interpreter. The
/// VM matrix boots this file as the daemon in each guest; `dist` packages it.
pub fn static_binary(root: &Path) -> Result<PathBuf> {
    let dist = crate::vm::target_dir(root)?.join("dist");
    std::fs::create_dir_all(&dist)?;
    let t = Instant::now();
    let built = build_static(root)?;
    eprintln!("dist: built {} in {:.0}s", built.display(), t.elapsed().as_secs_f64());
    let binary = dist.join("mcpguard");
    run_ok(
        Command::new("strip")
            .args(["--strip-unneeded", "--remove-section=.comment", "--remove-section=.note"])
            .arg(&built)
            .arg("-o")
            .arg(&binary),
        "strip (binutils)",
    )?;
    check_static(&binary)?;
    Ok(binary)
}

/// `cargo build --release --target x86_64-unknown-linux-musl -p mcpguard --bin mcpguard`.
fn build_static(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "-p", "mcpguard", "--bin", "mcpguard", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!(
            "building mcpguard for {TARGET} failed ({}); see the errors above (the musl target: \
             `rustup target add {TARGET}`, scripts/setup-vm.sh)",
            out.status
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "mcpguard"
            && let Some(exe) = v["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo reported no `mcpguard` executable for {TARGET}")
}

/// An x86_64 ELF executable with no program interpreter (static or static-pie).
fn check_static(path: &Path) -> Result<()> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || u16_at(18) != 62 {
        bail!("{} is not an x86_64 ELF64 file", path.display());
    }
    let phoff = usize::try_from(u64::from_le_bytes(b[32..40].try_into()?))?;
    let (phentsize, phnum) = (usize::from(u16_at(54)), usize::from(u16_at(56)));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(b.get(o..o + 4).context("truncated program header")?.try_into()?);
        if p_type == 3 {
            bail!("{} has a program interpreter (PT_INTERP): it is not static", path.display());
        }
    }
    Ok(())
}

/// Stages the package tree and runs `dpkg-deb --build --root-owner-group`.
fn package(root: &Path, binary: &Path, dist: &Path, version: &str, deb: &Path) -> Result<()> {
    let pkg = root.join("packaging/deb");
    let stage = dist.join("deb-root");
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let put = |rel: &str, src: &Path, mode: u32| -> Result<()> {
        let dst = stage.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap())?;
        std::fs::copy(src, &dst).with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
        set_mode(&dst, mode)
    };
    let write = |rel: &str, data: &[u8], mode: u32| -> Result<()> {
        let dst = stage.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap())?;
        std::fs::write(&dst, data).with_context(|| format!("writing {}", dst.display()))?;
        set_mode(&dst, mode)
    };
    put("usr/bin/mcpguard", binary, 0o755)?;
    put("lib/systemd/system/mcpguard.service", &root.join("packaging/mcpguard.service"), 0o644)?;
    let mut conffiles = vec!["/etc/mcpguard/mcpguard.toml".to_string()];
    put("etc/mcpguard/mcpguard.toml", &root.join("packaging/mcpguard.toml"), 0o644)?;
    for sub in ["", "tools"] {
        let dir = root.join("policies").join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no policies in {}", dir.display());
        }
        for f in files {
            let rel = Path::new("etc/mcpguard/policies").join(sub).join(f.file_name().unwrap());
            let rel = rel.to_str().context("non-UTF-8 policy name")?;
            put(rel, &f, 0o644)?;
            conffiles.push(format!("/{rel}"));
        }
    }
    let doc = "usr/share/doc/mcpguard";
    put(&format!("{doc}/copyright"), &pkg.join("copyright"), 0o644)?;
    put(&format!("{doc}/README.md"), &root.join("README.md"), 0o644)?;
    put(&format!("{doc}/policies.md"), &root.join("policies/README.md"), 0o644)?;
    write(&format!("{doc}/changelog.Debian.gz"), &gzip(changelog(version).as_bytes())?, 0o644)?;
    let man = man_page(binary, version)?;
    write("usr/share/man/man8/mcpguard.8.gz", &gzip(man.as_bytes())?, 0o644)?;
    write("usr/share/lintian/overrides/mcpguard", &std::fs::read(pkg.join("lintian-overrides"))?, 0o644)?;
    // Control area.
    for s in ["postinst", "prerm", "postrm"] {
        put(&format!("DEBIAN/{s}"), &pkg.join(s), 0o755)?;
    }
    write("DEBIAN/conffiles", format!("{}\n", conffiles.join("\n")).as_bytes(), 0o644)?;
    write("DEBIAN/md5sums", md5sums(&stage, &conffiles)?.as_bytes(), 0o644)?;
    let installed_kib = du_kib(&stage)?;
    let control = std::fs::read_to_string(pkg.join("control"))?
        .replace("@VERSION@", version)
        .replace("@INSTALLED_SIZE@", &installed_kib.to_string());
    write("DEBIAN/control", control.as_bytes(), 0o644)?;
    // Directories 0755 whatever the umask.
    for_each_dir(&stage, &mut |d| set_mode(d, 0o755))?;
    let _ = std::fs::remove_file(deb);
    run_ok(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group", "-Zxz"])
            .arg(&stage)
            .arg(deb)
            .stdout(Stdio::null()),
        "dpkg-deb (dpkg)",
    )
}

fn changelog(version: &str) -> String {
    // The date of the commit being packaged, so the package is reproducible.
    let date = Command::new("git")
        .args(["log", "-1", "--format=%aD"])
        .current_dir(crate::vm::workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "Thu, 01 Jan 2026 00:00:00 +0000".into());
    format!(
        "mcpguard ({version}) unstable; urgency=medium\n\n  * Package built by `cargo xtask dist` from the mcpguard source tree.\n\n \
         -- mcpguard maintainers <mcpguard@example.invalid>  {date}\n"
    )
}

/// A section-8 man page from the binary's own help texts (help2man style): the top-level
/// `--help`, then one subsection per subcommand with its `--help`.
fn man_page(binary: &Path, version: &str) -> Result<String> {
    let help = |args: &[&str]| -> Result<String> {
        let out = Command::new(binary)
            .args(args)
            .arg("--help")
            .env("COLUMNS", "80")
            .output()
            .with_context(|| format!("running {} --help", binary.display()))?;
        if !out.status.success() {
            bail!("{} {} --help failed: {}", binary.display(), args.join(" "), out.status);
        }
        Ok(String::from_utf8(out.stdout)?)
    };
    let top = help(&[])?;
    let mut subs = Vec::new();
    let mut in_cmds = false;
    for l in top.lines() {
        if l == "Commands:" {
            in_cmds = true;
        } else if in_cmds && let Some(rest) = l.strip_prefix("  ") {
            if let Some(name) = rest.split_whitespace().next()
                && !rest.starts_with(' ')
                && name != "help"
            {
                subs.push(name.to_string());
            }
        } else if in_cmds && l.is_empty() {
            in_cmds = false;
        }
    }
    if subs.is_empty() {
        bail!("no `Commands:` in `mcpguard --help`: cannot write the man page");
    }
    let mut m = String::new();
    let _ = writeln!(m, ".\\\" Generated by `cargo xtask dist` from `mcpguard --help`; do not edit.");
    let _ = writeln!(m, ".TH MCPGUARD 8 \"\" \"mcpguard {version}\" \"System Administration\"");
    let _ = writeln!(m, ".SH NAME\nmcpguard \\- per-task, kernel-enforced grants for MCP servers");
    let _ = writeln!(m, ".SH SYNOPSIS\n.B mcpguard\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]");
    let _ = writeln!(
        m,
        ".SH DESCRIPTION\nAn MCP server, and every process it starts, runs governed: it may execute only the \
         binaries and open only the paths of its current task grant, enforced in the kernel by eBPF programs. \
         The daemon (\\fBmcpguard daemon\\fR, the systemd unit \\fBmcpguard.service\\fR) loads and pins the \
         programs; the other commands talk to it over its control socket."
    );
    let _ = writeln!(m, ".PP\n.nf\n{}.fi", roff_escape(&top));
    let _ = writeln!(m, ".SH COMMANDS");
    for s in &subs {
        let _ = writeln!(m, ".SS \"mcpguard {s}\"\n.nf\n{}.fi", roff_escape(&help(&[s])?));
    }
    let _ = writeln!(
        m,
        ".SH FILES\n.TP\n.I /etc/mcpguard/mcpguard.toml\ndaemon settings (\\fB\\-\\-config\\fR)\n.TP\n\
         .I /etc/mcpguard/policies\nshipped policies (\\fB\\-\\-policy\\fR, \\fB\\-\\-baseline\\fR NAME)\n.TP\n\
         .I /run/mcpguard/mcpguard.sock\ncontrol socket\n.TP\n.I /var/lib/mcpguard/state.json\nsessions and grants\n\
         .TP\n.I /var/log/mcpguard/audit.jsonl\naudit log\n.TP\n.I /sys/fs/bpf/mcpguard\npinned programs and maps \
         (\\fBmcpguard unpin\\fR removes them)"
    );
    let _ = writeln!(m, ".SH SEE ALSO\n/usr/share/doc/mcpguard/README.md, /usr/share/doc/mcpguard/policies.md");
    Ok(m)
}

/// Help text as roff inside `.nf`: backslashes escaped, lines starting with `.` or `'` guarded.
fn roff_escape(s: &str) -> String {
    let mut out = String::new();
    for l in s.lines() {
        let l = l.replace('\\', "\\e").replace('-', "\\-");
        if l.starts_with('.') || l.starts_with('\'') {
            out.push_str("\\&");
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let mut child = Command::new("gzip")
        .args(["-9n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running gzip")?;
    child.stdin.take().unwrap().write_all(data)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// `DEBIAN/md5sums` for every file outside `DEBIAN/` that is not a conffile (as dh_md5sums).
fn md5sums(stage: &Path, conffiles: &[String]) -> Result<String> {
    let mut files = Vec::new();
    walk_files(stage, stage, &mut files)?;
    files.retain(|f| !f.starts_with("DEBIAN/") && !conffiles.iter().any(|c| c.trim_start_matches('/') == f));
    files.sort();
    let out = Command::new("md5sum").args(&files).current_dir(stage).output().context("running md5sum")?;
    if !out.status.success() {
        bail!("md5sum failed: {}", out.status);
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn walk_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk_files(base, &p, out)?;
        } else {
            out.push(p.strip_prefix(base)?.to_str().context("non-UTF-8 path")?.to_string());
        }
    }
    Ok(())
}

fn for_each_dir(dir: &Path, f: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
    f(dir)?;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            for_each_dir(&p, f)?;
        }
    }
    Ok(())
}

/// Installed-Size: KiB of the files outside `DEBIAN/`, rounded up per file (as dpkg-gencontrol).
fn du_kib(stage: &Path) -> Result<u64> {
    let mut files = Vec::new();
    walk_files(stage, stage, &mut files)?;
    let mut kib = 0;
    for f in files.iter().filter(|f| !f.starts_with("DEBIAN/")) {
        kib += std::fs::metadata(stage.join(f))?.len().div_ceil(1024);
    }
    Ok(kib)
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", p.display()))
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {what}"))?;
    if !st.success() {
        bail!("{what} failed: {st} ({cmd:?})");
    }
    Ok(())
}

/// `lintian` on the package; fails on errors and warnings not overridden (the overrides file
/// ships in the package, each with its reason).
pub fn lintian(deb: &Path) -> Result<()> {
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning", "--display-info", "--info"])
        .arg(deb)
        .output()
        .context("running lintian (apt install lintian; scripts/setup-vm.sh installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    for l in text.lines() {
        eprintln!("lintian: {l}");
    }
    if !out.status.success() {
        bail!(
            "lintian reports tags on {} ({}): fix them or explain each in packaging/deb/lintian-overrides",
            deb.display(),
            out.status
        );
    }
    eprintln!("dist: lintian clean (errors, warnings; info tags printed above)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_not_taken_for_static() {
        let e = check_static(Path::new("/bin/sh")).unwrap_err().to_string();
        assert!(e.contains("PT_INTERP"), "{e}");
        assert!(check_static(Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn help_text_cannot_inject_roff_requests() {
        let s = roff_escape(".SH X\n'br\na\\b --flag\n");
        assert_eq!(s, "\\&.SH X\n\\&'br\na\\eb \\-\\-flag\n");
    }
}
