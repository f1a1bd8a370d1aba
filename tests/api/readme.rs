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
