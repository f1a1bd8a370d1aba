//! Rows as COPY's text format writes them into the staging table
//! ([`super::store::copy_in`]): one line per row, tab between columns,
//! `\N` for no value, and backslash, tab and line breaks escaped. Each row
//! carries the keyed hashes of its address and mailbox, which the
//! suppression list and `former_addresses` are keyed by (the key never
//! leaves this process), and, for readers who will be asked to confirm,
//! their confirmation token: it is stored hashed by the merge, and sent in
//! their email.

use std::fmt::Write as _;

use super::Row;
use crate::domain::SubscriptionToken;
use crate::keys::Keys;

/// Appends rows to a buffer of COPY text.
pub struct Encoder {
    keys: Keys,
    /// Whether rows get confirmation tokens (an import not attested).
    tokens: bool,
}

impl Encoder {
    pub fn new(keys: Keys, tokens: bool) -> Self {
        Self { keys, tokens }
    }

    pub fn write(&self, row: &Row, out: &mut Vec<u8>) {
        let email = row.email.as_ref();
        let mut line = String::with_capacity(256);
        let _ = write!(line, "{}\t", row.line);
        escape_into(email, &mut line);
        line.push('\t');
        escape_into(&email.to_lowercase(), &mut line);
        line.push('\t');
        escape_into(row.name.as_ref(), &mut line);
        line.push('\t');
        time_into(row.subscribed_at, &mut line);
        line.push('\t');
        time_into(row.confirmed_at, &mut line);
        line.push('\t');
        escape_into(
            &serde_json::Value::Object(row.attributes.clone()).to_string(),
            &mut line,
        );
        line.push('\t');
        bytea_into(&self.keys.address_hash(email), &mut line);
        line.push('\t');
        bytea_into(
            &self.keys.address_hash(row.email.mailbox().as_ref()),
            &mut line,
        );
        line.push('\t');
        if self.tokens {
            line.push_str(SubscriptionToken::generate().as_ref());
        } else {
            line.push_str("\\N");
        }
        line.push('\n');
        out.extend_from_slice(line.as_bytes());
    }
}

fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn time_into(time: Option<chrono::DateTime<chrono::Utc>>, out: &mut String) {
    match time {
        Some(time) => out.push_str(&time.to_rfc3339()),
        None => out.push_str("\\N"),
    }
}

/// `\x` and hex, its backslash escaped for COPY.
fn bytea_into(bytes: &[u8], out: &mut String) {
    out.push_str("\\\\x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backslashes_tabs_and_line_breaks_are_escaped() {
        let mut out = String::new();
        escape_into("a\\b\tc\nd\re", &mut out);
        assert_eq!(out, "a\\\\b\\tc\\nd\\re");
    }

    #[test]
    fn bytes_are_written_as_escaped_hex() {
        let mut out = String::new();
        bytea_into(&[0, 255], &mut out);
        assert_eq!(out, "\\\\x00ff");
    }
}
