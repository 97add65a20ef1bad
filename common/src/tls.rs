//! TLS material and refusals, the vocabulary the agent (server) and the coordinator
//! (client) share: PEM files read into rustls' types with errors that name the file, what
//! a certificate says of itself ([`CertSummary`]), and why a handshake failed, said the
//! way each side needs to say it ([`Refusal`]). The servers and clients themselves live at
//! the two adapters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError};

/// The one cryptography provider kvbench uses: ring (rustls deprecates it for lacking
/// post-quantum key exchange; aws-lc-rs has it but adds a C build of minutes to every
/// fresh build, and a benchmark's control channel is not long-lived secret data).
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A PEM file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsFileError {
    #[error("{}: cannot read it: {message}", path.display())]
    Unreadable { path: PathBuf, message: String },
    #[error("{}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key in it (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| TlsFileError::Unreadable {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// The certificates of a PEM file, in order (a chain: the leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsFileError::Invalid {
            path: path.to_owned(),
            message: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for c in &certs {
        describe(c).map_err(|message| TlsFileError::Invalid {
            path: path.to_owned(),
            message,
        })?;
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsFileError::NoKey {
            path: path.to_owned(),
        },
        e => TlsFileError::Invalid {
            path: path.to_owned(),
            message: format!("not a PEM private key: {e}"),
        },
    })
}

/// The CA certificates of a PEM file, as trust anchors.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsFileError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| TlsFileError::Invalid {
            path: path.to_owned(),
            message: format!("not usable as a CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// What a certificate says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    /// `DNS:name` and `IP:address` entries.
    pub sans: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
}

impl CertSummary {
    /// Whether `now` is within its validity.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

fn time_of(t: i64) -> SystemTime {
    if t >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(t.unsigned_abs())
    }
}

/// Parses a DER certificate.
pub fn describe(der: &[u8]) -> Result<CertSummary, String> {
    let (_, c) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = c.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(std::net::IpAddr::from),
                        _ => None,
                    };
                    sans.push(match ip {
                        Some(ip) => format!("IP:{ip}"),
                        None => "IP:?".into(),
                    });
                }
                other => sans.push(other.to_string()),
            }
        }
    }
    Ok(CertSummary {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        sans,
        not_before: time_of(c.validity().not_before.timestamp()),
        not_after: time_of(c.validity().not_after.timestamp()),
        is_ca: c.is_ca(),
    })
}

/// Why a TLS connection between a coordinator and an agent did not happen, as the side
/// that saw it says it (`ca_file`, `client_ca_file`, `server_name` are the config keys a
/// user changes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The coordinator spoke TLS; the agent answered in plaintext or closed the handshake.
    #[error("the agent does not speak TLS on this port (it listens in plaintext: address it as http://, or give the agent a `tls:` section)")]
    PlainAgent,
    /// The agent requires TLS; this client spoke plaintext.
    #[error("the agent requires TLS: address it as https://HOST:PORT and give `tls:` (ca_file, cert_file, key_file) in the plan")]
    PlainClient,
    /// The agent's certificate is not signed by the coordinator's `ca_file`.
    #[error("unknown CA: the agent's certificate is not signed by tls.ca_file")]
    AgentUnknownCa,
    /// The coordinator's certificate is not signed by the agent's `client_ca_file`.
    #[error("unknown CA: the agent does not trust this coordinator's certificate (not signed by the agent's client_ca_file)")]
    ClientUnknownCa,
    /// The agent's certificate does not name what the coordinator expected.
    #[error("name mismatch: the agent's certificate is not valid for {expected:?} (it names {presented}); give tls.server_name or reissue it with `kvbench certs init --agent NAME=HOST`")]
    NameMismatch { expected: String, presented: String },
    #[error("expired: the agent's certificate expired{at}")]
    AgentExpired { at: String },
    #[error("not yet valid: the agent's certificate is valid only from{at} (check the clocks)")]
    AgentNotYetValid { at: String },
    #[error(
        "expired: the agent refused this coordinator's certificate as expired (tls.cert_file)"
    )]
    ClientExpired,
    #[error("the agent requires a client certificate: give tls.cert_file and tls.key_file")]
    ClientCertRequired,
    #[error("the agent refused this coordinator's certificate ({0})")]
    ClientRefused(String),
    /// Seen by the agent: the client presented no certificate.
    #[error("no client certificate")]
    NoClientCert,
    /// Seen by the agent: the client's certificate is not signed by `client_ca_file`.
    #[error("unknown CA: the client certificate is not signed by client_ca_file")]
    UnknownClientCa,
    #[error("expired: the client certificate expired or is not yet valid")]
    ClientCertTime,
    /// Seen by the agent: the client refused the agent's certificate.
    #[error("the client refused this agent's certificate ({0})")]
    AgentRefused(String),
    #[error("TLS handshake failed: {0}")]
    Other(String),
}

