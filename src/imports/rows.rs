//! Reading an import file's records into typed rows, or refusals that say
//! which line and why. A record is read as bytes (the file was checked to
//! be UTF-8 by [`super::file`]) and parsed through the same domain types a
//! sign-up goes through, so an imported address or name is held to the
//! form's rules: no control or invisible characters (NUL would fail the
//! whole COPY), a real address.
//!
//! Memory stays bounded whatever the file holds: a record is refused past
//! [`MAX_ROW_BYTES`], and a record that keeps going past
//! [`MAX_RECORD_BYTES`] (an unclosed quote swallowing the rest of the file)
//! stops the import with the line it started on, instead of growing a
//! buffer without end.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read};
use std::rc::Rc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use csv::{ByteRecord, StringRecord};

use super::columns::{Columns, Left};
use crate::domain::{SubscriberEmail, SubscriberName};
use crate::subscribers::attributes::{Definition, Value};

/// The longest record a row may be: far beyond any real subscriber's.
pub const MAX_ROW_BYTES: usize = 64 * 1024;
/// The most a single record may hold in memory before the import stops.
pub const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// A row, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The physical line the record starts on (1 is the header).
    pub line: u64,
    pub email: SubscriberEmail,
    pub name: SubscriberName,
    pub subscribed_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The row's attribute values, as stored (a JSON object).
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

/// A row that is not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub line: u64,
    pub reason: String,
}

/// One record's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Row(Row),
    Refused(Refusal),
}

/// Why the rows cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("{0}")]
    Header(String),
    #[error(
        "The record starting on line {line} runs past {} MiB without ending: \
         a quote that is never closed?", MAX_RECORD_BYTES / (1024 * 1024)
    )]
    Runaway { line: u64 },
    #[error("The file could not be read: {0}")]
    Io(#[from] io::Error),
}

/// The rows of a file, in order.
pub struct Rows<R: Read> {
    csv: csv::Reader<Counted<BufReader<R>>>,
    columns: Columns,
    definitions: Vec<Definition>,
    record: ByteRecord,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Rows<R> {
    /// Reads the header row. A leading byte order mark is skipped.
    pub fn new(reader: R, definitions: Vec<Definition>) -> Result<Self, Unreadable> {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        if reader.fill_buf()?.starts_with(b"\xEF\xBB\xBF") {
            reader.consume(3);
        }
        let read = Rc::new(Cell::new(0));
        // Records end at LF alone: with CRLF as a terminator, the parser
        // counts a record's LF as the next record's, and every line number
        // after the first is one short. The CR that stays at the end of a
        // record's last field is trimmed like any surrounding space.
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(Counted {
                inner: reader,
                read: read.clone(),
                limit: None,
            });
        let header = csv.byte_headers().map_err(csv_error)?.clone();
        if header.is_empty() || header.as_slice().is_empty() {
            return Err(Unreadable::Header(
                "The file has no header row: its first line must name the columns.".into(),
            ));
        }
        let header = StringRecord::from_byte_record(header)
            .map_err(|_| Unreadable::Header("The header row is not UTF-8.".into()))?;
        let columns = Columns::map(&header, &definitions).map_err(Unreadable::Header)?;
        Ok(Self {
            csv,
            columns,
            definitions,
            record: ByteRecord::new(),
            read,
        })
    }

    pub fn columns(&self) -> &Columns {
        &self.columns
    }

    /// The next record's outcome; `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<Parsed>, Unreadable> {
        // Where the record starts, in bytes handed to the parser: a record
        // that has the parser read past MAX_RECORD_BYTES from here stops.
        let start = self.csv.position().clone();
        let started_at = self.read.get();
        let budget = started_at + MAX_RECORD_BYTES;
        self.csv.get_mut().limit = Some(budget);
        loop {
            match self.csv.read_byte_record(&mut self.record) {
                Ok(false) => return Ok(None),
                // A blank line (a CR alone, from CRLF endings) is no row.
                Ok(true) if self.record.iter().all(|f| f.trim_ascii().is_empty()) => continue,
                Ok(true) => {
                    let line = self.record.position().map_or(start.line(), |p| p.line());
                    return Ok(Some(self.parse(line)));
                }
                Err(e) if is_over_limit(&e) => {
                    return Err(Unreadable::Runaway { line: start.line() });
                }
                Err(e) => return Err(csv_error(e)),
            }
        }
    }

