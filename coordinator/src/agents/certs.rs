//! `kvbench certs init`'s work: a CA, one server certificate per agent (its name and
//! hosts as subject alternative names), a client certificate for the coordinator, and a
//! bearer token; keys and the token written 0600, every file replaced atomically (an
//! agent that re-reads its files never sees half of one). A folder that already holds a
//! CA keeps it: running `init` again re-issues the named certificates under the same CA
//! (rotation) and adds new agents.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// One agent to issue for: its name (the certificate's first name, and what the plan's
/// `server_name` defaults to) and the hosts it is reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentName {
    pub name: String,
    pub hosts: Vec<String>,
}

impl std::str::FromStr for AgentName {
    type Err = String;
    /// `NAME` or `NAME=HOST,HOST,...`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, hosts) = match s.split_once('=') {
            Some((n, h)) => (
                n,
                h.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned)
                    .collect(),
            ),
            None => (s, Vec::new()),
        };
        let ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        };
        if !ok(name) {
            return Err(format!("agent name {name:?}: letters, digits, '-', '.' and '_' only (it is a file name and a DNS name)"));
        }
        if let Some(h) = hosts
            .iter()
            .find(|h: &&String| h.parse::<IpAddr>().is_err() && !ok(h))
        {
            return Err(format!("host {h:?}: a DNS name or an IP address"));
        }
        Ok(AgentName {
            name: name.to_owned(),
            hosts,
        })
    }
}

/// What to issue.
#[derive(Debug, Clone)]
pub struct Request {
    pub dir: PathBuf,
    pub agents: Vec<AgentName>,
    pub coordinator: String,
    pub days: u32,
    /// Valid from this many days before now (tests: 0 and `days` in the past make an
    /// expired certificate).
    pub start_days_ago: u32,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// True when an existing CA signed (its files kept).
    pub ca_reused: bool,
    /// Every file written, in order.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Ca { path: PathBuf, message: String },
    #[error("issuing {what}: {message}")]
    Issue { what: String, message: String },
}

fn write(path: &Path, contents: &[u8], private: bool) -> Result<(), CertsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |e: std::io::Error| CertsError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let tmp = path.with_extension("tmp-kvbench");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn validity(p: &mut CertificateParams, r: &Request) {
    let now = SystemTime::now();
    let start =
        now - Duration::from_secs(u64::from(r.start_days_ago) * 86_400) - Duration::from_secs(300);
    let end = start + Duration::from_secs(u64::from(r.days.max(1)) * 86_400);
    p.not_before = start.into();
    p.not_after = end.into();
}

