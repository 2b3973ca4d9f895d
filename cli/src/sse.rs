//! Server-sent events: the parser `watch` and the TUI read knockd's `GET /events` with.

/// A server-sent-events parser: feed it bytes, get the `data` of each complete event.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Consumes a chunk; returns the data of the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in chunk {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line_done(&String::from_utf8_lossy(&line), &mut events);
        }
        events
    }

    fn line_done(&mut self, line: &str, events: &mut Vec<String>) {
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        if line.starts_with(':') {
            return; // a comment, e.g. keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field == "data" {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SseParser;

    #[test]
    fn parses_events_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: knock\r\ndata: {\"kind\":").is_empty());
        assert_eq!(p.push(b"\"knock\"}\r\n\r\n: keep-alive\n\n"), vec!["{\"kind\":\"knock\"}"]);
        assert_eq!(p.push(b"data:a\ndata: b\n\nid: 1\n\n"), vec!["a\nb"]);
    }
}
