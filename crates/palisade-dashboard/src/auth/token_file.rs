//! Bearer tokens from a file: `TOKEN TENANTS [NAME]` per line.
//!
//! `TENANTS` is `*` (every tenant, and the platform-wide pages) or a
//! comma-separated list of tenant names; `NAME` (default `line-N`) is who the
//! audit log says acted, so the token itself is never logged. Blank lines and
//! lines starting with `#` are ignored.
//!
//! Only SHA-256 digests of the tokens are kept, and a presented token's digest
//! is compared with every entry's in constant time (`subtle`), always
//! visiting all entries: neither the time taken nor an early exit tells an
//! attacker how much of a guess was right or which entry it was close to.

use super::{Access, AuthError, Authenticator, BoxFuture, Identity};
use palisade_core::TenantName;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Shortest token accepted: 16 characters (e.g. `openssl rand -hex 16` gives 32).
pub const MIN_TOKEN_LEN: usize = 16;

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("could not read token file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("token file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No token in the file.
    #[error("token file {0} holds no token (expected lines `TOKEN TENANT[,TENANT...]|* [NAME]`)")]
    Empty(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    All,
    Tenants(BTreeSet<TenantName>),
}

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    name: String,
    grant: Grant,
}

/// The tokens of a token file.
#[derive(Debug)]
pub struct TokenFile {
    entries: Vec<Entry>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenFile {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a token file (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, TokenFileError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| TokenFileError::Line {
                path: path.to_owned(),
                line: i + 1,
                reason,
            };
            let entry = parse_line(line, i + 1).map_err(bad)?;
            if entries.iter().any(|e| e.name == entry.name) {
                return Err(bad(format!("name {:?} is used twice", entry.name)));
            }
            if entries.iter().any(|e| e.digest == entry.digest) {
                return Err(bad("this token is listed twice".into()));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty(path.to_owned()));
        }
        Ok(Self { entries })
    }

    /// The entry whose token is `token`, comparing against every entry.
    fn find(&self, token: &str) -> Option<&Entry> {
        let presented = digest(token);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, e) in self.entries.iter().enumerate() {
            let eq = e.digest.ct_eq(&presented);
            index = u32::conditional_select(&index, &(i as u32), eq);
            found |= eq;
        }
        bool::from(found).then(|| &self.entries[index as usize])
    }
}

fn parse_line(line: &str, number: usize) -> Result<Entry, String> {
    let mut fields = line.split_whitespace();
    let (Some(token), Some(tenants)) = (fields.next(), fields.next()) else {
        return Err("expected `TOKEN TENANT[,TENANT...]|* [NAME]`".into());
    };
    let name = fields
        .next()
        .map_or_else(|| format!("line-{number}"), str::to_owned);
    if fields.next().is_some() {
        return Err("too many fields (expected `TOKEN TENANTS [NAME]`)".into());
    }
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(format!(
            "the token is shorter than {MIN_TOKEN_LEN} characters (make one with `openssl rand -hex 32`)"
        ));
    }
    let grant = if tenants == "*" {
        Grant::All
    } else {
        Grant::Tenants(
            tenants
                .split(',')
                .map(|t| t.parse().map_err(|e| format!("invalid tenant {t:?}: {e}")))
                .collect::<Result<_, _>>()?,
        )
    };
    Ok(Entry {
        digest: digest(token),
        name,
        grant,
    })
}

impl Authenticator for TokenFile {
    fn kind(&self) -> &'static str {
        "token-file"
    }

    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        let found = self.find(token).map(|e| Identity {
            user: e.name.clone(),
            ..Identity::default()
        });
        Box::pin(std::future::ready(Ok(found)))
    }

    fn authorize<'a>(
        &'a self,
        who: &'a Identity,
        access: &'a Access,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        let grant = self
            .entries
            .iter()
            .find(|e| e.name == who.user)
            .map(|e| &e.grant);
        let ok = match (grant, access.tenant()) {
            (Some(Grant::All), _) => true,
            (Some(Grant::Tenants(ts)), Some(t)) => ts.contains(t),
            (Some(Grant::Tenants(_)), None) | (None, _) => false,
        };
        Box::pin(std::future::ready(Ok(ok)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# platform team\n\
        0123456789abcdef0123456789abcdef * admin\n\
        \n\
        acme-token-0123456789 acme,initech\n";

    fn file() -> TokenFile {
        TokenFile::parse(FILE, Path::new("tokens")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn block_on<T>(f: BoxFuture<'_, T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(f)
    }

    #[test]
    fn tokens_name_their_holder_and_wrong_ones_are_refused() {
        let f = file();
        let id = |t: &str| block_on(f.authenticate(t)).ok().flatten().map(|i| i.user);
        assert_eq!(
            id("0123456789abcdef0123456789abcdef").as_deref(),
            Some("admin")
        );
        assert_eq!(id("acme-token-0123456789").as_deref(), Some("line-4"));
        // A prefix, a longer string, the empty string: all refused.
        assert_eq!(id("acme-token-012345678"), None);
        assert_eq!(id("acme-token-01234567890"), None);
        assert_eq!(id(""), None);
    }

    #[test]
    fn grants_limit_tenants_and_the_platform_view() {
        let f = file();
        let t = |s: &str| -> TenantName { s.parse().unwrap_or_else(|e| panic!("{e}")) };
        let d = "web".parse().unwrap_or_else(|e| panic!("{e}"));
        let may = |user: &str, a: Access| {
            let who = Identity {
                user: user.into(),
                ..Identity::default()
            };
            block_on(f.authorize(&who, &a)).unwrap_or(false)
        };
        assert!(may("admin", Access::ReadAll));
        assert!(may("admin", Access::Delete(t("globex"), d)));
        assert!(may("line-4", Access::Read(t("initech"))));
        assert!(may(
            "line-4",
            Access::Create(t("acme"), "web".parse().unwrap_or_else(|e| panic!("{e}")))
        ));
        assert!(!may("line-4", Access::Read(t("globex"))));
        assert!(!may("line-4", Access::ReadAll));
        assert!(!may("nobody", Access::Read(t("acme"))));
    }

    #[test]
    fn bad_files_say_which_line_and_why() {
        let err = |text: &str| match TokenFile::parse(text, Path::new("t")) {
            Ok(_) => panic!("accepted {text:?}"),
            Err(e) => e.to_string(),
        };
        assert!(err("").contains("holds no token"));
        assert!(err("short *\n").contains("line 1: the token is shorter than 16"));
        assert!(err("0123456789abcdef0123\n").contains("line 1: expected"));
        assert!(err("0123456789abcdef0123 Bad_Tenant\n").contains("invalid tenant \"Bad_Tenant\""));
        assert!(
            err("0123456789abcdef0123 * a\n0123456789abcdef0123 * b\n")
                .contains("line 2: this token is listed twice")
        );
        assert!(
            err("0123456789abcdef0123 * a\n0123456789abcdef0124 * a\n")
                .contains("name \"a\" is used twice")
        );
        assert!(err("0123456789abcdef0123 * a extra\n").contains("too many fields"));
    }
}
