//! The enforcement backends and, per backend, how each channel of a governed process's reach is
//! stopped (reported in `status`, the metrics and `mcpguard doctor`).

/// Which enforcement mechanism is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// BTF tracepoints + `bpf_send_signal(SIGKILL)`: a forbidden exec/open kills the process
    /// before its next instruction. `deny` mode is carried out as a kill on this backend.
    Kill,
    /// BPF-LSM (`bprm_check_security`, `file_open`, `mmap_file`): synchronous EPERM.
    Lsm,
    /// fmod_ret on `security_bprm_check`, `security_file_open`, `security_mmap_file`: the same
    /// synchronous EPERM where trampolines work but `bpf` is not an active LSM.
    FmodRet,
}

impl Backend {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Lsm => "lsm",
            Self::FmodRet => "fmod_ret",
        }
    }
    #[must_use]
    pub const fn synchronous_deny(self) -> bool {
        matches!(self, Self::Lsm | Self::FmodRet)
    }

    /// How each channel of a governed process's reach is stopped on this backend (status and
    /// metrics): `eperm` (refused before it happens, the process keeps running), `kill` (SIGKILL
    /// before the process runs another instruction; the syscall itself has happened), `none`
    /// (not governed on this backend), `ceiling` (refused before anything changes outside the
    /// launcher's Landlock write ceiling, for the sessions mcpguard launched; not per task),
    /// `launcher` (refused by the launcher's seccomp filter in the sessions mcpguard launched,
    /// session-wide, unless launched with `--allow-metadata`). The
    /// guard syscalls are killed on every backend, and refused with EPERM by the launcher's
    /// seccomp filter in sealed sessions.
    #[must_use]
    pub const fn channels(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Kill => &[
                ("exec", "kill"),
                // cgroup socket-address programs: EPERM before the connect/send/bind.
                ("connect", "eperm"),
                ("listen", "kill"),
                // By the name given (abstract names; a granted socket's path), Linux 6.7+.
                ("unix_connect", "eperm"),
                // inet sockets no grant can name (raw, ICMP, ...): the cgroup program.
                ("socket_create", "eperm"),
                // Other families (packet, netlink, ...): a kill at socket() entry (launched
                // processes get EPERM from the launcher's seccomp filter before it).
                ("socket_family", "kill"),
                ("open", "kill"),
                ("proc_other_process", "kill"),
                // mmap of a file with PROT_EXEC, and mprotect making a file mapping executable.
                ("mmap_exec", "kill"),
                // Decided by the daemon through the launcher's seccomp signal filter (EPERM
                // before delivery), in the sessions mcpguard launched; not for the others.
                ("signal", "launcher"),
                ("guard_syscalls", "kill"),
                ("path_ops", "ceiling"),
                ("metadata", "launcher"),
                // Times set to given values (a non-NULL `times` argument): the launcher's seccomp
                // filter, unless launched with `--allow-metadata`. Set to now (NULL, `touch`):
                // no hook here can refuse it before it happens.
                ("times", "launcher"),
                ("times_now", "none"),
            ],
            Self::Lsm | Self::FmodRet => &[
                ("exec", "eperm"),
                ("connect", "eperm"),
                ("listen", "eperm"),
                // By the peer socket's object (path sockets) or name (abstract).
                ("unix_connect", "eperm"),
                ("socket_create", "eperm"),
                ("socket_family", "eperm"),
                ("open", "eperm"),
                ("proc_other_process", "eperm"),
                ("mmap_exec", "eperm"),
                ("signal", "eperm"),
                ("guard_syscalls", "kill"),
                // LSM path hooks, per task, every governed process (and the ceiling besides).
                ("path_ops", "eperm"),
                // chmod/chown per path (`metadata = true`), xattrs refused (path_chmod, path_chown,
                // inode_*xattr).
                ("metadata", "eperm"),
                // Times, given or now: write access to the object (decided at vfs_utimes,
                // refused at inode_setattr).
                ("times", "eperm"),
                ("times_now", "eperm"),
            ],
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kill" => Ok(Self::Kill),
            "lsm" => Ok(Self::Lsm),
            "fmod_ret" => Ok(Self::FmodRet),
            o => Err(format!("unknown backend `{o}` (kill, lsm, fmod_ret)")),
        }
    }
}
