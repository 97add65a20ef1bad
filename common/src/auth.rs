//! The bearer token an agent requires and a coordinator presents: where it comes from (a
//! file, or an environment variable the config names: never a command line), how it is
//! held (a [`Secret`] that never prints) and how it is compared (in constant time).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The longest token accepted (it travels in an HTTP header).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// A token. Its `Debug` says nothing of it, it has no `Display` and no `Serialize`: the
/// only way to its bytes is [`Secret::expose`], at the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

impl Secret {
    /// A token given in code (tests, generated tokens); checked like one read from a file.
    pub fn new(token: &str) -> Result<Secret, TokenError> {
        check(token.trim_end_matches(['\n', '\r']), || "the token".into())
    }

    /// The token's bytes, to put in the `authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this token, in time that does not depend on where they differ
    /// (both are hashed first, so not on their lengths either).
    pub fn matches(&self, given: &[u8]) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(given);
        a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

/// Where a token comes from: `token_file` or `token_env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}

impl TokenSource {
    /// As the config names it, for messages: `token_file /etc/kvbench/token`.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::File(p) => format!("token_file {}", p.display()),
            TokenSource::Env(v) => format!("token_env {v}"),
        }
    }

    /// Reads the token now (a file's trailing newline is not part of it).
    pub fn read(&self) -> Result<Secret, TokenError> {
        match self {
            TokenSource::File(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| TokenError::Unreadable {
                    source_: self.describe(),
                    message: e.to_string(),
                })?;
                check(text.trim_end_matches(['\n', '\r']), || self.describe())
            }
            TokenSource::Env(v) => match std::env::var(v) {
                Ok(t) => check(&t, || self.describe()),
                Err(_) => Err(TokenError::Unset { var: v.clone() }),
            },
        }
    }

    /// The same source with a relative file resolved against `dir`.
    pub fn relative_to(self, dir: &Path) -> TokenSource {
        match self {
            TokenSource::File(p) if p.is_relative() => TokenSource::File(dir.join(p)),
            s => s,
        }
    }
}

fn check(token: &str, source: impl Fn() -> String) -> Result<Secret, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Empty { source_: source() });
    }
    if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(TokenError::Invalid {
            source_: source(),
            max: MAX_TOKEN_BYTES,
        });
    }
    Ok(Secret(token.to_owned()))
}

/// A token that cannot be used. No variant carries the token's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("{source_}: cannot read it: {message}")]
    Unreadable { source_: String, message: String },
    #[error("token_env {var}: the environment variable is not set")]
    Unset { var: String },
    #[error("{source_}: the token is empty")]
    Empty { source_: String },
    #[error("{source_}: a token is 1 to {max} visible ASCII characters (no spaces), as `kvbench certs init` writes one")]
    Invalid { source_: String, max: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_and_compares_whole() {
        let s = Secret::new("s3cr3t-token\n").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(redacted)");
        assert!(s.matches(b"s3cr3t-token"));
        assert!(!s.matches(b"s3cr3t-toke"));
        assert!(!s.matches(b"s3cr3t-tokenX"));
        assert!(!s.matches(b""));
        assert_eq!(s.expose(), "s3cr3t-token");
    }

    #[test]
    fn bad_tokens_are_named_by_source_not_by_value() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "has space\n").unwrap();
        let e = TokenSource::File(f.clone()).read().unwrap_err();
        assert!(matches!(e, TokenError::Invalid { .. }), "{e}");
        assert!(!e.to_string().contains("has space"), "{e}");
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(
            TokenSource::File(f.clone()).read(),
            Err(TokenError::Empty { .. })
        ));
        let e = TokenSource::Env("KVBENCH_TEST_TOKEN_THAT_IS_UNSET".into())
            .read()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "token_env KVBENCH_TEST_TOKEN_THAT_IS_UNSET: the environment variable is not set"
        );
        let missing = TokenSource::File(dir.path().join("nope"))
            .read()
            .unwrap_err();
        assert!(matches!(missing, TokenError::Unreadable { .. }));
    }
}
