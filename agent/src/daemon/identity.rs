//! Task-bound workload identity (issue 15): the daemon's signing keys and the JWT-SVIDs it
//! mints for sessions with a grant in force.
//!
//! A token says what the kernel knows: which session (`sub` =
//! `spiffe://TRUST_DOMAIN/mcpguard/HOST/SESSION`), running which approved binary (`binary_sha256`),
//! for which task, grant and tool call, in which environment, delegated by whom (`act`, nested
//! as in RFC 8693), until when (`exp`: never after the grant's expiry, at most `max_ttl`).
//! ES256 (P-256), `kid` = the key's RFC 7638 thumbprint.
//!
//! Keys live in `STATE_DIR/identity-keys.json` (0600, root): the current key and the one before
//! it. A key is used for `rotate_after` (default 24 h); the previous one stays in the JWKS for
//! `max_ttl` after the rotation, so every token still unexpired verifies.
use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet, PublicKeyUse, ThumbprintHash},
};
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What the daemon's configuration says about the tokens it mints.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    pub trust_domain: String,
    /// This host's name in `sub`.
    pub host: String,
    /// `aud` unless the grant names its own.
    pub audience: Vec<String>,
    /// The longest a token lives (the grant's expiry may end it sooner).
    pub max_ttl: Duration,
    /// How long a signing key is used before the next one replaces it.
    pub rotate_after: Duration,
    /// The daemon's environment label (`environment = "prod"`), if any.
    pub environment: Option<String>,
    /// `iss` of the tokens: an `https://` URL where OIDC verifiers find the discovery document
    /// (cloud token exchanges want one), or by default `spiffe://TRUST_DOMAIN`.
    pub issuer: Option<String>,
}

impl IdentityConfig {
    /// `iss` of the tokens.
    #[must_use]
    pub fn issuer(&self) -> String {
        self.issuer.clone().unwrap_or_else(|| format!("spiffe://{}", self.trust_domain))
    }

    /// `spiffe://TRUST_DOMAIN/mcpguard/HOST/SESSION`.
    #[must_use]
    pub fn spiffe_id(&self, session: &str) -> String {
        format!("spiffe://{}/mcpguard/{}/{session}", self.trust_domain, self.host)
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    created_unix: u64,
    /// PKCS#8 PEM of the P-256 private key.
    pem: String,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    current: StoredKey,
    #[serde(default)]
    previous: Option<StoredKey>,
}

struct Key {
    stored: StoredKey,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl Key {
    fn generate(now_unix: u64) -> anyhow::Result<Self> {
        // A uniformly random scalar: 32 bytes from the kernel's CSPRNG, drawn again in the
        // negligible case that they are not below the group order.
        let secret = loop {
            let mut b = [0u8; 32];
            getrandom(&mut b)?;
            if let Ok(k) = p256::SecretKey::from_slice(&b) {
                break k;
            }
        };
        let pem = secret.to_pkcs8_pem(LineEnding::LF).context("encoding the new signing key")?;
        Self::from_pem(pem.to_string(), String::new(), now_unix)
    }

    fn from_pem(pem: String, kid: String, created_unix: u64) -> anyhow::Result<Self> {
        let secret =
            p256::SecretKey::from_pkcs8_pem(&pem).context("the stored signing key is not a P-256 PKCS#8 key")?;
        let der = secret.to_pkcs8_der().context("encoding the signing key")?;
        let encoding = EncodingKey::from_ec_der(der.as_bytes());
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).context("public key of the signing key")?;
        let thumb = jwk.thumbprint(ThumbprintHash::SHA256).context("key thumbprint")?;
        if !kid.is_empty() && kid != thumb {
            bail!("stored key id {kid} does not match its key (thumbprint {thumb})");
        }
        jwk.common.key_id = Some(thumb.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Ok(Self { stored: StoredKey { kid: thumb, created_unix, pem }, encoding, jwk })
    }
}

/// The daemon's signing keys.
pub struct Keys {
    path: PathBuf,
    current: Key,
    previous: Option<Key>,
}

impl Keys {
    /// The keys in `state_dir`, or a new one (saved before it is used).
    pub fn load_or_create(state_dir: &Path, now_unix: u64) -> anyhow::Result<Self> {
        let path = state_dir.join("identity-keys.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    bail!(
                        "{} is readable by others (mode {mode:o}): chmod 600 it, or remove it to make a new key",
                        path.display()
                    );
                }
                let s: Stored = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                let load = |k: StoredKey| Key::from_pem(k.pem, k.kid, k.created_unix);
                Ok(Self {
                    current: load(s.current).with_context(|| path.display().to_string())?,
                    previous: s.previous.map(load).transpose().with_context(|| path.display().to_string())?,
                    path,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = Self { current: Key::generate(now_unix)?, previous: None, path };
                keys.save()?;
                Ok(keys)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        let s =
            Stored { current: self.current.stored.clone(), previous: self.previous.as_ref().map(|k| k.stored.clone()) };
        let tmp = self.path.with_extension("json.tmp");
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(&s)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("saving {}", self.path.display()))
    }

