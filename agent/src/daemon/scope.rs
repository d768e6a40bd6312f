//! Where a grant may be issued (issue 15): the daemon's environment against the policy's
//! `environments`, and the daemon's path labels (`[labels] prod-data = ["/srv/prod"]`) against
//! the policy's `labels`. An agent configuration approved against sandbox data cannot be
//! pointed at production data, or issued on a production daemon, without a new decision.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::{
    daemon::protocol::{ErrorCode, ProtoError},
    grant::policy::{GrantSpec, is_under},
};

/// Refuses `spec` on a daemon of another environment (`wrong_environment`), and when it names a
/// labelled path, or a parent of one, whose label its policy does not declare
/// (`label_not_declared`). Both errors name what was compared.
pub fn check(
    environment: Option<&str>,
    labels: &BTreeMap<String, Vec<PathBuf>>,
    spec: &GrantSpec,
) -> Result<(), ProtoError> {
    if !spec.environments.is_empty() && !environment.is_some_and(|e| spec.environments.iter().any(|x| x == e)) {
        return Err(ProtoError::new(
            ErrorCode::WrongEnvironment,
            format!(
                "policy `{}` is for the environments [{}]; this daemon's environment is {}",
                spec.policy_name,
                spec.environments.join(", "),
                environment.map_or_else(|| "not set (`environment` in its config)".to_string(), |e| format!("`{e}`"))
            ),
        ));
    }
    let named = spec
        .exec
        .iter()
        .map(|e| e.path.as_path())
        .chain(spec.read.iter().chain(&spec.write).chain(&spec.metadata).map(PathBuf::as_path));
    for p in named {
        for (label, roots) in labels {
            if spec.labels.contains(label) {
                continue;
            }
            if let Some(root) = roots.iter().find(|r| touches(p, r)) {
                return Err(ProtoError::new(
                    ErrorCode::LabelNotDeclared,
                    format!(
                        "the grant names `{}`, which {} `{}`, labelled `{label}` on this daemon; policy `{}` does not declare `labels = [\"{label}\"]`",
                        p.display(),
                        if is_under(p, root) { "is under" } else { "contains" },
                        root.display(),
                        spec.policy_name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The labels `spec`'s paths fall under (audit and token).
#[must_use]
pub fn labels_named(labels: &BTreeMap<String, Vec<PathBuf>>, spec: &GrantSpec) -> Vec<String> {
    let paths: Vec<&Path> = spec.read.iter().chain(&spec.write).chain(&spec.metadata).map(PathBuf::as_path).collect();
    labels
        .iter()
        .filter(|(_, roots)| roots.iter().any(|r| paths.iter().any(|p| touches(p, r))))
        .map(|(l, _)| l.clone())
        .collect()
}

/// `p` is `root`, lies below it, or contains it. Compared lexically and, where both exist,
/// by their resolved paths (a symlink to the labelled tree is the labelled tree).
fn touches(p: &Path, root: &Path) -> bool {
    let lexical = |a: &Path, b: &Path| is_under(a, b) || is_under(b, a);
    lexical(p, root)
        || match (std::fs::canonicalize(p), std::fs::canonicalize(root)) {
            (Ok(a), Ok(b)) => lexical(&a, &b),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::policy::Mode;

    fn spec(read: &[&str], envs: &[&str], labels: &[&str]) -> GrantSpec {
        GrantSpec {
            policy_name: "p".into(),
            environments: envs.iter().map(|s| (*s).to_string()).collect(),
            labels: labels.iter().map(|s| (*s).to_string()).collect(),
            ..GrantSpec::inline(Vec::new(), read.iter().map(PathBuf::from).collect(), Vec::new(), Mode::Deny, None)
                .unwrap()
        }
    }

    #[test]
    fn environments_must_match() {
        let none = BTreeMap::new();
        assert!(check(Some("prod"), &none, &spec(&["/x"], &[], &[])).is_ok(), "no restriction");
        let e = check(Some("prod"), &none, &spec(&["/x"], &["sandbox", "dev"], &[])).unwrap_err();
        assert_eq!(e.code, ErrorCode::WrongEnvironment);
        assert!(e.message.contains("[sandbox, dev]") && e.message.contains("`prod`"), "{}", e.message);
        assert!(check(Some("dev"), &none, &spec(&["/x"], &["sandbox", "dev"], &[])).is_ok());
        assert!(check(None, &none, &spec(&["/x"], &["dev"], &[])).unwrap_err().message.contains("not set"));
    }

    #[test]
    fn labelled_paths_need_the_label() {
        let labels = BTreeMap::from([("prod-data".to_string(), vec![PathBuf::from("/srv/prod")])]);
        for p in ["/srv/prod", "/srv/prod/db", "/srv"] {
            let e = check(None, &labels, &spec(&[p], &[], &[])).unwrap_err();
            assert_eq!(e.code, ErrorCode::LabelNotDeclared, "{p}");
            assert!(e.message.contains("prod-data") && e.message.contains(p), "{}", e.message);
        }
        assert!(check(None, &labels, &spec(&["/srv/prod2", "/srv/other"], &[], &[])).is_ok());
        assert!(check(None, &labels, &spec(&["/srv/prod/db"], &[], &["prod-data"])).is_ok());
        assert_eq!(labels_named(&labels, &spec(&["/srv/prod/db", "/etc"], &[], &["prod-data"])), ["prod-data"]);
    }
}
