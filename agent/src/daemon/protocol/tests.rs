//! Protocol parsing and validation: every operation round-trips; bad input names its problem.
use super::*;
use serde_json::json;

fn parse_str(s: &str) -> Result<Request, ProtoError> {
    parse_request(s.as_bytes())
}

fn grant(policy: Option<&str>, inline: Option<InlineGrant>) -> Grant {
    Grant {
        session: "s1".into(),
        task: "t1".into(),
        policy: policy.map(Into::into),
        inline,
        vars: BTreeMap::new(),
        ttl: None,
        mode: None,
        tool: None,
        call_id: None,
    }
}

#[test]
fn every_op_round_trips() {
    let mut full = grant(Some("git"), None);
    full.vars.insert("repo".into(), "/srv/r".into());
    full.ttl = Some("10m".into());
    full.mode = Some(Mode::Kill);
    full.tool = Some("git_status".into());
    full.call_id = Some("call-1".into());
    let inline = InlineGrant {
        exec: vec![ExecRule { path: "/usr/bin/git".into(), sha256: Some("a".repeat(64)), ..Default::default() }],
        read: vec!["/srv/r".into()],
        write: vec!["/tmp/x".into()],
        metadata: vec!["/tmp/x".into()],
        connect: vec!["tcp://127.0.0.1:80".into()],
        listen: vec!["tcp://127.0.0.1:81".into()],
    };
    let ops = vec![
        Op::Register(Register {
            session: "s1".into(),
            pid: 42,
            command: vec!["uvx".into(), "mcp-server-git".into()],
            baseline: Some("baseline-python".into()),
            vars: BTreeMap::from([("python_prefix".into(), "/opt/py".into())]),
            cgroup: true,
            sealed: false,
            write_ceiling: Some(vec!["/srv/r".into()]),
            signal_notifier: None,
            parent: Some("p1".into()),
        }),
        Op::Grant(full),
        Op::Grant(grant(None, Some(inline))),
        Op::Revoke(Revoke { session: "s1".into(), task: Some("t1".into()) }),
        Op::Revoke(Revoke { session: "s1".into(), task: None }),
        Op::Status {},
        Op::List {},
        Op::Subscribe(Subscribe::default()),
        Op::Subscribe(Subscribe {
            backlog: 20,
            follow: false,
            session: Some("s1".into()),
            reason: Some("not_granted".into()),
            since: Some("2026-12-02T10:00:00Z".into()),
        }),
        Op::Unregister(Unregister { session: "s1".into() }),
    ];
    for (i, op) in ops.into_iter().enumerate() {
        for id in [None, Some(i as u64)] {
            let req = Request::new(id, op.clone());
            let line = req.to_line();
            assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
            assert_eq!(parse_request(line.as_bytes()).unwrap(), req, "{line}");
        }
    }
}