    /// Replaces the current key once it has been used for `cfg.rotate_after`, and drops the
    /// previous one once every token it signed has expired. Returns whether anything changed.
    pub fn rotate_if_due(&mut self, cfg: &IdentityConfig, now_unix: u64) -> anyhow::Result<bool> {
        let mut changed = false;
        if let Some(p) = &self.previous
            && now_unix >= self.current.stored.created_unix.max(p.stored.created_unix) + cfg.max_ttl.as_secs()
        {
            self.previous = None;
            changed = true;
        }
        if now_unix >= self.current.stored.created_unix + cfg.rotate_after.as_secs() {
            let next = Key::generate(now_unix)?;
            self.previous = Some(std::mem::replace(&mut self.current, next));
            changed = true;
        }
        if changed {
            self.save()?;
        }
        Ok(changed)
    }

    /// The public keys, for `/.well-known/jwks.json` and `mcpguard identity jwks`.
    #[must_use]
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: [Some(&self.current), self.previous.as_ref()].into_iter().flatten().map(|k| k.jwk.clone()).collect(),
        }
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some("JWT".into());
        h.kid = Some(self.current.stored.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.current.encoding).context("signing the token")
    }
}

/// What a token is about, from the session table.
#[derive(Clone, Debug, Default)]
pub struct Subject<'a> {
    pub session: &'a str,
    pub task: Option<&'a str>,
    pub grant_id: u64,
    pub tool: Option<&'a str>,
    pub call_id: Option<&'a str>,
    pub binary_sha256: Option<&'a str>,
    /// The grant's own audience, if its policy names one.
    pub audience: Option<&'a [String]>,
    /// The sessions that delegated to this one, nearest first.
    pub delegated_by: &'a [String],
    /// The daemon path labels the grant declares.
    pub labels: &'a [String],
}

/// The claims of the token for `s`, valid from `now_unix` until the grant's expiry or
/// `max_ttl`, whichever is first; `None` when the grant has no time left.
#[must_use]
pub fn claims(
    cfg: &IdentityConfig,
    s: &Subject<'_>,
    now_unix: u64,
    grant_expires_unix: Option<u64>,
    jti: &str,
) -> Option<Value> {
    let exp = grant_expires_unix.map_or(now_unix + cfg.max_ttl.as_secs(), |g| g.min(now_unix + cfg.max_ttl.as_secs()));
    if exp <= now_unix {
        return None;
    }
    let mut c = json!({
        "iss": cfg.issuer(),
        "sub": cfg.spiffe_id(s.session),
        "aud": s.audience.map_or_else(|| cfg.audience.clone(), <[String]>::to_vec),
        "exp": exp,
        "iat": now_unix,
        "jti": jti,
        "session": s.session,
        "task": s.task,
        "grant_id": s.grant_id,
        "tool": s.tool,
        "call_id": s.call_id,
        "binary_sha256": s.binary_sha256,
        "environment": cfg.environment,
        "labels": s.labels,
    });
    // RFC 8693 `act`: the nearest delegator outermost, each one's own delegator inside it.
    let mut act: Option<Value> = None;
    for parent in s.delegated_by.iter().rev() {
        let mut a = json!({ "sub": cfg.spiffe_id(parent) });
        if let Some(inner) = act.take() {
            a["act"] = inner;
        }
        act = Some(a);
    }
    if let Some(a) = act {
        c["act"] = a;
    }
    Some(c)
}

