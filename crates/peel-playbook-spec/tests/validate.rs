//! Every broken playbook in tests/data/invalid has its exact expected diagnostics (locations,
//! expectations, suggestions) next to it in a `.expected` file; every playbook in tests/data/valid
//! and the shipped ones in playbooks/ resolve cleanly.
//!
//! Set `PEEL_BLESS=1` to rewrite the `.expected` files after a reviewed change of wording.

use std::path::{Path, PathBuf};

fn data(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().to_path_buf()
}

#[test]
fn broken_playbooks_give_their_exact_errors() {
    let files = data("invalid");
    assert!(files.len() >= 10, "the broken-playbook set shrank");
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let err = peel_playbook_spec::resolve(&relative(&file), &text, &[])
            .expect_err(&file.display().to_string());
        let got = format!("{err}\n");
        let expected_path = file.with_extension("expected");
        if std::env::var_os("PEEL_BLESS").is_some() {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!("{}:\n--- expected\n{expected}--- got\n{got}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_set_names_are_refused_with_a_suggestion() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/valid/loopback.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let err = peel_playbook_spec::resolve(
        Path::new("loopback.toml"),
        &text,
        &[("prot".into(), "1".into())],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "--set:1:1: --set prot: the playbook declares no variable 'prot' (expected one of port, sleep)\n  help: did you mean 'port'?"
    );
}

#[test]
fn valid_and_shipped_playbooks_resolve() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../playbooks");
    let mut files = data("valid");
    if let Ok(entries) = std::fs::read_dir(&shipped) {
        files.extend(
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml")),
        );
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        if let Err(err) = peel_playbook_spec::resolve(&file, &text, &[]) {
            panic!("{}:\n{err}", file.display());
        }
    }
}

#[test]
fn shipped_json_schema_matches_the_validator() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/playbook.schema.json");
    let generated =
        serde_json::to_string_pretty(&peel_playbook_spec::spec::json_schema()).unwrap() + "\n";
    if std::env::var_os("PEEL_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(shipped == generated, "docs/playbook.schema.json is stale: run with PEEL_BLESS=1");
}