fn at(t: Option<rustls::pki_types::UnixTime>) -> String {
    t.map(|t| {
        format!(
            " at {}",
            crate::util::rfc3339_utc(UNIX_EPOCH + Duration::from_secs(t.as_secs()))
        )
    })
    .unwrap_or_default()
}

impl Refusal {
    /// A handshake error as the coordinator (the client) saw it.
    pub fn seen_by_client(e: &rustls::Error, expected_name: &str) -> Refusal {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Refusal::AgentUnknownCa
                }
                CertificateError::NotValidForName => Refusal::NameMismatch {
                    expected: expected_name.to_owned(),
                    presented: "other names".into(),
                },
                CertificateError::NotValidForNameContext { presented, .. } => {
                    Refusal::NameMismatch {
                        expected: expected_name.to_owned(),
                        presented: presented
                            .iter()
                            .map(|p| plain_name(p))
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                }
                CertificateError::Expired => Refusal::AgentExpired { at: String::new() },
                CertificateError::ExpiredContext { not_after, .. } => Refusal::AgentExpired {
                    at: at(Some(*not_after)),
                },
                CertificateError::NotValidYet => Refusal::AgentNotYetValid { at: String::new() },
                CertificateError::NotValidYetContext { not_before, .. } => {
                    Refusal::AgentNotYetValid {
                        at: at(Some(*not_before)),
                    }
                }
                other => Refusal::Other(format!("the agent's certificate: {other}")),
            },
            rustls::Error::AlertReceived(a) => match a {
                AlertDescription::UnknownCA => Refusal::ClientUnknownCa,
                AlertDescription::CertificateExpired => Refusal::ClientExpired,
                AlertDescription::CertificateRequired => Refusal::ClientCertRequired,
                other => Refusal::ClientRefused(format!("{other:?}")),
            },
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                Refusal::PlainAgent
            }
            other => Refusal::Other(other.to_string()),
        }
    }

    /// A handshake error as the agent (the server) saw it.
    pub fn seen_by_server(e: &rustls::Error) -> Refusal {
        match e {
            rustls::Error::NoCertificatesPresented => Refusal::NoClientCert,
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Refusal::UnknownClientCa
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Refusal::ClientCertTime,
                other => Refusal::Other(format!("the client certificate: {other}")),
            },
            rustls::Error::AlertReceived(a) => Refusal::AgentRefused(format!("{a:?}")),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                Refusal::PlainClient
            }
            other => Refusal::Other(other.to_string()),
        }
    }

    /// A short reason for counters and audit lines: `unknown_ca`, `name_mismatch`, ...
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::PlainAgent => "plain_agent",
            Refusal::PlainClient => "plain_client",
            Refusal::AgentUnknownCa | Refusal::ClientUnknownCa | Refusal::UnknownClientCa => {
                "unknown_ca"
            }
            Refusal::NameMismatch { .. } => "name_mismatch",
            Refusal::AgentExpired { .. }
            | Refusal::AgentNotYetValid { .. }
            | Refusal::ClientExpired
            | Refusal::ClientCertTime => "expired",
            Refusal::ClientCertRequired | Refusal::NoClientCert => "no_client_certificate",
            Refusal::ClientRefused(_) | Refusal::AgentRefused(_) => "certificate_refused",
            Refusal::Other(_) => "handshake",
        }
    }
}

/// `DnsName("a1")` and `IpAddress(10.0.0.1)`, as rustls presents a certificate's names, as
/// `a1` and `10.0.0.1`.
fn plain_name(p: &str) -> String {
    p.strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
        .or_else(|| {
            p.strip_prefix("IpAddress(")
                .and_then(|s| s.strip_suffix(')'))
        })
        .unwrap_or(p)
        .to_owned()
}

/// The rustls error somewhere in an error's chain (tokio-rustls wraps it in an
/// `io::Error`, whose `source` skips it: both are looked through).
pub fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r);
            }
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_named_for_the_side_that_saw_them() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(
            Refusal::seen_by_client(&unknown, "a1"),
            Refusal::AgentUnknownCa
        );
        assert_eq!(Refusal::seen_by_server(&unknown), Refusal::UnknownClientCa);
        let alert = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert_eq!(
            Refusal::seen_by_client(&alert, "a1"),
            Refusal::ClientUnknownCa
        );
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, alert.clone());
        assert_eq!(rustls_error(&wrapped), Some(&alert));
        let expired = rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(2_000_000_000)),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
                1_000_000_000,
            )),
        });
        let r = Refusal::seen_by_client(&expired, "a1");
        assert_eq!(r.reason(), "expired");
        assert_eq!(
            r.to_string(),
            "expired: the agent's certificate expired at 2001-09-09T01:46:40Z"
        );
    }
}