/// The OIDC discovery document: the issuer, and where its keys are — under the issuer when it
/// is an `http(s)` URL, else on the listener that was asked (`host`, the request's Host header).
#[must_use]
pub fn discovery(cfg: &IdentityConfig, host: Option<&str>) -> Value {
    let iss = cfg.issuer();
    let jwks_uri = if iss.starts_with("https://") || iss.starts_with("http://") {
        format!("{}/.well-known/jwks.json", iss.trim_end_matches('/'))
    } else {
        format!("http://{}/.well-known/jwks.json", host.unwrap_or("localhost"))
    };
    json!({
        "issuer": iss,
        "jwks_uri": jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "claims_supported": ["sub", "aud", "exp", "iat", "jti", "session", "task", "grant_id", "tool", "call_id", "binary_sha256", "environment", "labels", "act"],
    })
}

/// A fresh token id: 128 random bits, hex.
pub fn new_jti() -> anyhow::Result<String> {
    let mut b = [0u8; 16];
    getrandom(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn getrandom(buf: &mut [u8]) -> anyhow::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("getrandom");
        }
        got += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    fn cfg() -> IdentityConfig {
        IdentityConfig {
            trust_domain: "example.org".into(),
            host: "node1".into(),
            audience: vec!["api.example.org".into()],
            max_ttl: Duration::from_secs(600),
            rotate_after: Duration::from_secs(86_400),
            environment: Some("prod".into()),
            issuer: None,
        }
    }

    fn verify(keys: &JwkSet, token: &str, aud: &str) -> Result<Value, jsonwebtoken::errors::Error> {
        let kid = jsonwebtoken::decode_header(token)?.kid.unwrap();
        let jwk = keys.find(&kid).expect("kid in the JWKS");
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[aud]);
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk)?, &v).map(|d| d.claims)
    }

    fn now() -> u64 {
        jiff::Timestamp::now().as_second() as u64
    }

    #[test]
    fn tokens_verify_with_the_jwks_and_say_what_the_kernel_knows() {
        let dir = tempdir("mint");
        let keys = Keys::load_or_create(&dir, now()).unwrap();
        let parents = ["orchestrator".to_string(), "root-agent".to_string()];
        let s = Subject {
            session: "git1",
            task: Some("T-42"),
            grant_id: 9,
            tool: Some("git_status"),
            call_id: Some("7"),
            binary_sha256: Some("ab"),
            audience: None,
            delegated_by: &parents,
            labels: &[],
        };
        let t = now();
        let c = claims(&cfg(), &s, t, Some(t + 120), "j1").unwrap();
        let token = keys.sign(&c).unwrap();
        let got = verify(&keys.jwks(), &token, "api.example.org").unwrap();
        assert_eq!(got["sub"], "spiffe://example.org/mcpguard/node1/git1");
        assert_eq!(
            (got["task"].as_str(), got["tool"].as_str(), got["environment"].as_str()),
            (Some("T-42"), Some("git_status"), Some("prod"))
        );
        assert_eq!(got["exp"].as_u64(), Some(t + 120), "the grant's expiry comes first");
        assert_eq!(got["act"]["sub"], "spiffe://example.org/mcpguard/node1/orchestrator");
        assert_eq!(got["act"]["act"]["sub"], "spiffe://example.org/mcpguard/node1/root-agent");
        assert!(verify(&keys.jwks(), &token, "other").is_err(), "wrong audience");
        // The configured maximum bounds a long grant; an expired grant gets no token.
        assert_eq!(claims(&cfg(), &s, t, Some(t + 86_400), "j").unwrap()["exp"].as_u64(), Some(t + 600));
        assert_eq!(claims(&cfg(), &s, t, None, "j").unwrap()["exp"].as_u64(), Some(t + 600));
        assert!(claims(&cfg(), &s, t, Some(t), "j").is_none());
        // An expired token does not verify.
        let old = keys.sign(&claims(&cfg(), &s, t - 1000, Some(t - 900), "j2").unwrap()).unwrap();
        let e = verify(&keys.jwks(), &old, "api.example.org").unwrap_err();
        assert!(matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature), "{e:?}");
        // A token signed by another key does not verify against this JWKS.
        let other = Keys::load_or_create(&tempdir("other"), t).unwrap();
        let forged = other.sign(&c).unwrap();
        let forged_kid = jsonwebtoken::decode_header(&forged).unwrap().kid.unwrap();
        assert!(keys.jwks().find(&forged_kid).is_none());
        // Nor with this JWKS's key under the forger's kid.
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["api.example.org"]);
        let mine = DecodingKey::from_jwk(&keys.jwks().keys[0]).unwrap();
        assert!(jsonwebtoken::decode::<Value>(&forged, &mine, &v).is_err());
        assert_eq!(new_jti().unwrap().len(), 32);
        // Discovery: jwks_uri under an https issuer, else on the listener asked.
        assert_eq!(discovery(&cfg(), Some("10.0.0.1:9464"))["jwks_uri"], "http://10.0.0.1:9464/.well-known/jwks.json");
        let https = IdentityConfig { issuer: Some("https://id.example.org/node1/".into()), ..cfg() };
        assert_eq!(discovery(&https, None)["jwks_uri"], "https://id.example.org/node1/.well-known/jwks.json");
        assert_eq!(claims(&https, &s, t, None, "j").unwrap()["iss"], "https://id.example.org/node1/");
    }

    #[test]
    fn keys_survive_restarts_rotate_and_keep_the_previous_for_the_token_lifetime() {
        let dir = tempdir("rotate");
        let t0 = 1_000_000;
        let k = Keys::load_or_create(&dir, t0).unwrap();
        let kid = k.current.stored.kid.clone();
        let file = dir.join("identity-keys.json");
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let mut k = Keys::load_or_create(&dir, t0 + 5).unwrap();
        assert_eq!(k.current.stored.kid, kid, "the same key after a restart");
        let c = cfg();
        assert!(!k.rotate_if_due(&c, t0 + 100).unwrap());
        let token = k.sign(&json!({"aud": "a", "exp": now() + 60})).unwrap();
        assert!(k.rotate_if_due(&c, t0 + 86_400).unwrap());
        assert_ne!(k.current.stored.kid, kid);
        assert_eq!(k.jwks().keys.len(), 2, "the previous key is still published");
        verify(&k.jwks(), &token, "a").expect("a token of the previous key still verifies");
        // After max_ttl every token of the previous key has expired: it goes.
        assert!(k.rotate_if_due(&c, t0 + 86_400 + 600).unwrap());
        assert_eq!(k.jwks().keys.len(), 1);
        let k2 = Keys::load_or_create(&dir, t0 + 86_400 + 601).unwrap();
        assert_eq!(k2.current.stored.kid, k.current.stored.kid);
        // A key file others can read is refused, naming the fix.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keys::load_or_create(&dir, t0).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::write(&file, "{").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Keys::load_or_create(&dir, t0).err().unwrap().to_string().contains("parsing"));
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mcpg-identity-{tag}-{}-{}", std::process::id(), now()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