#[test]
fn wire_format() {
    let r = parse_str(r#"{"v":1,"id":3,"op":"register","session":"s","pid":7,"command":["x"]}"#).unwrap();
    assert_eq!(r.id, Some(3));
    let Op::Register(reg) = r.op else { panic!() };
    assert!(reg.vars.is_empty() && !reg.cgroup && reg.baseline.is_none());
    assert_eq!(parse_str("{\"v\":1,\"op\":\"status\"}\r\n").unwrap().op, Op::Status {});
    let v = Request::new(Some(1), Op::List {}).to_value();
    assert_eq!(v, json!({"v":1,"id":1,"op":"list"}));
}

fn expect(s: &[u8], code: ErrorCode, needle: &str) -> ProtoError {
    let e = parse_request(s).unwrap_err();
    assert_eq!(e.code, code, "{e}");
    assert!(e.message.contains(needle), "{needle:?} not in {:?}", e.message);
    e
}

#[test]
fn unknown_fields_rejected_at_every_level() {
    let e = expect(br#"{"v":1,"id":9,"op":"status","bogus":1}"#, ErrorCode::UnknownField, "`bogus`");
    assert_eq!(e.id, Some(9));
    expect(br#"{"v":1,"op":"unregister","session":"s","sesion":"x"}"#, ErrorCode::UnknownField, "`sesion`");
    expect(
        br#"{"v":1,"op":"grant","session":"s","task":"t","policy":"git","polcy":"x"}"#,
        ErrorCode::UnknownField,
        "`polcy`",
    );
    expect(
        br#"{"v":1,"op":"grant","session":"s","task":"t","inline":{"reed":["/a"]}}"#,
        ErrorCode::UnknownField,
        "`reed`",
    );
    expect(
        br#"{"v":1,"op":"grant","session":"s","task":"t","inline":{"exec":[{"path":"/bin/x","sha":"1"}]}}"#,
        ErrorCode::UnknownField,
        "`sha`",
    );
}

#[test]
fn envelope_errors() {
    expect(br#"{"v":1,"session":"s"}"#, ErrorCode::BadRequest, "missing field `op`");
    expect(br#"{"v":1,"op":"frobnicate"}"#, ErrorCode::BadRequest, "frobnicate");
    expect(br#"{"v":1,"op":"unregister"}"#, ErrorCode::BadRequest, "missing field `session`");
    expect(
        br#"{"v":1,"op":"register","session":"s","pid":"x","command":["a"]}"#,
        ErrorCode::BadRequest,
        "invalid type",
    );
    let e = expect(br#"{"v":2,"id":4,"op":"status"}"#, ErrorCode::UnsupportedVersion, "version 2");
    assert_eq!(e.id, Some(4));
    expect(br#"{"op":"status"}"#, ErrorCode::UnsupportedVersion, "`v`");
    expect(br#"{"v":"1","op":"status"}"#, ErrorCode::UnsupportedVersion, "\"1\"");
    expect(br#"{"v":1,"id":-1,"op":"status"}"#, ErrorCode::BadRequest, "`id`");
    expect(br#"{"v":1,"op":"status""#, ErrorCode::BadJson, "malformed JSON");
    expect(b"", ErrorCode::BadJson, "malformed JSON");
    expect(b"[1]", ErrorCode::BadRequest, "JSON object");
    expect(b"{\"v\":1,\"op\":\"st\xffatus\"}", ErrorCode::BadJson, "UTF-8");
    let mut big = br#"{"v":1,"op":"status","pad":""#.to_vec();
    big.resize(MAX_LINE + 1, b'a');
    expect(&big, ErrorCode::TooLarge, "limit");
}

#[test]
fn grant_validation() {
    let both = Op::Grant(grant(Some("git"), Some(InlineGrant::default())));
    let line = Request::new(None, both).to_line();
    expect(line.as_bytes(), ErrorCode::BadRequest, "mutually exclusive");
    let neither = Request::new(None, Op::Grant(grant(None, None))).to_line();
    expect(neither.as_bytes(), ErrorCode::BadRequest, "required");
    let mut g = grant(Some("git"), None);
    g.ttl = Some("10".into());
    let line = Request::new(None, Op::Grant(g)).to_line();
    expect(line.as_bytes(), ErrorCode::BadDuration, "`10`");
    expect(br#"{"v":1,"op":"revoke","session":"a b"}"#, ErrorCode::BadRequest, "`session`");
    expect(br#"{"v":1,"op":"register","session":"s","pid":0,"command":["a"]}"#, ErrorCode::BadRequest, "`pid`");
    let mut g = grant(Some("git"), None);
    g.ttl = Some("1h30m".into());
    assert_eq!(g.ttl().unwrap(), Some(std::time::Duration::from_secs(5400)));
}

#[test]
fn responses() {
    let ok = Response::ok(Some(5), json!({"sessions": 2, "ok": "ignored"}));
    assert_eq!(ok.to_line(), "{\"v\":1,\"id\":5,\"ok\":true,\"sessions\":2}\n");
    assert_eq!(Response::ok(None, Value::Null).to_line(), "{\"v\":1,\"id\":null,\"ok\":true}\n");
    assert_eq!(Response::ok(None, json!([1])).to_line(), "{\"v\":1,\"id\":null,\"ok\":true,\"data\":[1]}\n");
    let err = Response::err(Some(1), ErrorCode::UnknownSession, "no session `s`");
    assert_eq!(
        err.to_line(),
        "{\"v\":1,\"id\":1,\"ok\":false,\"error\":{\"code\":\"unknown_session\",\"message\":\"no session `s`\"}}\n"
    );
    for r in [ok, err] {
        assert_eq!(Response::parse(r.to_line().as_bytes()).unwrap(), r);
    }
    let pe = parse_request(b"{}").unwrap_err().to_response();
    assert_eq!(pe.result.unwrap_err().code, ErrorCode::UnsupportedVersion);
    assert_eq!(serde_json::to_value(ErrorCode::TtlTooLong).unwrap(), json!("ttl_too_long"));
    assert_eq!(ErrorCode::KernelError.to_string(), "kernel_error");
}

#[test]
fn subscribe_defaults_to_the_v1_stream_and_checks_its_filters() {
    let r = parse_str(r#"{"v":1,"op":"subscribe"}"#).unwrap();
    assert_eq!(r.op, Op::Subscribe(Subscribe::default()));
    expect(br#"{"v":1,"op":"subscribe","backlog":1001}"#, ErrorCode::BadRequest, "over 1000");
    expect(br#"{"v":1,"op":"subscribe","reason":"nope"}"#, ErrorCode::BadRequest, "not_granted, binary_changed");
    expect(br#"{"v":1,"op":"subscribe","since":"yesterday"}"#, ErrorCode::BadRequest, "not an RFC 3339");
    expect(br#"{"v":1,"op":"subscribe","session":"a b"}"#, ErrorCode::BadRequest, "invalid `session`");
    expect(br#"{"v":1,"op":"subscribe","folow":true}"#, ErrorCode::UnknownField, "`folow`");
}