/// `n` bytes from the system's secure random source, as hex.
fn random_hex(n: usize, what: &str) -> Result<String, CertsError> {
    let mut bytes = vec![0u8; n];
    kvbench_common::tls::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CertsError::Issue {
            what: what.to_owned(),
            message: "no random bytes from the system".into(),
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn issue_err(what: &str) -> impl Fn(rcgen::Error) -> CertsError + '_ {
    move |e| CertsError::Issue {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// Issues into `r.dir`: `ca.pem` and `ca.key` (kept if there), `NAME.pem`/`NAME.key` per
/// agent and for the coordinator, and `token` (kept if there).
pub fn init(r: &Request) -> Result<Issued, CertsError> {
    std::fs::create_dir_all(&r.dir).map_err(|e| CertsError::Io {
        path: r.dir.clone(),
        message: e.to_string(),
    })?;
    let mut files = Vec::new();
    let (ca_pem, ca_key) = (r.dir.join("ca.pem"), r.dir.join("ca.key"));
    let ca_reused = ca_pem.is_file() && ca_key.is_file();
    let issuer = if ca_reused {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| CertsError::Io {
                path: p.to_owned(),
                message: e.to_string(),
            })
        };
        let key = KeyPair::from_pem(&read(&ca_key)?).map_err(|e| CertsError::Ca {
            path: ca_key.clone(),
            message: e.to_string(),
        })?;
        Issuer::from_ca_cert_pem(&read(&ca_pem)?, key).map_err(|e| CertsError::Ca {
            path: ca_pem.clone(),
            message: e.to_string(),
        })?
    } else {
        let key = KeyPair::generate().map_err(issue_err("the CA's key"))?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // A name of its own: another deployment's CA must not pass for this one by name.
        let id = random_hex(4, "the CA")?;
        dn.push(DnType::CommonName, format!("kvbench CA {id}"));
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut ca_req = r.clone();
        ca_req.days = r.days.max(1).saturating_mul(2);
        validity(&mut p, &ca_req);
        let cert = p.self_signed(&key).map_err(issue_err("the CA"))?;
        write(&ca_key, key.serialize_pem().as_bytes(), true)?;
        write(&ca_pem, cert.pem().as_bytes(), false)?;
        files.extend([ca_pem.clone(), ca_key.clone()]);
        Issuer::new(p, key)
    };
    let mut leaf = |name: &str, hosts: &[String], server: bool| -> Result<(), CertsError> {
        let key = KeyPair::generate().map_err(issue_err(name))?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        let mut sans = vec![name.to_owned()];
        sans.extend(hosts.iter().cloned());
        sans.dedup();
        for s in sans {
            p.subject_alt_names.push(match s.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(s.try_into().map_err(issue_err(name))?),
            });
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        p.use_authority_key_identifier_extension = true;
        validity(&mut p, r);
        let cert = p.signed_by(&key, &issuer).map_err(issue_err(name))?;
        let (pem, k) = (
            r.dir.join(format!("{name}.pem")),
            r.dir.join(format!("{name}.key")),
        );
        write(&k, key.serialize_pem().as_bytes(), true)?;
        write(&pem, cert.pem().as_bytes(), false)?;
        files.extend([pem, k]);
        Ok(())
    };
    for a in &r.agents {
        leaf(&a.name, &a.hosts, true)?;
    }
    leaf(&r.coordinator, &[], false)?;
    let token = r.dir.join("token");
    if !token.is_file() {
        let hex = random_hex(32, "the token")?;
        write(&token, format!("{hex}\n").as_bytes(), true)?;
        files.push(token);
    }
    Ok(Issued { ca_reused, files })
}

/// Mutual TLS and a token for agents on this machine (`kvbench scale --transport tls`,
/// `kvbench calibrate --tls`): issued into `dir` for agents named `names`, all at 127.0.0.1.
#[derive(Debug, Clone)]
pub struct LocalTls {
    pub dir: PathBuf,
}

impl LocalTls {
    pub fn issue(dir: &Path, names: &[String]) -> Result<LocalTls, CertsError> {
        init(&Request {
            dir: dir.to_owned(),
            agents: names
                .iter()
                .map(|n| AgentName {
                    name: n.clone(),
                    hosts: vec!["127.0.0.1".into()],
                })
                .collect(),
            coordinator: "coordinator".into(),
            days: 1,
            start_days_ago: 0,
        })?;
        Ok(LocalTls {
            dir: dir.to_owned(),
        })
    }

    /// The agent config's lines for agent `name`: its certificate, the clients' CA, the token.
    pub fn agent_yaml(&self, name: &str) -> String {
        let d = self.dir.display();
        format!("tls:\n  cert_file: {d}/{name}.pem\n  key_file: {d}/{name}.key\n  client_ca_file: {d}/ca.pem\ntoken_file: {d}/token\n")
    }

    /// The plan's lines: the CA, the coordinator's certificate, the token.
    pub fn plan_yaml(&self) -> String {
        let d = self.dir.display();
        format!("tls: {{ca_file: {d}/ca.pem, cert_file: {d}/coordinator.pem, key_file: {d}/coordinator.key}}\ntoken_file: {d}/token\n")
    }

    /// What a client needs to reach agent `name`.
    pub fn access(&self, name: &str) -> Result<super::tls::Access, super::tls::AccessError> {
        let spec = kvbench_common::plan::ClientTls {
            ca_file: self.dir.join("ca.pem"),
            cert_file: Some(self.dir.join("coordinator.pem")),
            key_file: Some(self.dir.join("coordinator.key")),
            server_name: name.to_owned(),
        };
        Ok(super::tls::Access {
            tls: Some(std::sync::Arc::new(super::tls::TlsClient::new(&spec)?)),
            token: Some(kvbench_common::auth::TokenSource::File(self.dir.join("token")).read()?),
        })
    }
}
