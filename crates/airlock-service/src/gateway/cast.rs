//! Terminal recordings in asciicast v2 (one JSON header line, then one JSON
//! array per event: `[seconds, "o", text]` for output, `[seconds, "r",
//! "COLSxROWS"]` for a resize), the open format `asciinema play` and the web
//! player read. Pure: the caller passes times and bytes.

use serde_json::{json, Value};

/// Terminal size when the client asked for no PTY (`ssh host cmd`).
pub const DEFAULT_SIZE: (u32, u32) = (80, 24);

/// One recording being written: the header once, then events with times
/// relative to it. Output is UTF-8 text in asciicast, so a multi-byte
/// character split across two reads is held until its end arrives.
#[derive(Debug, Default)]
pub struct Cast {
    size: Option<(u32, u32)>,
    term: Option<String>,
    started: Option<f64>,
    carry: Vec<u8>,
}

impl Cast {
    /// The terminal the client asked for (before the shell starts).
    pub fn pty(&mut self, cols: u32, rows: u32, term: &str) {
        if self.started.is_none() {
            // `ssh -tt` without a terminal asks for 0x0.
            self.size = Some(if cols == 0 || rows == 0 {
                DEFAULT_SIZE
            } else {
                (cols, rows)
            });
            self.term = Some(term.chars().take(64).collect());
        }
    }

    /// The header line, the first time anything is recorded. `unix` is the
    /// wall clock, `at` the monotonic seconds every event is measured from.
    pub fn start(&mut self, unix: i64, at: f64, command: Option<&str>) -> Option<Value> {
        if self.started.is_some() {
            return None;
        }
        self.started = Some(at);
        let (width, height) = self.size.unwrap_or(DEFAULT_SIZE);
        let mut header = json!({
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": unix,
        });
        if let Some(term) = &self.term {
            header["env"] = json!({ "TERM": term });
        }
        if let Some(c) = command {
            header["command"] = json!(c.chars().take(1024).collect::<String>());
        }
        Some(header)
    }

    /// An output event for `bytes` at `at` (`None` while only part of a
    /// character has arrived).
    pub fn output(&mut self, at: f64, bytes: &[u8]) -> Option<Value> {
        self.carry.extend_from_slice(bytes);
        let text = take_text(&mut self.carry);
        (!text.is_empty()).then(|| json!([self.elapsed(at), "o", text]))
    }

    /// A resize event.
    pub fn resize(&mut self, at: f64, cols: u32, rows: u32) -> Value {
        json!([self.elapsed(at), "r", format!("{cols}x{rows}")])
    }

    /// What is still held at the end (an unfinished character, shown as U+FFFD).
    pub fn finish(&mut self, at: f64) -> Option<Value> {
        if self.carry.is_empty() {
            return None;
        }
        let text = String::from_utf8_lossy(&std::mem::take(&mut self.carry)).into_owned();
        Some(json!([self.elapsed(at), "o", text]))
    }

    fn elapsed(&self, at: f64) -> f64 {
        let secs = (at - self.started.unwrap_or(at)).max(0.0);
        // Microseconds are plenty and keep the lines short.
        (secs * 1e6).round() / 1e6
    }
}

