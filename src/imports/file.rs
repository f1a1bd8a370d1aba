//! The first pass over an import file: its SHA-256, which keys the import
//! (the same file twice on one list is one import), and its encoding. Only
//! UTF-8 is read, with or without a byte order mark; any other encoding is
//! refused here, naming what it most likely is, before a single row is
//! staged. Reading it whole in fixed chunks keeps memory flat whatever the
//! file's size, and the check costs a fraction of the import.

use std::io::Read;

use sha2::{Digest, Sha256};

/// What the first pass learned about an acceptable file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    pub sha256: [u8; 32],
    pub bytes: u64,
}

/// Why a file is refused before any row is read.
#[derive(Debug, thiserror::Error)]
pub enum FileRefused {
    #[error("The file is empty.")]
    Empty,
    #[error(
        "The file is not UTF-8: it looks like {encoding} (first byte that is not UTF-8 on line {line}). \
         Save it as CSV in UTF-8 and import it again."
    )]
    Encoding { encoding: &'static str, line: u64 },
    #[error("The file could not be read: {0}")]
    Io(#[from] std::io::Error),
}

const CHUNK: usize = 64 * 1024;

/// Hashes the file and checks that it is UTF-8 throughout.
pub fn check(mut reader: impl Read) -> Result<FileCheck, FileRefused> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; CHUNK + 4];
    // Bytes of a character cut by the end of the previous chunk.
    let mut carried = 0usize;
    let mut bytes = 0u64;
    let mut lines = 1u64;
    let mut first = true;
    loop {
        let read = reader.read(&mut buffer[carried..carried + CHUNK])?;
        if read == 0 {
            if carried > 0 {
                return Err(refusal(&buffer[..carried], lines));
            }
            break;
        }
        hasher.update(&buffer[carried..carried + read]);
        bytes += read as u64;
        let filled = carried + read;
        if first {
            first = false;
            if let Some(encoding) = utf16_bom(&buffer[..filled]) {
                return Err(FileRefused::Encoding { encoding, line: 1 });
            }
        }
        let valid_up_to = match std::str::from_utf8(&buffer[..filled]) {
            Ok(_) => filled,
            // A character cut at the chunk's end: kept for the next chunk.
            Err(e) if e.error_len().is_none() && filled - e.valid_up_to() < 4 => e.valid_up_to(),
            Err(e) => {
                let line = lines + count_lines(&buffer[..e.valid_up_to()]);
                return Err(refusal(&buffer[e.valid_up_to()..filled], line));
            }
        };
        lines += count_lines(&buffer[..valid_up_to]);
        buffer.copy_within(valid_up_to..filled, 0);
        carried = filled - valid_up_to;
    }
    if bytes == 0 {
        return Err(FileRefused::Empty);
    }
    Ok(FileCheck {
        sha256: hasher.finalize().into(),
        bytes,
    })
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

fn utf16_bom(start: &[u8]) -> Option<&'static str> {
    match start {
        [0xFF, 0xFE, ..] => Some("UTF-16 (little-endian)"),
        [0xFE, 0xFF, ..] => Some("UTF-16 (big-endian)"),
        _ => None,
    }
}

/// Names the likely encoding from the bytes at the first invalid one. UTF-16
/// without a mark shows as NUL bytes between ASCII letters; any other
/// single-byte text from a spreadsheet is Windows-1252 or its subset
/// ISO-8859-1, which is what Excel and older exports write in the West.
fn refusal(rest: &[u8], line: u64) -> FileRefused {
    let sample = &rest[..rest.len().min(64)];
    let encoding = if sample.contains(&0) {
        "UTF-16 (without a byte order mark)"
    } else {
        "Latin-1 (ISO-8859-1 or Windows-1252)"
    };
    FileRefused::Encoding { encoding, line }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_with_or_without_a_bom_is_accepted_and_hashed() {
        for file in [&b"email\nada@example.com\n"[..], b"\xEF\xBB\xBFemail\n"] {
            let checked = check(file).unwrap();
            assert_eq!(checked.bytes, file.len() as u64);
            assert_eq!(checked.sha256, <[u8; 32]>::from(Sha256::digest(file)));
        }
    }

    #[test]
    fn latin1_is_refused_naming_the_encoding_and_line() {
        let error = check(&b"email,name\nada@example.com,Ren\xE9e\n"[..]).unwrap_err();
        let reason = error.to_string();
        assert!(reason.contains("Latin-1"), "{reason}");
        assert!(reason.contains("line 2"), "{reason}");
    }

    #[test]
    fn utf16_is_refused_as_utf16() {
        let error = check(&b"\xFF\xFEe\0m\0"[..]).unwrap_err();
        assert!(error.to_string().contains("UTF-16"), "{error}");
    }

    #[test]
    fn an_empty_file_is_refused() {
        assert!(matches!(check(&b""[..]), Err(FileRefused::Empty)));
    }

    #[test]
    fn a_character_cut_by_a_chunk_boundary_is_still_utf8() {
        // "é" is two bytes; place it across the first chunk's end.
        let mut file = vec![b'a'; CHUNK - 1];
        file.extend_from_slice("é\n".as_bytes());
        file.extend(std::iter::repeat_n(b'b', CHUNK * 2));
        assert!(check(&file[..]).is_ok());
    }

    #[test]
    fn a_truncated_character_at_the_end_is_refused() {
        assert!(matches!(
            check(&b"email\n\xC3"[..]),
            Err(FileRefused::Encoding { .. })
        ));
    }
}
