//! HTTP Basic authentication from an htpasswd file, guarding every route of the gateway
//! (docs/protocols/juggler.md §1.6). Accepts `$apr1$` (Apache MD5, what hat-juggler takes) and
//! bcrypt (`$2y$`, `$2b$`, `$2a$`) hashes; any other line is refused when the file is
//! loaded, with its line number. A missing, malformed or wrong `Authorization` header gets
//! `401` with `WWW-Authenticate: Basic`.
//!
//! Verified credentials are remembered as a SHA-256 of the password (never the password
//! itself), so a browser's repeated requests do not pay bcrypt's cost each time.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use md5::{Digest, Md5};
use sha2::Sha256;

/// Why an htpasswd file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A line that is not `user:hash` with a supported hash.
    #[error("{path}:{line}: {why}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: &'static str,
    },
}

enum Hash {
    Apr1 { salt: String, full: String },
    Bcrypt(String),
}

/// Credentials already verified: user and SHA-256 of the password.
type Verified = Mutex<HashSet<(String, [u8; 32])>>;

/// The users of an htpasswd file. Cheap to clone.
#[derive(Clone)]
pub struct Htpasswd {
    users: Arc<HashMap<String, Hash>>,
    verified: Arc<Verified>,
}

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Htpasswd")
            .field("users", &self.users.len())
            .finish()
    }
}

impl Htpasswd {
    /// Reads an htpasswd file (blank lines are skipped).
    pub fn load(path: &Path) -> Result<Self, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses htpasswd text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, HtpasswdError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let bad = |why| HtpasswdError::Line {
                path: origin.to_string(),
                line: i + 1,
                why,
            };
            let (user, hash) = line.split_once(':').ok_or(bad("not user:hash"))?;
            let hash = if let Some(rest) = hash.strip_prefix("$apr1$") {
                let (salt, _) = rest.split_once('$').ok_or(bad("malformed $apr1$ hash"))?;
                Hash::Apr1 {
                    salt: salt.to_string(),
                    full: hash.to_string(),
                }
            } else if ["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
                Hash::Bcrypt(hash.to_string())
            } else {
                return Err(bad(
                    "unsupported hash: use $apr1$ (htpasswd -m) or bcrypt (htpasswd -B)",
                ));
            };
            users.insert(user.to_string(), hash);
        }
        Ok(Htpasswd {
            users: Arc::new(users),
            verified: Arc::default(),
        })
    }

    /// Whether `user` with `password` is in the file.
    pub fn check(&self, user: &str, password: &str) -> bool {
        let key = (user.to_string(), Sha256::digest(password.as_bytes()).into());
        if self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return true;
        }
        let ok = match self.users.get(user) {
            Some(Hash::Apr1 { salt, full }) => {
                constant_eq(apr1(password, salt).as_bytes(), full.as_bytes())
            }
            Some(Hash::Bcrypt(h)) => bcrypt::verify(password, h).unwrap_or(false),
            None => false,
        };
        if ok {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key);
        }
        ok
    }

    /// Checks an `Authorization` header value.
    pub fn check_header(&self, value: &str) -> bool {
        let Some(b64) = value.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(raw) else {
            return false;
        };
        match text.split_once(':') {
            Some((user, pw)) => self.check(user, pw),
            None => false,
        }
    }
}

/// The middleware: lets a request through with valid credentials, else answers 401.
pub(crate) async fn require(
    users: Htpasswd,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| users.check_header(v));
    if ok {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"tether\"")],
        "401: Unauthorized",
    )
        .into_response()
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Apache's MD5 crypt (`$apr1$salt$hash`), as `htpasswd -m` and `openssl passwd -apr1`
/// write it.
pub fn apr1(password: &str, salt: &str) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let pw = password.as_bytes();
    let salt = &salt.as_bytes()[..salt.len().min(8)];
    let alt = Md5::new()
        .chain_update(pw)
        .chain_update(salt)
        .chain_update(pw)
        .finalize();
    let mut ctx = Md5::new()
        .chain_update(pw)
        .chain_update(MAGIC)
        .chain_update(salt);
    let mut left = pw.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = pw.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(pw);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(pw);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(pw);
        }
        fin = c.finalize();
    }
    let mut out = String::from_utf8_lossy(MAGIC).into_owned();
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let b = |i: usize| fin[i] as u32;
    put(b(0) << 16 | b(6) << 8 | b(12), 4);
    put(b(1) << 16 | b(7) << 8 | b(13), 4);
    put(b(2) << 16 | b(8) << 8 | b(14), 4);
    put(b(3) << 16 | b(9) << 8 | b(15), 4);
    put(b(4) << 16 | b(10) << 8 | b(5), 4);
    put(b(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_openssl_and_htpasswd() {
        // openssl passwd -apr1 -salt xyzsalt1 secret
        assert_eq!(
            apr1("secret", "xyzsalt1"),
            "$apr1$xyzsalt1$mdDPSoZhouTDI1GHRla8E1"
        );
        assert_eq!(
            apr1("password", "lZL6V/ci"),
            "$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00"
        );
        assert_eq!(
            apr1("password", "RandSalt"),
            "$apr1$RandSalt$PgCXHRrkpSt4cbyC2C6bm/"
        );
    }

    #[test]
    fn htpasswd_files_with_apr1_and_bcrypt() {
        let bcrypted = bcrypt::hash("hunter2", 4).unwrap();
        let text = format!("\nalice:$apr1$xyzsalt1$mdDPSoZhouTDI1GHRla8E1\nbob:{bcrypted}\n\n");
        let h = Htpasswd::parse(&text, "test").unwrap();
        assert!(h.check("alice", "secret"));
        assert!(h.check("alice", "secret"), "again, from the cache");
        assert!(!h.check("alice", "Secret"));
        assert!(h.check("bob", "hunter2"));
        assert!(!h.check("bob", "hunter3"));
        assert!(!h.check("carol", "secret"));
        let header = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(h.check_header(&header("alice:secret")));
        for bad in [
            header("alice:wrong"),
            header("alice"),
            "Basic !!!".into(),
            "Bearer x".into(),
            String::new(),
        ] {
            assert!(!h.check_header(&bad), "{bad}");
        }
        for (text, why) in [
            ("# comment", "not user:hash"),
            ("u:{SHA}abc", "unsupported hash"),
            ("u:plain", "unsupported hash"),
            ("u:$apr1$nosalt", "malformed"),
        ] {
            let e = Htpasswd::parse(text, "f").unwrap_err();
            assert!(
                e.to_string().contains(why) && e.to_string().starts_with("f:1:"),
                "{e}"
            );
        }
    }
}
