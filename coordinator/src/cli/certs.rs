//! `kvbench certs init DIR --agent NAME[=HOST,...]... --coordinator NAME [--days N]` and
//! `kvbench certs show FILE`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use kvbench_common::util::rfc3339_utc;

use crate::agents::certs::{self, AgentName};

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Make a CA (or use the one DIR holds), a certificate per agent, one for the
    /// coordinator, and a bearer token (kept if DIR holds one); keys and token 0600.
    Init {
        dir: PathBuf,
        /// An agent: NAME, or NAME=HOST,HOST,... (the DNS names and IP addresses it is
        /// reached at; NAME is always one); repeatable.
        #[arg(long = "agent", required = true)]
        agents: Vec<AgentName>,
        /// The coordinator's client certificate's name.
        #[arg(long, default_value = "coordinator")]
        coordinator: String,
        /// Days the certificates are valid (the CA: twice as long).
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
    },
    /// Print a PEM file's certificates: subject, SANs, issuer, validity.
    Show { file: PathBuf },
}

pub fn command(c: &CertsCommand) -> anyhow::Result<ExitCode> {
    match c {
        CertsCommand::Init {
            dir,
            agents,
            coordinator,
            days,
        } => {
            let coordinator: AgentName = coordinator
                .parse()
                .map_err(|e| anyhow::anyhow!("--coordinator: {e}"))?;
            let mut names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
            names.push(&coordinator.name);
            names.sort_unstable();
            if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                anyhow::bail!("{:?} is named twice (each agent and the coordinator need their own name: their files are NAME.pem and NAME.key)", w[0]);
            }
            if names.contains(&"ca") {
                anyhow::bail!("\"ca\" is the CA's own file name: name the agent otherwise");
            }
            let issued = certs::init(&certs::Request {
                dir: dir.clone(),
                agents: agents.clone(),
                coordinator: coordinator.name,
                days: *days,
                start_days_ago: 0,
            })?;
            if issued.ca_reused {
                outln!(
                    "{}: signed with the CA already there (ca.pem, ca.key)",
                    dir.display()
                );
            }
            for f in &issued.files {
                outln!("wrote {}", f.display());
            }
            outln!("agents: tls: {{cert_file: NAME.pem, key_file: NAME.key, client_ca_file: ca.pem}}, token_file: token");
            outln!("plan:   tls: {{ca_file: ca.pem, cert_file: {0}.pem, key_file: {0}.key}}, token_file: token; agents at https://HOST:PORT", c_name(c));
            outln!("keep ca.key off the agents' hosts: it signs new certificates");
            Ok(ExitCode::SUCCESS)
        }
        CertsCommand::Show { file } => {
            let certs = kvbench_common::tls::load_certs(file)?;
            let now = SystemTime::now();
            for (i, der) in certs.iter().enumerate() {
                let s = kvbench_common::tls::describe(der)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                if certs.len() > 1 {
                    outln!("certificate {} of {}", i + 1, certs.len());
                }
                outln!("subject:    {}", s.subject);
                outln!(
                    "SANs:       {}",
                    if s.sans.is_empty() {
                        "none".to_owned()
                    } else {
                        s.sans.join(", ")
                    }
                );
                outln!(
                    "issuer:     {}{}",
                    s.issuer,
                    if s.is_ca { " (a CA)" } else { "" }
                );
                let state = if now < s.not_before {
                    "not yet valid".to_owned()
                } else if now > s.not_after {
                    "EXPIRED".to_owned()
                } else {
                    let days = s
                        .not_after
                        .duration_since(now)
                        .map_or(0, |d| d.as_secs() / 86_400);
                    format!("valid, {days} more days")
                };
                outln!(
                    "valid:      {} to {} ({state})",
                    rfc3339_utc(s.not_before),
                    rfc3339_utc(s.not_after)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn c_name(c: &CertsCommand) -> &str {
    match c {
        CertsCommand::Init { coordinator, .. } => coordinator,
        CertsCommand::Show { .. } => "",
    }
}
