//! Command lines (exec `args`, interpreters, injected environment): the limits the kernel
//! programs read them with, and the keys and values of the maps that hold a grant's argument
//! rules and a session's environment names.
use core::mem::size_of;

/// Arguments after `argv[0]` a rule can name one by one; a rule ending in `**` accepts any
/// number beyond its fixed ones. A command line longer than a rule without `**` allows fails it.
pub const ARGV_POSITIONS: usize = 8;
/// Rules (alternatives) per approved binary and grant.
pub const ARGV_RULES: usize = 16;
/// Bytes of a literal argument kept in [`ArgKey`] (one NUL always follows): longer literals are
/// refused when the grant is compiled; a longer argument matches only `*`.
pub const ARGV_LITERAL_LEN: usize = 128;
/// Bytes of one argument or environment string examined; a longer one fails the exec
/// (`unresolved`), never passes it.
pub const ARGV_STRING_MAX: usize = 4096;
/// Environment strings examined; an exec with more fails (`unresolved`).
pub const ENV_STRINGS_MAX: u32 = 256;
/// Variables that make a program load code chosen by whoever sets them, refused in a governed
/// exec unless the rule names them (`env = [...]`). Bit `i` of [`ArgvRules::env_allow`] is
/// entry `i`. Names are at most 15 bytes (the kernel compares `NAME=` as 16 bytes).
pub const INJECTION_ENV: [&str; 14] = [
    "LD_PRELOAD",
    "LD_AUDIT",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "NODE_OPTIONS",
    "NODE_PATH",
    "BASH_ENV",
    "ENV",
    "PERL5OPT",
    "RUBYOPT",
    "GIT_SSH_COMMAND",
    "GIT_EXEC_PATH",
];

/// The first 16 bytes of an environment string (little-endian words) through its first `=`,
/// zero after it: `NAME=` of an [`INJECTION_ENV`] entry matches exactly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnvKey {
    pub w: [u64; 2],
}

/// `NAME=` of `name` as an [`EnvKey`], and the mask of its length.
#[must_use]
pub const fn env_pattern(name: &str) -> (EnvKey, EnvKey) {
    let b = name.as_bytes();
    let (mut k, mut m) = (EnvKey { w: [0; 2] }, EnvKey { w: [0; 2] });
    let mut i = 0;
    while i <= b.len() && i < 16 {
        let byte = if i < b.len() { b[i] } else { b'=' };
        k.w[i / 8] |= (byte as u64) << ((i % 8) * 8);
        m.w[i / 8] |= 0xff << ((i % 8) * 8);
        i += 1;
    }
    (k, m)
}

/// Bytes of a launch environment entry kept in [`SessionEnvKey`] (with its NUL); a longer entry is
/// not remembered (a child given it is refused unless the rule names the variable).
pub const SESSION_ENV_LEN: usize = 248;

/// One launch environment entry of a session, zero-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionEnvKey {
    pub session: u64,
    pub bytes: [u8; SESSION_ENV_LEN],
}
const _: () = assert!(size_of::<SessionEnvKey>() == 256);

/// `access` of an exec event that carries the refused command line in its path slots (argv[0]
/// and the arguments, NUL-separated, at most [`EXEC_ARGV_BYTES`]; `dev` is the whole command
/// line's length, so a reader can tell it was truncated). Emitted right after the exec event of a
/// refused command line by the tail-called [`PROG_CMDLINE_ARGV`]; decoded by `events::argv_field`.
pub const EXEC_ARGV: u32 = 1;
pub const EXEC_ARGV_BYTES: usize = 256;

/// Command-line rules of one approved binary in one grant (bit `r` of each mask is rule `r`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgvRules {
    /// Rules present.
    pub rules: u32,
    /// Rules that are interpreter script-only rules (their failure is `inline_code`).
    pub script_only: u32,
    /// Per position: rules that accept any argument there (`*`, or past their `**`).
    pub wild: [u32; ARGV_POSITIONS],
    /// Per position: rules that accept any argument there not starting with `-`.
    pub nonopt: [u32; ARGV_POSITIONS],
    /// Index k (arguments after argv[0]): rules of exactly k arguments without `**`.
    pub len_eq: [u32; 16],
    /// Index k: rules with `**` and at most k fixed arguments.
    pub rest_le: [u32; 16],
    /// Per rule: [`INJECTION_ENV`] entries it allows.
    pub env_allow: [u32; ARGV_RULES],
}
const _: () = assert!(size_of::<ArgvRules>() == 8 + 4 * (2 * ARGV_POSITIONS + 32 + ARGV_RULES));

/// A literal argument at `pos` of the rules of an approved binary in a grant.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgKey {
    pub grant: u64,
    pub dev: u32,
    pub pos: u32,
    pub ino: u64,
    /// The argument's bytes, zero-padded (so the terminating NUL is implied).
    pub bytes: [u8; ARGV_LITERAL_LEN],
}
const _: () = assert!(size_of::<ArgKey>() == 24 + ARGV_LITERAL_LEN);
