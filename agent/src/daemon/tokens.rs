//! Token delivery (issue 15): one JWT-SVID file per session with a task or call grant in force,
//! `TOKEN_DIR/SESSION/token`, replaced atomically (write beside, rename over) whenever the grant
//! in force changes and before the token runs out while the grant lasts; deleted at revoke,
//! expiry and session end.
//!
//! Who can read it: the session's processes, whatever their grant says — the session's
//! baseline grant reads its own token directory (`register` adds it) — and no other governed
//! session (no grant names another session's directory; the kernel refuses the open). The file
//! is owned by the session's uid with mode 0400 in a root-owned 0755 directory, so other users
//! cannot read it either.
use std::{
    collections::BTreeMap,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

use anyhow::Context as _;

use crate::daemon::{
    identity::{self, IdentityConfig, Keys, Subject},
    state::{Session, State},
};

/// The token in a session's file now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Issued {
    grant_id: u64,
    iat: u64,
    exp: u64,
}

pub struct Tokens {
    pub cfg: IdentityConfig,
    dir: PathBuf,
    keys: Mutex<Keys>,
    issued: Mutex<BTreeMap<String, Issued>>,
    /// Whether the first sync (which also removes what an earlier daemon left) has run.
    swept: std::sync::atomic::AtomicBool,
}

impl Tokens {
    pub fn open(cfg: IdentityConfig, token_dir: &Path, state_dir: &Path, now_unix: u64) -> anyhow::Result<Self> {
        let keys = Keys::load_or_create(state_dir, now_unix).context("loading the identity signing keys")?;
        std::fs::create_dir_all(token_dir)
            .with_context(|| format!("creating the token directory {}", token_dir.display()))?;
        std::fs::set_permissions(token_dir, std::fs::Permissions::from_mode(0o755))?;
        Ok(Self {
            cfg,
            dir: token_dir.to_path_buf(),
            keys: Mutex::new(keys),
            issued: Mutex::default(),
            swept: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The directory a session's token lives in (granted to the session for reading).
    #[must_use]
    pub fn session_dir(&self, session: &str) -> PathBuf {
        self.dir.join(session)
    }

    /// The session's token file (its path goes to the launched program as `MCPGUARD_TOKEN_FILE`).
    #[must_use]
    pub fn token_file(&self, session: &str) -> PathBuf {
        self.session_dir(session).join("token")
    }

    /// Creates the session's token directory before its baseline is compiled. Nothing in it is
    /// touched: a registration refused because a live session has the name must not take that
    /// session's token away, and an ended session's token was removed by [`Tokens::sync`].
    pub fn prepare(&self, session: &str) -> std::io::Result<PathBuf> {
        let d = self.session_dir(session);
        std::fs::create_dir_all(&d)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        Ok(d)
    }

    /// The JWKS (current and previous public key).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::to_value(self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner).jwks())
            .unwrap_or_default()
    }

    /// Rotates the signing key when due (housekeeping).
    pub fn rotate(&self, now_unix: u64) {
        let mut k = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match k.rotate_if_due(&self.cfg, now_unix) {
            Ok(true) => log::info!("identity: signing key rotated"),
            Ok(false) => {}
            Err(e) => log::error!("identity: key rotation failed (the current key stays in use): {e:#}"),
        }
    }

    /// Brings every token file in line with the session table: a token for each session whose
    /// task (or call) grant is in force, minted again when the grant changed or the token has
    /// less than a third of its life left (and the grant outlasts it); none for the others.
    pub fn sync(&self, st: &State, now_boot_ns: u64, now_unix: u64) {
        let mut issued = self.issued.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The first time: tokens an earlier daemon left (a grant that expired while it was
        // down, a session that ended) go; the ones still wanted are minted again below.
        if !self.swept.swap(true, std::sync::atomic::Ordering::Relaxed)
            && let Ok(entries) = std::fs::read_dir(&self.dir)
        {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let wanted =
                    st.session(&name).and_then(|s| s.task.as_ref()).is_some_and(|g| g.expires_boot_ns > now_boot_ns);
                if !wanted {
                    // (A wanted one is replaced atomically by the mint below.)
                    remove(&self.token_file(&name));
                }
                if st.session(&name).is_none() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let mut keep = BTreeMap::new();
        for s in st.sessions().values() {
            let Some(g) = s.task.as_ref().filter(|g| g.expires_boot_ns > now_boot_ns) else { continue };
            let grant_exp = now_unix + (g.expires_boot_ns - now_boot_ns) / 1_000_000_000;
            let prev = issued.get(&s.name).copied();
            let fresh = prev.is_some_and(|p| {
                let life = p.exp.saturating_sub(p.iat);
                p.grant_id == g.id && (p.exp >= grant_exp || now_unix + life / 3 < p.exp)
            });
            if fresh {
                keep.insert(s.name.clone(), prev.expect("fresh"));
                continue;
            }
            let chain = crate::daemon::delegation::chain(st, &s.name);
            match self.mint(s, &chain, now_unix, grant_exp) {
                Ok(Some(i)) => {
                    keep.insert(s.name.clone(), i);
                }
                Ok(None) => remove(&self.token_file(&s.name)),
                Err(e) => {
                    // No stale token outlives its grant: a failed re-mint removes the old one.
                    log::error!("identity: session {}: {e:#}", s.name);
                    remove(&self.token_file(&s.name));
                }
            }
        }
        for name in issued.keys() {
            if !keep.contains_key(name) {
                remove(&self.token_file(name));
                if st.session(name).is_none() {
                    let _ = std::fs::remove_dir(self.session_dir(name));
                }
            }
        }
        *issued = keep;
    }

    fn mint(&self, s: &Session, chain: &[String], now_unix: u64, grant_exp: u64) -> anyhow::Result<Option<Issued>> {
        let Some(g) = &s.task else { return Ok(None) };
        let subject = Subject {
            session: &s.name,
            task: g.task.as_deref(),
            grant_id: g.id,
            tool: g.tool.as_deref(),
            call_id: g.call_id.as_deref(),
            binary_sha256: s.binary_sha256.as_deref(),
            // A record saved before `audience` was kept has it in its own spec only.
            audience: Some(g.audience.as_slice())
                .filter(|a| !a.is_empty())
                .or_else(|| g.spec.as_ref().map(|sp| sp.audience.as_slice()).filter(|a| !a.is_empty())),
            delegated_by: chain,
            labels: &g.labels,
        };
        let jti = identity::new_jti()?;
        let Some(claims) = identity::claims(&self.cfg, &subject, now_unix, Some(grant_exp), &jti) else {
            return Ok(None);
        };
        let exp = claims["exp"].as_u64().unwrap_or(now_unix);
        let token = self.keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner).sign(&claims)?;
        self.write(s, &token)?;
        Ok(Some(Issued { grant_id: g.id, iat: now_unix, exp }))
    }

    /// Writes the token beside the file, owned by the session's uid, mode 0400, then renames it
    /// over: a reader sees the old token or the new one, never a part.
    fn write(&self, s: &Session, token: &str) -> anyhow::Result<()> {
        let dir = self.session_dir(&s.name);
        let tmp = dir.join(".token.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(token.as_bytes())?;
        f.sync_all()?;
        std::os::unix::fs::fchown(&f, Some(s.uid), None)
            .with_context(|| format!("chown {} to uid {}", tmp.display(), s.uid))?;
        std::fs::rename(&tmp, dir.join("token")).with_context(|| format!("replacing {}", dir.join("token").display()))
    }
}

fn remove(p: &Path) {
    match std::fs::remove_file(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::error!("identity: cannot remove {}: {e}", p.display()),
    }
}
