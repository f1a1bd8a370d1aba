//! What the CSV files the newsroom hands out share: a spreadsheet opening
//! one must show its cells, never run them. The subscriber export and an
//! import's refused rows both write cells typed by strangers.

use std::borrow::Cow;

/// A spreadsheet opening the file runs a cell that starts with `=`, `+`,
/// `-` or `@` as a formula, and names and addresses are typed by strangers.
/// Such a cell gets a leading apostrophe, which spreadsheets show as text.
pub fn defuse(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_that_a_spreadsheet_would_run_are_made_text() {
        assert_eq!(defuse("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(defuse("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(defuse("-1+1"), "'-1+1");
        assert_eq!(defuse("Ada Lovelace"), "Ada Lovelace");
    }
}