/// What a recording's terminal showed, as plain text: output events joined,
/// escape sequences (colours, cursor moves, titles) dropped, `\r\n` as a
/// newline, a backspace erasing. At most `max` bytes of text; the flag says
/// whether it was cut. For a page without a player, not a terminal emulator.
pub fn plain_text(recording: &[u8], max: usize) -> (String, bool) {
    let text = String::from_utf8_lossy(recording);
    let mut out = String::new();
    for line in text.lines().skip(1) {
        let Ok(Value::Array(e)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if e.get(1).and_then(Value::as_str) != Some("o") {
            continue;
        }
        let Some(data) = e.get(2).and_then(Value::as_str) else {
            continue;
        };
        strip_into(&mut out, data);
        if out.len() > max {
            let mut cut = max;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            return (out, true);
        }
    }
    (out, false)
}

fn strip_into(out: &mut String, data: &str) {
    let mut chars = data.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters, then one final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (titles): up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next();
                            break;
                        }
                    }
                }
                // Charset selection and other two- or three-byte escapes.
                Some('(') | Some(')') => {
                    chars.next();
                }
                _ => {}
            },
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    // A lone carriage return rewrites the line: keep what follows.
                }
            }
            '\u{8}' => {
                out.pop();
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

/// Takes the longest prefix of `buf` that is whole UTF-8 (invalid bytes
/// become U+FFFD), leaving an unfinished character at the end in `buf`.
fn take_text(buf: &mut Vec<u8>) -> String {
    let mut out = String::new();
    let mut rest: &[u8] = buf;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (good, bad) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(good).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        rest = &bad[n..];
                    }
                    // Cut short at the end: wait for the rest.
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.len();
    let from = buf.len() - keep;
    buf.drain(..from);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_carries_the_pty_size_and_events_count_from_it() {
        let mut c = Cast::default();
        c.pty(120, 40, "xterm-256color");
        let h = c.start(1_700_000_000, 10.0, None).unwrap();
        assert_eq!(h["version"], 2);
        assert_eq!(
            (h["width"].as_u64(), h["height"].as_u64()),
            (Some(120), Some(40))
        );
        assert_eq!(h["env"]["TERM"], "xterm-256color");
        assert!(c.start(0, 11.0, None).is_none(), "one header");
        assert_eq!(
            c.output(10.5, b"hi\r\n").unwrap(),
            json!([0.5, "o", "hi\r\n"])
        );
        assert_eq!(c.resize(12.25, 100, 30), json!([2.25, "r", "100x30"]));
    }

    #[test]
    fn without_a_pty_the_size_is_the_default() {
        let mut c = Cast::default();
        c.pty(0, 0, "dumb");
        assert_eq!(c.start(0, 0.0, None).unwrap()["width"], 80);
        let mut c = Cast::default();
        let h = c.start(0, 0.0, Some("uname -a")).unwrap();
        assert_eq!(
            (h["width"].as_u64(), h["height"].as_u64()),
            (Some(80), Some(24))
        );
        assert_eq!(h["command"], "uname -a");
        assert!(h.get("env").is_none());
    }

    #[test]
    fn plain_text_drops_escapes_and_keeps_what_was_shown() {
        let rec = [
            r#"{"version":2,"width":80,"height":24}"#,
            r#"[0.1,"o","\u001b]0;title\u0007\u001b[1;32mroot@web1\u001b[0m:~# "]"#,
            r#"[0.2,"r","100x30"]"#,
            r#"[0.3,"o","lsx\b \b\r\nfile\r\n"]"#,
        ]
        .join("\n");
        let (text, cut) = plain_text(rec.as_bytes(), 1000);
        assert_eq!(text, "root@web1:~# ls\nfile\n");
        assert!(!cut);
        let (text, cut) = plain_text(rec.as_bytes(), 4);
        assert_eq!((text.as_str(), cut), ("root", true));
    }

    #[test]
    fn a_character_split_across_reads_is_held_until_whole() {
        let mut c = Cast::default();
        c.start(0, 0.0, None);
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(
            c.output(1.0, &[b'a', euro[0]]).unwrap(),
            json!([1.0, "o", "a"])
        );
        assert!(c.output(1.1, &euro[1..2]).is_none());
        assert_eq!(c.output(1.2, &euro[2..]).unwrap(), json!([1.2, "o", "€"]));
        // Invalid bytes become U+FFFD and do not stall what follows.
        assert_eq!(
            c.output(2.0, b"\xffok").unwrap(),
            json!([2.0, "o", "\u{FFFD}ok"])
        );
        c.output(3.0, &euro[..1]);
        assert_eq!(c.finish(4.0).unwrap(), json!([4.0, "o", "\u{FFFD}"]));
        assert!(c.finish(5.0).is_none());
    }
}
