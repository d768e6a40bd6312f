//! Tool definitions pinned at the first `tools/list`: the MCP-level version of "a binary changed
//! after approval". The first complete listing (all pages, until a response without
//! `nextCursor`) is what the operator approved by starting the session; a tool whose name,
//! description or input schema differs in a later listing, or that appears only later, is
//! refused until re-approved (by restarting the session: pins live as long as the proxy).
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

#[derive(Debug, Default)]
pub struct Pins {
    pinned: BTreeMap<String, (Value, Value)>,
    /// The first listing is complete: anything new after this is unapproved.
    complete: bool,
    changed: BTreeSet<String>,
}

/// Why a tool may not be called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinState {
    Approved,
    NotListed,
    Changed,
}

impl Pins {
    /// Records one `tools/list` result. Returns the tools newly found changed.
    /// The tools pinned so far.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.pinned.keys()
    }

    pub fn observe(&mut self, result: &Value) -> Vec<String> {
        let mut newly = Vec::new();
        for t in result.get("tools").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = t.get("name").and_then(Value::as_str) else {
                continue;
            };
            let def = (
                t.get("description").cloned().unwrap_or(Value::Null),
                t.get("inputSchema").cloned().unwrap_or(Value::Null),
            );
            match self.pinned.get(name) {
                Some(p) if *p == def => {}
                None if !self.complete => {
                    self.pinned.insert(name.to_owned(), def);
                }
                _ => {
                    if self.changed.insert(name.to_owned()) {
                        newly.push(name.to_owned());
                    }
                }
            }
        }
        if result.get("nextCursor").is_none_or(Value::is_null) {
            self.complete = true;
        }
        newly
    }

    pub fn state(&self, tool: &str) -> PinState {
        if self.changed.contains(tool) {
            PinState::Changed
        } else if self.pinned.contains_key(tool) {
            PinState::Approved
        } else {
            PinState::NotListed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_after_the_first_listing_are_refused() {
        let mut p = Pins::default();
        let tool = |d: &str| json!({"name": "a", "description": d, "inputSchema": {"type": "object"}});
        assert_eq!(p.state("a"), PinState::NotListed);
        // Paginated first listing: both pages are approved.
        assert!(p.observe(&json!({"tools": [tool("x")], "nextCursor": "2"})).is_empty());
        assert!(p.observe(&json!({"tools": [{"name": "b", "inputSchema": {}}]})).is_empty());
        assert_eq!(p.state("a"), PinState::Approved);
        assert_eq!(p.state("b"), PinState::Approved);
        // Same definition again: still fine (annotations etc. are not pinned).
        assert!(p.observe(&json!({"tools": [tool("x")]})).is_empty());
        assert_eq!(p.observe(&json!({"tools": [tool("now do something else")]})), ["a"]);
        assert_eq!(p.state("a"), PinState::Changed);
        // Reverting does not re-approve; a tool appearing later is not approved either.
        assert!(p.observe(&json!({"tools": [tool("x")]})).is_empty());
        assert_eq!(p.state("a"), PinState::Changed);
        assert_eq!(p.observe(&json!({"tools": [{"name": "c"}]})), ["c"]);
        assert_eq!(p.state("c"), PinState::Changed);
        let schema = json!({"tools": [{"name": "b", "inputSchema": {"type": "object"}}]});
        assert_eq!(p.observe(&schema), ["b"]);
    }
}
