//! Small helpers: file-name slugs and timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// A listen address: `IP:PORT`, or `HOST:PORT` resolved here (`localhost:9000`); an IPv4
/// address is preferred where the name has both.
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, ListenAddrError> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let addrs: Vec<std::net::SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| ListenAddrError::Malformed {
            given: s.to_owned(),
            detail: e.to_string(),
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| ListenAddrError::NoAddress(s.to_owned()))
}

/// An address to listen on that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenAddrError {
    #[error("{given:?} is not HOST:PORT or IP:PORT ({detail})")]
    Malformed { given: String, detail: String },
    #[error("{0:?} resolves to no address")]
    NoAddress(String),
}

/// Longest slug in bytes: `<slug>_telemetry_<ts>.jsonl` and `<slug>_results_<ts>.json.tmp`
/// then stay well within the 255 bytes a file name may have on common file systems.
pub const MAX_SLUG_BYTES: usize = 200;

/// A file-name-safe form of a scenario name: letters and digits (any script, so Chinese
/// names stay readable), `-`, `_` and `.` are kept (but not at the start, so that no name
/// gives a hidden file); every other run of characters becomes `_`. A name whose slug
/// would be longer than [`MAX_SLUG_BYTES`] is cut at a character boundary and given a
/// short hash of the whole name, so that distinct long names keep distinct files.
/// A number as a name shows it: at most three decimals, no trailing zeros (`16`, `0.5`,
/// `2.125`).
pub fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_owned()
    }
}

pub fn slug(name: &str) -> String {
    let full = slug_unbounded(name);
    if full.len() <= MAX_SLUG_BYTES {
        return full;
    }
    let hash = format!("{:08x}", fnv1a(name.as_bytes()) as u32);
    let mut cut = MAX_SLUG_BYTES - hash.len() - 1;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash}", &full[..cut])
}

/// FNV-1a, 64 bits: a stable hash (unlike std's, which may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn slug_unbounded(name: &str) -> String {
    let mut out = String::new();
    let mut pending_sep = false;
    for c in name.trim().chars() {
        if c == '.' && out.is_empty() {
            continue;
        }
        if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' {
            if pending_sep && !out.is_empty() {
                out.push('_');
            }
            pending_sep = false;
            out.push(c);
        } else {
            pending_sep = true;
        }
    }
    if out.is_empty() {
        out.push_str("scenario");
    }
    out
}

/// (year, month, day, hour, minute, second) in UTC.
fn utc_parts(t: SystemTime) -> (i64, u32, u32, i64, i64, i64) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (y, m, d, s / 3600, (s / 60) % 60, s % 60)
}

/// `YYYYMMDD_HHMMSS` in UTC, the seed's timestamp format in file names.
pub fn timestamp_utc(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss) = utc_parts(t);
    format!("{y:04}{m:02}{d:02}_{hh:02}{mm:02}{ss:02}")
}

/// RFC 3339 time in UTC with seconds, for JSON fields.
pub fn rfc3339_utc(t: SystemTime) -> String {
    let (y, m, d, hh, mm, ss) = utc_parts(t);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's method).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Microseconds since the Unix epoch on this host's wall clock (0 before it).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// This host's name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn floats_in_names_lose_trailing_zeros() {
        assert_eq!(trim_float(16.0), "16");
        assert_eq!(trim_float(0.5), "0.5");
        assert_eq!(trim_float(2.125), "2.125");
        assert_eq!(trim_float(1.0004), "1");
    }

    #[test]
    fn slugs_keep_names_readable() {
        assert_eq!(slug("with-cache_72B"), "with-cache_72B");
        assert_eq!(
            slug("Tencent Cloud / single node"),
            "Tencent_Cloud_single_node"
        );
        assert_eq!(slug("腾讯云-单机"), "腾讯云-单机");
        assert_eq!(slug("  !!  "), "scenario");
    }

    #[test]
    fn slugs_never_hide_files_and_always_fit_a_file_name() {
        assert_eq!(slug(".."), "scenario");
        assert_eq!(slug(".hidden.v2"), "hidden.v2");
        let long = "腾".repeat(84); // 252 bytes
        let s = slug(&long);
        assert!(s.len() <= MAX_SLUG_BYTES, "{} bytes", s.len());
        assert!(s.starts_with("腾腾"));
        assert_eq!(s, slug(&long), "deterministic");
        let other = format!("{}讯", "腾".repeat(83));
        assert_ne!(slug(&other), s, "distinct long names keep distinct slugs");
        assert!(format!("{s}_telemetry_20250111_143022.jsonl").len() <= 255);
    }

    #[test]
    fn timestamps_match_known_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_736_605_822); // 2025-01-11 14:30:22 UTC
        assert_eq!(timestamp_utc(t), "20250111_143022");
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp_utc(leap), "20000229_000000");
    }
}

/// Text another process sent (an agent's name, labels, an engine's error), made safe to
/// keep and show: at most `max_bytes` (cut on a character boundary, `…` marking the cut),
/// line breaks and tabs as spaces, other control characters (terminal escapes) as `�`.
/// Escaping for a format (markdown, HTML, CSV) is still the presenter's.
pub fn untrusted(s: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_bytes));
    for c in s.chars() {
        let c = match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '\u{fffd}',
            c => c,
        };
        if out.len() + c.len_utf8() > max_bytes {
            while out.len() + '…'.len_utf8() > max_bytes {
                out.pop();
            }
            out.push('…');
            return out;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod untrusted_tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bounded_and_free_of_controls(s in any::<String>(), max in 3usize..64) {
            let u = super::untrusted(&s, max);
            prop_assert!(u.len() <= max);
            prop_assert!(!u.chars().any(char::is_control));
            if s.len() <= max && !s.chars().any(char::is_control) {
                prop_assert_eq!(u, s);
            }
        }
    }

    #[test]
    fn escapes_and_newlines_do_not_survive() {
        assert_eq!(super::untrusted("a|b\nc\x1b[31m", 64), "a|b c\u{fffd}[31m");
        assert_eq!(super::untrusted("abcdef", 5), "ab…");
    }
}
