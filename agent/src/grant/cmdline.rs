//! Command-line precision for exec grants: argument patterns, interpreters that run scripts only,
//! and the environment variables that inject code.
//!
//! An `[[exec]]` entry may carry `args`, one pattern per argument after `argv[0]`: a literal,
//! `*` (any one argument) or, last, `**` (any remaining arguments, none included). Several
//! entries for the same binary are alternatives. An entry for a known interpreter without `args`
//! runs scripts only: its first argument must be present and must not start with `-` (so `-c`,
//! `-e`, `-m`, `-` and options before the script are refused, reason `inline_code`), unless it
//! says `inline_code = true`. Variables from [`mcpguard_common::INJECTION_ENV`] in a governed
//! exec are refused (`env_injection`) unless the entry names them in `env`.
//!
//! The kernel programs decide on the new process image (`ebpf/src/cmdline.rs`); this module
//! validates entries and compiles them to the kernel's form ([`ArgvRules`] and literal keys).
use std::path::Path;

use mcpguard_common::{ARGV_LITERAL_LEN, ARGV_POSITIONS, ARGV_RULES, ArgKey, ArgvRules, INJECTION_ENV, ObjKey};
use serde::{Deserialize, Serialize};

use crate::grant::kgrant::FileId;

/// One argument pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pat {
    /// Exactly these bytes.
    Lit(String),
    /// Any one argument (`*`).
    Any,
    /// Any one argument that does not start with `-` (an interpreter's script).
    NonOpt,
}

/// One alternative command line of an approved binary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgvRule {
    pub pats: Vec<Pat>,
    /// Any further arguments (`**`).
    pub rest: bool,
    /// An interpreter's script-only rule (its failure is reported as `inline_code`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub script_only: bool,
    /// [`INJECTION_ENV`] variables this rule allows (bit i = entry i).
    #[serde(default)]
    pub env_allow: u32,
}

impl ArgvRule {
    /// Any command line, no injected environment.
    #[must_use]
    pub fn any() -> Self {
        Self { pats: Vec::new(), rest: true, script_only: false, env_allow: 0 }
    }
}

/// The command-line rules of one approved binary in a grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgvObject {
    pub id: FileId,
    pub rules: Vec<ArgvRule>,
}

/// Interpreters whose inline program text is a capability of its own (matched by the approved
/// object's file name: `python3.11` is `python3.11`, a symlink is resolved first).
pub const INTERPRETERS: &[&str] =
    &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "python", "python3", "node", "nodejs", "perl", "ruby"];

