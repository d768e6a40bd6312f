//! The operations of `mcpguard learn` (`daemon::learn`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `learn_start`: record what the session of this name does (before it is registered; see
/// `daemon::learn`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnStart {
    pub session: String,
    /// The learner's `--var`s, handed back with the observations (so that `learn --finish`
    /// from elsewhere proposes with them too).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, String>,
}

/// `learn_fetch`: what a learning session gathered (`grant::learn::observations::Run`); with
/// `finish`, its learning ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnFetch {
    pub session: String,
    #[serde(default)]
    pub finish: bool,
}

/// `learn_call`: the MCP proxy of a learning session names a call's arguments (the kernel's
/// events carry the call's id; the arguments say which paths the call was about).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnCall {
    pub session: String,
    pub call_id: String,
    pub tool: String,
    #[serde(default)]
    pub arguments: Value,
}

#[cfg(test)]
mod tests {
    use crate::daemon::protocol::{ErrorCode, Op, parse_request};

    #[test]
    fn learn_ops_parse_and_bad_ones_are_named() {
        let r = parse_request(br#"{"v":1,"op":"learn_start","session":"s1","vars":{"p":"/x"}}"#).unwrap();
        assert!(matches!(r.op, Op::LearnStart(ref l) if l.vars["p"] == "/x"));
        let r = parse_request(br#"{"v":1,"op":"learn_fetch","session":"s1","finish":true}"#).unwrap();
        assert!(matches!(r.op, Op::LearnFetch(ref f) if f.finish));
        let r =
            parse_request(br#"{"v":1,"op":"learn_call","session":"s1","call_id":"7","tool":"t","arguments":{"a":1}}"#)
                .unwrap();
        assert_eq!(r.op.name(), "learn_call");
        let e = parse_request(br#"{"v":1,"op":"learn_fetch","session":"s1","bogus":1}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownField, "{e}");
        let e = parse_request(br#"{"v":1,"op":"learn_start","session":"a b"}"#).unwrap_err();
        assert!(e.message.contains("invalid `session`"), "{e}");
        let e = parse_request(br#"{"v":1,"op":"learn_call","session":"s","call_id":"","tool":"t"}"#).unwrap_err();
        assert!(e.message.contains("`call_id`"), "{e}");
    }
}
