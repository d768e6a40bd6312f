//! The little of JSON-RPC 2.0 the proxy needs to look at (it forwards messages unchanged).
use serde_json::{Value, json};

/// Implementation-defined server error codes (JSON-RPC reserves -32000..-32099 for them).
/// The call was refused by mcpguard before reaching the server (`data.reason` says why).
pub const REFUSED: i64 = -32010;
/// The server died (e.g. killed by the kill backend) before answering.
pub const SERVER_DIED: i64 = -32011;
/// The call outlived its grant's TTL (the code MCP SDKs use for request timeouts).
pub const TIMEOUT: i64 = -32001;
pub const INVALID_REQUEST: i64 = -32600;

pub fn method(m: &Value) -> Option<&str> {
    m.get("method").and_then(Value::as_str)
}

/// A request carries a method and an id (a notification has no id).
pub fn is_request(m: &Value) -> bool {
    method(m).is_some() && m.get("id").is_some_and(|i| !i.is_null())
}

pub fn is_response(m: &Value) -> bool {
    method(m).is_none() && m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
}

/// A map key for an id: `1` and `"1"` are different ids.
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

/// The daemon task name for a call: `call:<id>` with characters outside the task alphabet
/// replaced (the exact id goes into the grant's `call_id`).
pub fn task_name(id: &Value) -> String {
    let raw = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
    let clean: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.:@".contains(c) { c } else { '_' }).take(120).collect();
    format!("call:{clean}")
}

pub fn error_line(id: &Value, code: i64, message: &str, data: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message, "data": {"mcpguard": data}}})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_names() {
        let req = json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{}});
        let note = json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}});
        let resp = json!({"jsonrpc":"2.0","id":3,"result":{}});
        let err = json!({"jsonrpc":"2.0","id":"a","error":{"code":-1,"message":"x"}});
        assert!(is_request(&req) && !is_request(&note) && !is_request(&resp));
        assert!(is_response(&resp) && is_response(&err) && !is_response(&req) && !is_response(&note));
        assert_ne!(id_key(&json!(1)), id_key(&json!("1")));
        assert_eq!(task_name(&json!(7)), "call:7");
        assert_eq!(task_name(&json!("a b/c")), "call:a_b_c");
        let line = error_line(&json!(7), REFUSED, "no", json!({"reason": "no_template"}));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["error"]["data"]["mcpguard"]["reason"], "no_template");
        assert_eq!(v["id"], 7);
    }
}
