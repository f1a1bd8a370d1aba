//! The README's layout table against the tree: a newcomer finds their way
//! by it, so it names every part of `src/` and nothing that is gone.

use std::collections::BTreeSet;
use std::path::Path;

/// The paths in the first column of the table under `## Layout`.
fn layout_paths(readme: &str) -> Vec<String> {
    let section = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("the README has a Layout section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
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

#[test]
fn the_readme_layout_table_names_every_part_of_src_and_only_paths_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let named = layout_paths(&readme);

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

/// The rows of the table under `## Security`: each row's last column, as
/// (file under `tests/`, test names) pairs.
fn security_table_tests(readme: &str) -> Vec<(String, Vec<String>)> {
    let section = readme
        .split("\n## Security\n")
        .nth(1)
        .expect("the README has a Security section");
    let section = section.split("\n## ").next().unwrap();
    let mut cited = Vec::new();
    for row in section.lines().filter(|line| line.starts_with("| ")) {
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
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let cited = security_table_tests(&readme);
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