    fn parse(&self, line: u64) -> Parsed {
        match self.parse_row(line) {
            Ok(row) => Parsed::Row(row),
            Err(reason) => Parsed::Refused(Refusal { line, reason }),
        }
    }

    fn parse_row(&self, line: u64) -> Result<Row, String> {
        let record = &self.record;
        let size = record.as_slice().len();
        if size > MAX_ROW_BYTES {
            return Err(format!(
                "The row is {size} bytes long; a row may be at most {MAX_ROW_BYTES}."
            ));
        }
        let field = |index: Option<usize>| self.field(index);
        let columns = &self.columns;
        if record.len() <= columns.email {
            return Err(format!(
                "The row has {} fields; the header has {}.",
                record.len(),
                columns.width
            ));
        }
        for (index, left) in &columns.left {
            let value = field(Some(*index))?.trim();
            if let Some(how) = has_left(*left, value) {
                return Err(format!(
                    "The file marks this address as {how}: it is not subscribed again."
                ));
            }
        }
        let email = SubscriberEmail::parse(field(Some(columns.email))?)?;
        let name = self.name(&email)?;
        let subscribed_at = parse_time(field(columns.subscribed_at)?)
            .map_err(|e| format!("The subscription time {e}"))?;
        let confirmed_at = parse_time(field(columns.confirmed_at)?)
            .map_err(|e| format!("The confirmation time {e}"))?;
        let attributes = self.attributes()?;
        Ok(Row {
            line,
            email,
            name,
            subscribed_at,
            confirmed_at,
            attributes,
        })
    }

    /// The row's name: the name column, or first and last names joined. A
    /// row without one is named after its address's local part, which is
    /// what the emails greet them by until they say otherwise.
    /// The text of a field; empty when the column is absent or the row
    /// is short of it.
    fn field(&self, index: Option<usize>) -> Result<&str, String> {
        let Some(index) = index else { return Ok("") };
        let bytes = self.record.get(index).unwrap_or_default();
        std::str::from_utf8(bytes).map_err(|_| "The row is not UTF-8.".to_owned())
    }

    fn name(&self, email: &SubscriberEmail) -> Result<SubscriberName, String> {
        let field = |index: Option<usize>| self.field(index);
        let columns = &self.columns;
        let joined;
        let raw = if columns.name.is_some() {
            field(columns.name)?
        } else {
            joined = format!(
                "{} {}",
                field(columns.first_name)?.trim(),
                field(columns.last_name)?.trim()
            );
            &joined
        };
        if raw.trim().is_empty() {
            let local = email.as_ref().split('@').next().unwrap_or_default();
            return SubscriberName::parse(local);
        }
        SubscriberName::parse(raw)
    }

    fn attributes(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let field = |index: Option<usize>| self.field(index);
        let mut values = serde_json::Map::new();
        let json = field(self.columns.attributes_json)?.trim();
        if !json.is_empty() {
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)
                .map_err(|_| "The attributes are not a JSON object.".to_owned())?;
            // Only the attributes defined here: the rest of another
            // system's object has no place to go.
            for definition in &self.definitions {
                let Some(raw) = object.get(&definition.name) else {
                    continue;
                };
                let text = match raw {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => continue,
                    other => other.to_string(),
                };
                let value = Value::parse(definition.kind, &text)
                    .map_err(|e| format!("The attribute {}: {e}", definition.name))?;
                values.insert(definition.name.clone(), value.to_json());
            }
        }
        for (index, name, kind) in &self.columns.attributes {
            let raw = field(Some(*index))?;
            if raw.trim().is_empty() {
                continue;
            }
            let value =
                Value::parse(*kind, raw).map_err(|e| format!("The attribute {name}: {e}"))?;
            values.insert(name.clone(), value.to_json());
        }
        Ok(values)
    }
}