/// True when the binary at `resolved` is a known interpreter; `Err` for one that cannot be
/// confined to scripts (busybox: any applet, including a shell, is its first argument).
pub fn interpreter(resolved: &Path) -> Result<bool, String> {
    let name = resolved.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "busybox" {
        return Err("busybox runs any applet (`busybox sh -c ...`): give `args` or `inline_code = true`".into());
    }
    let versioned = |base: &str| {
        name.strip_prefix(base).is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    Ok(INTERPRETERS.contains(&name) || versioned("python") || versioned("perl") || versioned("ruby"))
}

/// Parses an entry's `args` (after variables are substituted).
pub fn parse_args(args: &[String]) -> Result<(Vec<Pat>, bool), String> {
    let mut pats = Vec::new();
    for (i, a) in args.iter().enumerate() {
        match a.as_str() {
            "**" if i + 1 == args.len() => return finish(pats, true),
            "**" => return Err(format!("args[{i}]: `**` must be the last pattern")),
            "*" => pats.push(Pat::Any),
            s if s.contains('*') => {
                return Err(format!(
                    "args[{i}] `{s}`: `*` matches a whole argument only (a glob inside an argument is not supported)"
                ));
            }
            s if s.contains('\0') => return Err(format!("args[{i}]: an argument cannot contain NUL")),
            s if s.len() > ARGV_LITERAL_LEN - 2 => {
                return Err(format!("args[{i}]: literal arguments are at most {} bytes", ARGV_LITERAL_LEN - 2));
            }
            s => pats.push(Pat::Lit(s.to_owned())),
        }
    }
    finish(pats, false)
}

fn finish(pats: Vec<Pat>, rest: bool) -> Result<(Vec<Pat>, bool), String> {
    if pats.len() > ARGV_POSITIONS {
        return Err(format!("at most {ARGV_POSITIONS} argument patterns before `**`"));
    }
    Ok((pats, rest))
}

/// Bits of `names` in [`INJECTION_ENV`]; a name not in the list is an error (it needs no
/// allowing).
pub fn env_bits(names: &[String]) -> Result<u32, String> {
    let mut bits = 0;
    for n in names {
        let i = INJECTION_ENV.iter().position(|e| e == n).ok_or_else(|| {
            format!("env `{n}`: not a variable mcpguard refuses (it refuses {})", INJECTION_ENV.join(", "))
        })?;
        bits |= 1 << i;
    }
    Ok(bits)
}

/// One exec entry's rule: its `args`, or for an interpreter without them and without
/// `inline_code`, the script-only rule; otherwise any command line.
pub fn entry_rule(
    resolved: &Path,
    args: Option<&[String]>,
    inline_code: bool,
    env: &[String],
) -> Result<ArgvRule, String> {
    let env_allow = env_bits(env)?;
    if let Some(a) = args {
        let (pats, rest) = parse_args(a)?;
        return Ok(ArgvRule { pats, rest, script_only: false, env_allow });
    }
    if !inline_code && interpreter(resolved)? {
        return Ok(ArgvRule { pats: vec![Pat::NonOpt], rest: true, script_only: true, env_allow });
    }
    Ok(ArgvRule { env_allow, ..ArgvRule::any() })
}

/// The rules of one object (its entries' rules, duplicates merged); `None` when they add nothing
/// to the kernel's default (any command line, no injected environment).
pub fn object_rules(rules: Vec<ArgvRule>) -> Result<Option<Vec<ArgvRule>>, String> {
    let mut out: Vec<ArgvRule> = Vec::new();
    for r in rules {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.iter().any(|r| *r == ArgvRule::any()) {
        // One entry allows anything: the others add nothing but their environment.
        let env = out.iter().fold(0, |a, r| a | if r.pats.is_empty() && r.rest { r.env_allow } else { 0 });
        if env == 0 {
            return Ok(None);
        }
        out.retain(|r| !(r.pats.is_empty() && r.rest));
        out.push(ArgvRule { env_allow: env, ..ArgvRule::any() });
    }
    if out.len() > ARGV_RULES {
        return Err(format!("at most {ARGV_RULES} command-line alternatives per binary"));
    }
    Ok(Some(out))
}

/// The kernel's form of `obj` in `grant`: the rule masks, and each literal's key with the mask of
/// the rules naming it there.
#[must_use]
pub fn kernel_form(grant: u64, obj: &ArgvObject) -> (ObjKey, ArgvRules, Vec<(ArgKey, u32)>) {
    let mut k = ArgvRules::default();
    let mut lits: Vec<(ArgKey, u32)> = Vec::new();
    for (r, rule) in obj.rules.iter().enumerate().take(ARGV_RULES) {
        let bit = 1u32 << r;
        k.rules |= bit;
        if rule.script_only {
            k.script_only |= bit;
        }
        k.env_allow[r] = rule.env_allow;
        let n = rule.pats.len();
        for (pos, p) in rule.pats.iter().enumerate() {
            match p {
                Pat::Any => k.wild[pos] |= bit,
                Pat::NonOpt => k.nonopt[pos] |= bit,
                Pat::Lit(s) => {
                    let mut key = ArgKey {
                        grant,
                        dev: obj.id.dev,
                        pos: pos as u32,
                        ino: obj.id.ino,
                        bytes: [0; ARGV_LITERAL_LEN],
                    };
                    key.bytes[..s.len()].copy_from_slice(s.as_bytes());
                    match lits.iter_mut().find(|(k2, _)| *k2 == key) {
                        Some((_, m)) => *m |= bit,
                        None => lits.push((key, bit)),
                    }
                }
            }
        }
        if rule.rest {
            for w in k.wild.iter_mut().skip(n) {
                *w |= bit;
            }
            for m in k.rest_le.iter_mut().skip(n) {
                *m |= bit;
            }
        } else {
            k.len_eq[n] |= bit;
        }
    }
    (ObjKey { grant, dev: obj.id.dev, _pad: 0, ino: obj.id.ino }, k, lits)
}

/// What the kernel decides, in userspace (for the unit tests and `policy check`): the rules of
/// `k` and `lits` that accept `args` (after argv[0]).
#[must_use]
pub fn accepts(k: &ArgvRules, lits: &[(ArgKey, u32)], args: &[&[u8]]) -> u32 {
    let mut alive = k.rules;
    for (pos, a) in args.iter().enumerate().take(ARGV_POSITIONS) {
        let lit = lits
            .iter()
            .filter(|(key, _)| {
                key.pos as usize == pos
                    && a.len() < ARGV_LITERAL_LEN - 1
                    && key.bytes[..a.len()] == **a
                    && key.bytes[a.len()] == 0
            })
            .fold(0, |m, (_, b)| m | b);
        let nonopt = if a.first() == Some(&b'-') { 0 } else { k.nonopt[pos] };
        alive &= lit | k.wild[pos] | nonopt;
    }
    let n = args.len();
    alive & if n <= ARGV_POSITIONS { k.len_eq[n] | k.rest_le[n] } else { k.rest_le[ARGV_POSITIONS] }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn form(rules: Vec<ArgvRule>) -> (ArgvRules, Vec<(ArgKey, u32)>) {
        let (_, k, l) = kernel_form(7, &ArgvObject { id: FileId { dev: 1, ino: 2 }, rules });
        (k, l)
    }

    fn ok(f: &(ArgvRules, Vec<(ArgKey, u32)>), args: &[&str]) -> bool {
        let a: Vec<&[u8]> = args.iter().map(|x| x.as_bytes()).collect();
        accepts(&f.0, &f.1, &a) != 0
    }

    fn rule(args: &[&str]) -> ArgvRule {
        entry_rule(Path::new("/usr/bin/git"), Some(&s(args)), false, &[]).unwrap()
    }

    #[test]
    fn patterns_parse_and_refuse_what_the_kernel_cannot_decide() {
        assert_eq!(parse_args(&s(&["status", "**"])).unwrap(), (vec![Pat::Lit("status".into())], true));
        assert_eq!(parse_args(&s(&["*", "x"])).unwrap(), (vec![Pat::Any, Pat::Lit("x".into())], false));
        assert_eq!(parse_args(&[]).unwrap(), (vec![], false), "no arguments at all");
        assert!(parse_args(&s(&["**", "x"])).unwrap_err().contains("last"));
        assert!(parse_args(&s(&["--format=*"])).unwrap_err().contains("whole argument"));
        assert!(parse_args(&["a".repeat(127)]).unwrap_err().contains("at most 126"));
        assert!(parse_args(&s(&["a", "b", "c", "d", "e", "f", "g", "h", "i"])).unwrap_err().contains("at most 8"));
        assert!(env_bits(&s(&["PATH"])).unwrap_err().contains("not a variable"));
        assert_eq!(env_bits(&s(&["LD_PRELOAD", "PYTHONPATH"])).unwrap(), 0b1001);
    }

    #[test]
    fn subcommands_alternatives_and_rest() {
        let f = form(vec![rule(&["status", "**"]), rule(&["add", "--", "*"])]);
        assert!(ok(&f, &["status"]));
        assert!(ok(&f, &["status", "--porcelain", "-z"]));
        assert!(ok(&f, &["add", "--", "file.txt"]));
        assert!(!ok(&f, &["push"]));
        assert!(!ok(&f, &["-c", "x=y", "status"]), "an option before the subcommand");
        assert!(!ok(&f, &["add", "--", "a", "b"]), "an extra argument beyond the pattern");
        assert!(!ok(&f, &["add", "--"]), "one argument short");
        assert!(!ok(&f, &["statuss"]));
        assert!(!ok(&f, &["statu"]));
        assert!(!ok(&f, &[]), "no subcommand");
        let many: Vec<String> = (0..40).map(|i| format!("a{i}")).collect();
        let mut args: Vec<&str> = vec!["status"];
        args.extend(many.iter().map(String::as_str));
        assert!(ok(&f, &args), "`**` takes arguments beyond the positions the kernel reads");
        let exact = form(vec![rule(&["a", "b", "c", "d", "e", "f", "g", "h"])]);
        assert!(ok(&exact, &["a", "b", "c", "d", "e", "f", "g", "h"]));
        assert!(!ok(&exact, &["a", "b", "c", "d", "e", "f", "g", "h", "i"]), "beyond the positions: refused");
        let none = form(vec![rule(&[])]);
        assert!(ok(&none, &[]) && !ok(&none, &[""]), "an empty argument is an argument");
        let empty = form(vec![rule(&["", "**"])]);
        assert!(ok(&empty, &[""]) && !ok(&empty, &["x"]));
    }

    #[test]
    fn interpreters_run_scripts_only_unless_inline_code() {
        let py = entry_rule(Path::new("/usr/bin/python3.11"), None, false, &[]).unwrap();
        assert!(py.script_only);
        let f = form(vec![py]);
        assert!(ok(&f, &["/srv/tool.py", "-x"]));
        for bad in [&["-c", "print(1)"][..], &["-m", "http.server"], &["-"], &[], &["-u", "x.py"]] {
            assert!(!ok(&f, bad), "{bad:?}");
        }
        for name in ["sh", "bash", "dash", "node", "perl", "ruby", "python3", "python"] {
            assert!(interpreter(Path::new(&format!("/usr/bin/{name}"))).unwrap(), "{name}");
        }
        assert!(!interpreter(Path::new("/usr/bin/git")).unwrap());
        assert!(!interpreter(Path::new("/usr/bin/pythonista")).unwrap());
        assert!(interpreter(Path::new("/bin/busybox")).unwrap_err().contains("busybox"));
        let inline = entry_rule(Path::new("/usr/bin/sh"), None, true, &[]).unwrap();
        assert_eq!(inline, ArgvRule::any());
        assert_eq!(object_rules(vec![inline]).unwrap(), None, "nothing for the kernel to hold");
    }

    #[test]
    fn an_unconstrained_entry_wins_and_env_is_per_rule() {
        let any = ArgvRule::any();
        assert_eq!(object_rules(vec![rule(&["status"]), any.clone()]).unwrap(), None);
        let env = ArgvRule { env_allow: 1, ..ArgvRule::any() };
        // Any command line with PYTHONPATH, and `status` without it: both kept (per-rule env).
        assert_eq!(object_rules(vec![rule(&["status"]), env.clone()]).unwrap(), Some(vec![rule(&["status"]), env]));
        let r = object_rules(vec![rule(&["a"]), rule(&["a"]), rule(&["b"])]).unwrap().unwrap();
        assert_eq!(r.len(), 2, "duplicates merged");
        let (k, _) = form(vec![ArgvRule { env_allow: 4, ..rule(&["a"]) }, rule(&["b"])]);
        assert_eq!(k.env_allow[..2], [4, 0]);
        let seventeen: Vec<ArgvRule> = (0..17).map(|i| rule(&[&format!("s{i}")])).collect();
        assert!(object_rules(seventeen).unwrap_err().contains("at most 16"));
    }

    #[test]
    fn kernel_names_fit_the_kernel_compare() {
        for n in INJECTION_ENV {
            assert!(n.len() <= 15 && !n.is_empty(), "{n}");
        }
    }
}
