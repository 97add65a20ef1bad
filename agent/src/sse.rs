//! An incremental Server-Sent Events parser for OpenAI-style streams. It never panics on
//! any input: malformed input is reported as an error value.

/// What went wrong in a stream's framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("line is not an SSE field: {0:?}")]
    BadLine(String),
    #[error("SSE line longer than {0} bytes")]
    LineTooLong(usize),
}

/// Longest line accepted (a generous bound on one event's JSON).
pub const MAX_LINE: usize = 16 << 20;

/// Feeds bytes in, yields the `data` of each complete event.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `bytes`, calling `on_event` with each complete event's data. Stops at the
    /// first framing error.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(&str)) -> Result<(), SseError> {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut on_event)?;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            return Err(SseError::LineTooLong(MAX_LINE));
        }
        Ok(())
    }

    fn line(&mut self, line: &str, on_event: &mut impl FnMut(&str)) -> Result<(), SseError> {
        if line.is_empty() {
            if let Some(d) = self.data.take() {
                on_event(&d);
            }
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(()); // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
                Ok(())
            }
            "event" | "id" | "retry" => Ok(()),
            _ => Err(SseError::BadLine(line.chars().take(200).collect())),
        }
    }

    /// Bytes received but not yet part of a complete line or event.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.data.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Result<Vec<String>, SseError> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |d| out.push(d.to_owned()))?;
        }
        Ok(out)
    }

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let whole = b"data: {\"a\":1}\n\n: ping\n\ndata: [DONE]\r\n\r\n";
        for cut in 0..whole.len() {
            let got = events(&[&whole[..cut], &whole[cut..]]).expect("valid stream");
            assert_eq!(got, vec!["{\"a\":1}", "[DONE]"], "cut at {cut}");
        }
    }

    #[test]
    fn multi_line_data_and_other_fields() {
        let got = events(&[b"event: x\nid: 3\ndata: a\ndata:b\n\n"]).expect("valid");
        assert_eq!(got, vec!["a\nb"]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            events(&[b"hello world\n\n"]),
            Err(SseError::BadLine(_))
        ));
        assert!(events(&[&[0xff, 0xfe, b'\n']]).is_err());
        // Arbitrary bytes never panic.
        let mut state: u64 = 1;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"data: \n\r:x[]{}"[(state >> 60) as usize % 14]
                })
                .collect();
            let _ = events(&[&bytes]);
        }
    }
}