/// What a column's value says about the address having left, if it does.
fn has_left(how: Left, value: &str) -> Option<&'static str> {
    match how {
        _ if value.is_empty() => None,
        Left::AnyValue(what) => Some(what),
        Left::Flag => matches!(value.to_lowercase().as_str(), "true" | "yes" | "1" | "t")
            .then_some("disabled"),
        Left::Status => match value.to_lowercase().as_str() {
            "unsubscribed" | "unsubscribe" | "optout" | "opted out" => Some("unsubscribed"),
            "blocklisted" | "blacklisted" | "blocked" => Some("blocklisted"),
            "cleaned" | "bounced" => Some("cleaned (bounced)"),
            "complained" | "spam" => Some("a complainer"),
            "disabled" | "inactive" => Some("disabled"),
            _ => None,
        },
    }
}

/// An optional time, in the shapes exports write: RFC 3339, or
/// `YYYY-MM-DD HH:MM:SS` (UTC, as Mailchimp writes it), or a date.
fn parse_time(raw: &str) -> Result<Option<DateTime<Utc>>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(raw) {
        return Ok(Some(time.with_timezone(&Utc)));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(time) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(Some(time.and_utc()));
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(Some(
            date.and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc(),
        ));
    }
    Err(format!(
        "\"{}\" is not a time (YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or RFC 3339).",
        raw.chars().take(40).collect::<String>()
    ))
}

fn csv_error(e: csv::Error) -> Unreadable {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => Unreadable::Io(e),
        other => Unreadable::Io(io::Error::other(format!("{other:?}"))),
    }
}

fn is_over_limit(e: &csv::Error) -> bool {
    matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == io::ErrorKind::FileTooLarge)
}

