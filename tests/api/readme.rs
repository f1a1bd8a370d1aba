//! The README's tables against the code: a newcomer finds their way by
//! them, so the layout table names every part of `src/` and nothing that is
//! gone, the route tables name every route the server answers and no other,
//! and the security page cites tests that exist.

use std::collections::BTreeSet;
use std::path::Path;

use newsletter::routes::endpoints;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The text under `heading` (a whole line, such as `## Layout`), up to the
/// next heading of the same level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let level = heading.split(' ').next().unwrap_or_default();
    let section = text
        .split(&format!("\n{heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("no section {heading}"));
    section.split(&format!("\n{level} ")).next().unwrap()
}

/// What is written `like this` in the first column of the tables in `text`.
fn first_column_code(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| {
            let first_column = line.split('|').nth(1).unwrap_or_default();
            first_column
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The paths in the first column of the table under `## Layout`.
fn layout_paths(readme: &str) -> Vec<String> {
    first_column_code(section(readme, "## Layout"))
}

#[test]
fn the_readme_layout_table_names_every_part_of_src_and_only_paths_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let named = layout_paths(&readme());

    let missing: Vec<&String> = named
        .iter()
        .filter(|path| !root.join(path.as_str()).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "named in the layout table but not in the tree: {missing:?}"
    );

    let named: BTreeSet<String> = named
        .iter()
        .map(|path| path.trim_end_matches('/').to_owned())
        .collect();
    let unnamed: Vec<String> = std::fs::read_dir(root.join("src"))
        .unwrap()
        .map(|entry| format!("src/{}", entry.unwrap().file_name().to_string_lossy()))
        // The crate root only lists the modules.
        .filter(|path| path != "src/lib.rs" && !named.contains(path))
        .collect();
    assert!(
        unnamed.is_empty(),
        "in src/ but not in the layout table: {unnamed:?}"
    );
}

/// The rows of the table in `docs/security.md`: each row's last column, as
/// (file under `tests/`, test names) pairs.
fn security_table_tests(page: &str) -> Vec<(String, Vec<String>)> {
    let mut cited = Vec::new();
    for row in page.lines().filter(|line| line.starts_with("| ")) {
        let last = row
            .trim_end_matches('|')
            .rsplit('|')
            .next()
            .unwrap_or_default();
        // "`file`: `test`, `test`; `file`: `test`"
        for group in last.split(';') {
            let names: Vec<String> = group
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            if let Some((file, tests)) = names.split_first()
                && file.ends_with(".rs")
            {
                cited.push((file.clone(), tests.to_vec()));
            }
        }
    }
    cited
}

#[test]
fn every_test_the_security_table_cites_exists_in_the_file_it_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("docs/security.md")).unwrap();
    let cited = security_table_tests(&page);
    assert!(
        cited.len() >= 10,
        "the table cites too few tests: {cited:?}"
    );

    for (file, tests) in cited {
        let source = std::fs::read_to_string(root.join("tests").join(&file))
            .unwrap_or_else(|e| panic!("the table cites tests/{file}: {e}"));
        assert!(!tests.is_empty(), "tests/{file} is cited without a test");
        for test in tests {
            assert!(
                source.contains(&format!("fn {test}(")),
                "tests/{file} has no test {test}"
            );
        }
    }
}

/// Every `METHOD /path` written in the first column of the tables under
/// `## Routes`, such as `GET /login`, `POST /login`.
fn documented_routes(readme: &str) -> BTreeSet<(String, String)> {
    const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
    first_column_code(section(readme, "## Routes"))
        .into_iter()
        .filter_map(|code| {
            let (method, rest) = code.split_once(' ')?;
            // The path without what a row adds after it: a query,
            // or the form's fields.
            let path = rest.split(['?', ' ']).next()?;
            (METHODS.contains(&method) && path.starts_with('/'))
                .then(|| (method.to_owned(), path.to_owned()))
        })
        .collect()
}

#[test]
fn the_readme_route_tables_name_every_route_the_server_answers_and_no_other() {
    let documented = documented_routes(&readme());
    assert!(
        documented.len() > 20,
        "too few routes read from the tables: {documented:?}"
    );
    let served: BTreeSet<(String, String)> = endpoints()
        .iter()
        .flat_map(|endpoint| {
            endpoint
                .methods
                .iter()
                .map(|method| (method.to_string(), endpoint.path.to_owned()))
        })
        .collect();

    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but missing from the README's route tables: {undocumented:?}"
    );
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        unserved.is_empty(),
        "in the README's route tables but not served: {unserved:?}"
    );
}

#[test]
fn the_readme_opens_with_the_two_commands_and_the_tour_within_sixty_lines() {
    let readme = readme();
    let first_screen: Vec<&str> = readme.lines().take(60).collect();
    let first_screen = first_screen.join("\n");
    for command in [
        "scripts/run_local.sh",
        "scripts/test.sh",
        "## Try it",
        "/admin/inbox",
    ] {
        assert!(
            first_screen.contains(command),
            "the first 60 lines do not hold {command}"
        );
    }
    let tour = section(&readme, "## Try it");
    let steps = (1..=10)
        .filter(|n| tour.lines().any(|line| line.starts_with(&format!("{n}. "))))
        .count();
    assert_eq!(steps, 10, "the tour does not have its ten steps:\n{tour}");
}

#[test]
fn every_page_the_readme_links_under_docs_exists_and_every_page_there_is_linked() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = readme();
    let linked: BTreeSet<String> = readme
        .split("](docs/")
        .skip(1)
        .filter_map(|rest| rest.split([')', '#']).next())
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = linked
        .iter()
        .filter(|page| !root.join("docs").join(page).exists())
        .collect();
    assert!(missing.is_empty(), "linked but not in docs/: {missing:?}");
    let unlinked: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|page| page.ends_with(".md") && !linked.contains(page))
        .collect();
    assert!(unlinked.is_empty(), "in docs/ but not linked: {unlinked:?}");
}

/// The backticked value after `label` in `text`.
fn value_after<'a>(text: &'a str, label: &str) -> &'a str {
    let start = text
        .find(label)
        .unwrap_or_else(|| panic!("{label} not found"))
        + label.len();
    let rest = &text[start..];
    let open = rest.find('`').unwrap() + 1;
    let close = open + rest[open..].find('`').unwrap();
    &rest[open..close]
}

#[test]
fn the_readmes_webhook_signature_example_is_what_the_service_signs() {
    let readme = readme();
    let part = section(&readme, "## Outgoing webhooks");
    let example = &part[part.find("For the secret").expect("the example is there")..];
    let secret = value_after(example, "For the secret");
    let id = value_after(example, "the id");
    let timestamp: i64 = value_after(example, "the timestamp").parse().unwrap();
    let body = value_after(example, "the body");
    let signature = value_after(example, "the signature is");

    let secret = newsletter::outgoing_webhooks::signing::Secret::parse(secret).unwrap();
    let signed =
        newsletter::outgoing_webhooks::signing::sign(&secret, id, timestamp, body.as_bytes());

    assert_eq!(signed, signature);
    assert!(
        part.contains("```python"),
        "the receiver's snippet is there"
    );
}
