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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Engine streams, mutated and cut at every kind of place: parsed or refused, never a
    /// panic (`KVBENCH_FUZZ_SECS`, see `kvbench_common::fuzz`).
    #[test]
    fn the_sse_parser_never_panics() {
        let seeds: [&[u8]; 3] = [
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
            b": keep-alive\r\nevent: message\r\ndata: a\r\ndata: b\r\n\r\n",
            b"id: 1\nretry: 10\ndata:x\n\n",
        ];
        let f = kvbench_common::fuzz::run("sse", &seeds, |input| {
            let mut p = SseParser::new();
            // Split where the network might: one read, then the rest.
            let cut = input.len() / 3;
            let mut events = 0usize;
            if p.feed(&input[..cut], |e| events += e.len()).is_ok() {
                let _ = p.feed(&input[cut..], |e| events += e.len());
            }
        });
        assert!(f.inputs > 100, "{f:?}");
    }

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
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere: the parser answers (events or an error), never panics.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512), cut in 0usize..512) {
            let cut = cut.min(bytes.len());
            let _ = events(&[&bytes[..cut], &bytes[cut..]]);
        }

        /// Bytes drawn from SSE's own alphabet, in many pieces: never panics either.
        #[test]
        fn never_panics_on_near_sse(
            bytes in proptest::collection::vec(proptest::sample::select(b"data: \r\n:{}[DONE]x".to_vec()), 0..512),
            pieces in 1usize..16,
        ) {
            let step = bytes.len() / pieces + 1;
            let chunks: Vec<&[u8]> = bytes.chunks(step).collect();
            let _ = events(&chunks);
        }

        /// A valid stream split into arbitrary pieces yields exactly its events.
        #[test]
        fn valid_streams_reassemble(
            payloads in proptest::collection::vec("[a-zA-Z0-9 {}\\[\\]\":,]{0,40}", 1..8),
            cuts in proptest::collection::vec(0usize..400, 0..6),
            crlf in proptest::bool::ANY,
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let text: String = payloads.iter().map(|p| format!("data: {p}{nl}{nl}")).collect();
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts {
                pieces.push(&bytes[last..c]);
                last = c;
            }
            pieces.push(&bytes[last..]);
            let got = events(&pieces).expect("valid stream");
            proptest::prop_assert_eq!(got, payloads);
        }
    }
}