/// The file as the parser reads it, counting the bytes handed over and
/// refusing to hand more past `limit`.
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    limit: Option<u64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.read.get();
        if self.limit.is_some_and(|limit| read >= limit) {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "record too long",
            ));
        }
        let n = self.inner.read(buf)?;
        self.read.set(read + n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(file: &[u8]) -> Vec<Parsed> {
        let mut rows = Rows::new(file, Vec::new()).unwrap();
        let mut all = Vec::new();
        while let Some(parsed) = rows.next_row().unwrap() {
            all.push(parsed);
        }
        all
    }

    fn lines_and_outcomes(file: &[u8]) -> Vec<(u64, Result<String, String>)> {
        read_all(file)
            .into_iter()
            .map(|parsed| match parsed {
                Parsed::Row(row) => (row.line, Ok(row.email.as_ref().to_owned())),
                Parsed::Refused(refusal) => (refusal.line, Err(refusal.reason)),
            })
            .collect()
    }

    #[test]
    fn a_bom_and_crlf_endings_are_read_as_plain_csv() {
        let rows = lines_and_outcomes(
            b"\xEF\xBB\xBFemail,name\r\nada@example.com,Ada\r\nbob@example.com,Bob\r\n",
        );
        assert_eq!(
            rows,
            vec![
                (2, Ok("ada@example.com".into())),
                (3, Ok("bob@example.com".into()))
            ]
        );
    }

    #[test]
    fn line_numbers_are_where_each_record_starts_when_fields_hold_newlines() {
        let file = b"email,name\nada@example.com,\"Ada\nLovelace\"\nbob@example.com,Bob\n";
        let rows = read_all(file);
        // The name with a newline is refused (names carry no line breaks);
        // the next record starts on physical line 4, not record 3.
        assert!(
            matches!(&rows[0], Parsed::Refused(r) if r.line == 2),
            "{rows:?}"
        );
        assert!(
            matches!(&rows[1], Parsed::Row(r) if r.line == 4),
            "{rows:?}"
        );
    }

    #[test]
    fn a_bad_row_is_refused_with_its_line_and_the_others_are_read() {
        let rows = lines_and_outcomes(b"email\nnot an address\nada@example.com\n");
        assert_eq!(rows[0].0, 2);
        assert!(rows[0].1.is_err());
        assert_eq!(rows[1], (3, Ok("ada@example.com".into())));
    }

    #[test]
    fn nul_and_bidi_characters_are_refused_with_a_reason() {
        for (case, file) in [
            ("NUL", &b"email,name\nada@example.com,A\x00da\n"[..]),
            (
                "bidi override",
                "email,name\nada@example.com,A\u{202E}da\n".as_bytes(),
            ),
            ("NUL in address", &b"email\nada\x00@example.com\n"[..]),
        ] {
            let rows = lines_and_outcomes(file);
            assert!(matches!(&rows[0], (2, Err(_))), "{case}: {rows:?}");
        }
    }

    #[test]
    fn a_huge_row_is_refused_and_the_rows_after_it_are_read() {
        let mut file = b"email,name\nada@example.com,".to_vec();
        file.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
        file.extend_from_slice(b"\nbob@example.com,Bob\n");
        let rows = lines_and_outcomes(&file);
        assert!(
            matches!(&rows[0], (2, Err(reason)) if reason.contains("bytes long")),
            "{:?}",
            rows[0].1.as_ref().map_err(|e| &e[..40.min(e.len())])
        );
        assert_eq!(rows[1], (3, Ok("bob@example.com".into())));
    }

    #[test]
    fn an_unclosed_quote_stops_the_import_naming_its_line_instead_of_filling_memory() {
        let mut file = b"email,name\nada@example.com,\"Ada".to_vec();
        file.extend(std::iter::repeat_n(
            b'x',
            (MAX_RECORD_BYTES + 1024 * 1024) as usize,
        ));
        let mut rows = Rows::new(&file[..], Vec::new()).unwrap();
        let outcome = rows.next_row();
        assert!(
            matches!(outcome, Err(Unreadable::Runaway { line: 2 })),
            "{:?}",
            outcome.map(|_| ())
        );
    }

    #[test]
    fn formula_like_cells_are_kept_as_given() {
        let rows = read_all(b"email,name\nada@example.com,=1+2\nbob@example.com,+1 Bob\ncy@example.com,-Cy\ndee@example.com,@Dee\n");
        let names: Vec<String> = rows
            .iter()
            .map(|p| match p {
                Parsed::Row(r) => r.name.as_ref().to_owned(),
                Parsed::Refused(r) => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(names, vec!["=1+2", "+1 Bob", "-Cy", "@Dee"]);
    }

    #[test]
    fn a_header_only_file_has_no_rows_and_an_empty_one_no_header() {
        assert!(read_all(b"email,name\n").is_empty());
        assert!(matches!(
            Rows::new(&b""[..], Vec::new()),
            Err(Unreadable::Header(_))
        ));
    }

    #[test]
    fn rows_marked_as_having_left_are_refused() {
        let rows = lines_and_outcomes(
            b"Email Address,First Name,Last Name,UNSUB_TIME\nada@example.com,Ada,L,2024-01-01 10:00:00\nbob@example.com,Bob,M,\n",
        );
        assert!(
            matches!(&rows[0], (2, Err(r)) if r.contains("unsubscribed")),
            "{rows:?}"
        );
        assert_eq!(rows[1], (3, Ok("bob@example.com".into())));
    }

    #[test]
    fn names_join_first_and_last_and_default_to_the_local_part() {
        let rows = read_all(
            b"email,first_name,last_name\nada@example.com,Ada,Lovelace\nbob@example.com,,\n",
        );
        let names: Vec<String> = rows
            .iter()
            .filter_map(|p| match p {
                Parsed::Row(r) => Some(r.name.as_ref().to_owned()),
                Parsed::Refused(_) => None,
            })
            .collect();
        assert_eq!(names, vec!["Ada Lovelace", "bob"]);
    }

    #[test]
    fn times_in_the_exports_shapes_are_read_and_others_refused() {
        assert!(parse_time("2024-03-01 12:30:00").unwrap().is_some());
        assert!(parse_time("2024-03-01T12:30:00Z").unwrap().is_some());
        assert!(parse_time("2024-03-01").unwrap().is_some());
        assert!(parse_time("").unwrap().is_none());
        assert!(parse_time("yesterday").is_err());
    }
}
