//! Two jobs at build time:
//! - The migrations are embedded by `sqlx::migrate!`; rebuild when one is
//!   added or changed, which cargo does not notice on its own.
//! - Every value written down in the repository (configuration files,
//!   documentation, scripts, the code and its tests) is collected into a
//!   list that production checks its secrets against
//!   (`src/configuration/production.rs`): a key or password that anyone can
//!   read here is no secret, whatever its length.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where values are written down. `target/` and `.git/` are not read: the
/// one holds builds, the other the same files again.
const PLACES: &[&str] = &[
    "configuration",
    "docs",
    "scripts",
    "src",
    "tests",
    "examples",
    "benches",
    "README.md",
    "spec.yaml",
    "Dockerfile",
    ".ci",
];

/// Shorter values are common words and fragments of code; a secret that
/// short is refused for its length by the checks that care.
const SHORTEST_VALUE: usize = 4;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut values = BTreeSet::new();
    for place in PLACES {
        let path = root.join(place);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect(&path, &mut values);
        }
    }
    let mut listing = String::from("pub static PUBLISHED_VALUES: &[&str] = &[\n");
    for value in &values {
        writeln!(listing, "    {value:?},").expect("writing to a String");
    }
    listing.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("published_values.rs"), listing).expect("OUT_DIR is writable");
}

/// Reads every text file under `path`.
fn collect(path: &Path, values: &mut BTreeSet<String>) {
    if path.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            collect(&entry.path(), values);
        }
    } else if let Ok(text) = std::fs::read_to_string(path) {
        values_in(&text, values);
    }
}

/// The values in a text: each quoted string on a line (a YAML value, a
/// Rust or shell string, spaces and all), and each word between
/// separators, alone and split again at `=` and `:` (`KEY=value`,
/// `key: value`, `user:password@host`).
fn values_in(text: &str, values: &mut BTreeSet<String>) {
    let mut keep = |value: &str| {
        let value = value.trim();
        if value.chars().count() >= SHORTEST_VALUE {
            values.insert(value.to_owned());
        }
    };
    for line in text.lines() {
        for quote in ['"', '\'', '`'] {
            for (i, quoted) in line.split(quote).enumerate() {
                if i % 2 == 1 {
                    keep(quoted);
                }
            }
        }
        let is_separator =
            |c: char| c.is_whitespace() || "\"'`,;()[]{}<>|".contains(c) || c.is_control();
        for word in line.split(is_separator) {
            keep(word);
            for piece in word.split(['=', ':', '@', '/']) {
                keep(piece);
            }
        }
    }
}
