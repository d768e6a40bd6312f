//! The shipped policies (`policies/*.toml`), built into the binary: `--baseline baseline-minimal`
//! or `--policy git` work on a host with no policy directory at all. A file of the same name in
//! a configured policy directory wins (`resolve_policy` looks there first), so an operator can
//! override or narrow a shipped policy without rebuilding.

macro_rules! builtin {
    ($name:literal) => {
        ($name, include_str!(concat!("../../../policies/", $name, ".toml")))
    };
}

/// `(name, TOML text)` of every shipped policy; a unit test keeps it equal to `policies/`.
pub const BUILTIN: &[(&str, &str)] = &[
    builtin!("baseline-minimal"),
    builtin!("baseline-node"),
    builtin!("baseline-python"),
    builtin!("fetch"),
    builtin!("filesystem-rw"),
    builtin!("filesystem"),
    builtin!("git"),
    builtin!("learn-audit"),
    builtin!("mcp-baseline-git"),
    builtin!("mcp-baseline-node"),
    builtin!("mcp-baseline-python"),
    builtin!("mcp-fetch-url"),
    builtin!("mcp-fs-none"),
    builtin!("mcp-fs-read"),
    builtin!("mcp-git-add"),
    builtin!("mcp-git-branch"),
    builtin!("mcp-git-checkout"),
    builtin!("mcp-git-commit"),
    builtin!("mcp-git-create-branch"),
    builtin!("mcp-git-diff-staged"),
    builtin!("mcp-git-diff-unstaged"),
    builtin!("mcp-git-diff"),
    builtin!("mcp-git-log"),
    builtin!("mcp-git-repo-write"),
    builtin!("mcp-git-repo"),
    builtin!("mcp-git-reset"),
    builtin!("mcp-git-show"),
    builtin!("mcp-git-status"),
];

/// The shipped policy called `name`, if there is one.
#[must_use]
pub fn get(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// How a built-in policy is named where a file path would be (`resolve_policy`'s answer, logs).
#[must_use]
pub fn origin(name: &str) -> String {
    format!("builtin:{name}")
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path};

    #[test]
    fn every_shipped_policy_is_built_in_and_nothing_else() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| p.file_stem().unwrap().to_str().unwrap().to_string())
            .collect();
        let built_in: BTreeSet<String> = super::BUILTIN.iter().map(|(n, _)| (*n).to_string()).collect();
        assert_eq!(on_disk, built_in, "grant/builtin.rs BUILTIN must list exactly policies/*.toml");
        for (name, text) in super::BUILTIN {
            let p = crate::grant::policy::Policy::parse(text, &super::origin(name)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.name, *name);
        }
    }
}
