//! The hand-written audit formatter: every line parses with each key once, and says what the
//! decoded [`Decision`] and the session/grant join say.
use mcpguard_common::{
    ACCESS_READ, ACCESS_WRITE, ACTION_AUDITED, ACTION_DENIED, ACTION_KILLED, EVENT_PATH_TRUNCATED, HOOK_EXEC,
    HOOK_OPEN, HOOK_SIGNAL, HOOK_SYSCALL, REASON_BINARY_CHANGED, REASON_NOT_GRANTED, REASON_OTHER_PROCESS,
    REASON_SIGNAL_OUTSIDE_SESSION,
};

use super::*;
use crate::{
    daemon::state::{GrantRecord, Session},
    grant::policy::Mode,
    kernel::events::Decision,
};

/// What a line must say: the join, then every field of the decoded [`Decision`] (each once).
fn check(state: &State, ev: &Event, ts: jiff::Timestamp, line: &str) {
    let v = parse_strict(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let d = Decision::from_event(ev);
    let session = state.session_by_id(d.session_id);
    let grant =
        session.and_then(|s| [s.task.as_ref(), s.base.as_ref()].into_iter().flatten().find(|g| g.id == d.grant_id));
    let mut want = serde_json::Map::new();
    want.insert("v".into(), serde_json::json!(AUDIT_FORMAT));
    want.insert("ts".into(), serde_json::json!(format!("{ts:.6}")));
    want.insert("session".into(), serde_json::json!(session.map(|s| s.name.as_str())));
    want.insert("task".into(), serde_json::json!(grant.and_then(|g| g.task.as_deref())));
    want.insert("policy".into(), serde_json::json!(grant.map(|g| g.policy.as_str())));
    want.insert("tool".into(), serde_json::json!(grant.and_then(|g| g.tool.as_deref())));
    want.insert("call_id".into(), serde_json::json!(grant.and_then(|g| g.call_id.as_deref())));
    want.insert("command".into(), serde_json::json!(session.map(|s| s.command.as_slice())));
    want.insert("environment".into(), serde_json::json!("prod"));
    want.insert("delegated_by".into(), serde_json::json!([]));
    want.insert("labels".into(), serde_json::json!(grant.map_or(&[][..], |g| g.labels.as_slice())));
    let serde_json::Value::Object(decision) = serde_json::to_value(&d).unwrap() else { unreachable!() };
    want.extend(decision);
    assert_eq!(v, want, "{line}");
}

fn grant(id: u64, task: Option<&str>, tool: Option<&str>, call_id: Option<&str>) -> GrantRecord {
    GrantRecord {
        task: task.map(Into::into),
        tool: tool.map(Into::into),
        call_id: call_id.map(Into::into),
        ..GrantRecord::test(id, "pol \"q\"\n", Mode::Kill)
    }
}

fn state() -> State {
    let mut st = State::default();
    st.insert_session(Session {
        write_ceiling: None,
        name: "s\u{e9}ss\\1".into(),
        id: 7,
        root_pid: 1,
        command: vec!["/bin/srv".into(), "--x=\"\t\u{1}\"".into()],
        uid: 0,
        created_unix: 0,
        cgroup: None,
        sealed: true,
        base: Some(grant(70, None, None, None)),
        task: Some(grant(71, Some("T-1"), Some("read_file"), Some("42"))),
        orchestrator: None,
        binary_sha256: None,
        parent: None,
        ended: crate::daemon::state::Ended::default(),
    });
    st
}

fn event(session: u64, grant: u64, hook: u32, action: u32, reason: u32, access: u32, path: &[&[u8]]) -> Event {
    // SAFETY: Event is plain old data; all-zero is valid.
    let mut ev: Event = unsafe { std::mem::zeroed() };
    (ev.ts_ns, ev.session, ev.grant, ev.pid, ev.tgid, ev.dev, ev.ino) =
        (123_456_789_012, session, grant, 10, 9, 0x80_0001, 77);
    (ev.hook, ev.action, ev.reason, ev.access) = (hook, action, reason, access);
    ev.comm[..7].copy_from_slice(b"c\"o\\m\xffm");
    for (i, c) in path.iter().enumerate() {
        ev.path[i][..c.len()].copy_from_slice(c);
    }
    ev.path_depth = path.len() as u32;
    ev
}

#[test]
fn formatter_matches_serde_reference() {
    let st = state();
    let cases = [
        event(7, 71, HOOK_OPEN, ACTION_AUDITED, REASON_NOT_GRANTED, ACCESS_READ, &[b"data", b"denied", b"tmp", b"/"]),
        event(
            7,
            70,
            HOOK_OPEN,
            ACTION_KILLED,
            REASON_NOT_GRANTED,
            ACCESS_READ | ACCESS_WRITE,
            &[b"a\"b\n\x7f\xfe", b"/"],
        ),
        event(7, 99, HOOK_EXEC, ACTION_KILLED, REASON_BINARY_CHANGED, 0, &[b"/"]),
        event(8, 0, HOOK_SYSCALL, ACTION_KILLED, REASON_NOT_GRANTED, 321, &[]),
        event(8, 0, HOOK_OPEN, ACTION_AUDITED, REASON_NOT_GRANTED, ACCESS_WRITE, &[b"x", b"/", b"mnt", b"/"]),
        event(
            7,
            71,
            HOOK_OPEN,
            ACTION_KILLED,
            REASON_OTHER_PROCESS,
            ACCESS_READ,
            &[b"environ", b"4242", b"/", b"proc", b"/"],
        ),
        event(7, 71, HOOK_SIGNAL, ACTION_DENIED, REASON_SIGNAL_OUTSIDE_SESSION, 15, &[]),
    ];
    let mut out = Vec::new();
    let mut scratch = String::new();
    for (i, ev) in cases.iter().enumerate() {
        let ts = jiff::Timestamp::new(1_700_000_000 + i as i64, 123_456_789).unwrap();
        let mut truncated = *ev;
        truncated.path_depth |= EVENT_PATH_TRUNCATED;
        for ev in [ev, &truncated] {
            out.clear();
            format_event(&mut out, &mut scratch, &st, ev, ts, Some("prod"));
            check(&st, ev, ts, std::str::from_utf8(&out).unwrap());
        }
    }
    // The fields the README documents, with the values of the join.
    out.clear();
    format_event(
        &mut out,
        &mut scratch,
        &st,
        &cases[0],
        jiff::Timestamp::new(1_764_672_063, 120_000_000).unwrap(),
        Some("prod"),
    );
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    // RFC 3339, UTC, always six fractional digits (format 3).
    assert_eq!((v["v"].as_u64(), v["ts"].as_str()), (Some(3), Some("2025-12-02T10:41:03.120000Z")));
    assert_eq!(v["session"], "s\u{e9}ss\\1");
    assert_eq!(
        (v["task"].as_str(), v["tool"].as_str(), v["call_id"].as_str()),
        (Some("T-1"), Some("read_file"), Some("42"))
    );
    assert_eq!(
        (v["path"].as_str(), v["access"].as_str(), v["action"].as_str()),
        (Some("/tmp/denied/data"), Some("r"), Some("audited"))
    );
    // A signal names its target and signal (the kernel carries them in `ino` and `access`).
    out.clear();
    format_event(&mut out, &mut scratch, &st, &cases[6], jiff::Timestamp::UNIX_EPOCH, Some("prod"));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((v["hook"].as_str(), v["reason"].as_str()), (Some("signal"), Some("signal_outside_session")));
    assert_eq!((v["signal"].as_u64(), v["target_pid"].as_u64(), v["ino"].as_u64()), (Some(15), Some(77), Some(0)));
    assert_eq!((v["access"].as_str(), v.get("syscall")), (Some(""), None));
    out.clear();
    format_event(&mut out, &mut scratch, &st, &cases[5], jiff::Timestamp::UNIX_EPOCH, Some("prod"));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!((v["path"].as_str(), v["reason"].as_str()), (Some("/proc/4242/environ"), Some("other_process")));
    assert_eq!(v.get("signal"), None);
}

#[test]
fn sink_batches_lines_until_flushed() {
    let dir = std::env::temp_dir().join(format!("mcpg-audit-test-{}", std::process::id()));
    let path = dir.join("audit.jsonl");
    let mut sink = Sink::open(path.to_str().unwrap()).unwrap();
    assert_eq!(sink.push(|b| b.extend_from_slice(b"{\"a\":1}")), b"{\"a\":1}");
    sink.push(|b| b.extend_from_slice(b"{\"b\":2}"));
    assert_eq!(std::fs::read(&path).unwrap(), b"");
    assert_eq!(sink.pending(), 16);
    sink.flush().unwrap();
    assert_eq!(sink.pending(), 0);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"b\":2}\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clock_maps_boot_time_to_unix_time() {
    let c = Clock::now();
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap();
    let boot_ns = boot.tv_sec() as u64 * 1_000_000_000 + boot.tv_nsec() as u64;
    let d = c.at(boot_ns).duration_until(jiff::Timestamp::now());
    assert!(d.abs() < jiff::SignedDuration::from_millis(500), "{d:?}");
}

#[test]
fn duplicate_keys_are_refused_by_the_strict_parser() {
    assert!(parse_strict(r#"{"a":1,"b":2}"#).is_ok());
    assert!(parse_strict(r#"{"a":1,"a":2}"#).unwrap_err().contains("duplicate key `a`"));
    assert!(parse_strict("[1]").is_err());
}

#[test]
fn an_event_drained_after_its_grant_ended_still_names_it() {
    let mut st = state();
    let ev = event(7, 99, HOOK_OPEN, ACTION_KILLED, REASON_NOT_GRANTED, ACCESS_READ, &[b"x", b"/"]);
    let s = st.session_mut("s\u{e9}ss\\1").unwrap();
    s.ended.push(&grant(99, Some("call:5"), Some("read_text_file"), Some("5")));
    let (mut out, mut scratch) = (Vec::new(), String::new());
    format_event(&mut out, &mut scratch, &st, &ev, jiff::Timestamp::UNIX_EPOCH, None);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (v["task"].as_str(), v["tool"].as_str(), v["call_id"].as_str()),
        (Some("call:5"), Some("read_text_file"), Some("5"))
    );
    // Bounded: the oldest ended grants go.
    let s = st.session_mut("s\u{e9}ss\\1").unwrap();
    for id in 100..(100 + crate::daemon::state::Ended::KEEP as u64) {
        s.ended.push(&grant(id, None, None, None));
    }
    assert!(s.ended.find(99).is_none());
}
