//! Every state against every operation: what the session runs under afterwards.
use super::*;
use crate::grant::policy::Mode;

fn rec(id: u64, task: &str, call: bool) -> GrantRecord {
    GrantRecord {
        task: Some(task.into()),
        tool: call.then(|| "tool".into()),
        call_id: call.then(|| format!("c{id}")),
        ..GrantRecord::test(id, &format!("p{id}"), Mode::Deny)
    }
}

/// The four states: baseline; task t1 (id 1); call c2 (id 2, task t2); call c3 (id 3, task
/// t3) inside task t1 (id 1).
fn states() -> [(&'static str, Grants); 4] {
    [
        ("baseline", Grants::Baseline),
        ("task", Grants::Task(rec(1, "t1", false))),
        ("call", Grants::Call(rec(2, "t2", true))),
        ("call_in_task", Grants::CallInTask { call: rec(3, "t3", true), task: rec(1, "t1", false) }),
    ]
}

/// Short names of states for the tables: B, T(id), C(id), CT(call id, task id).
fn name(g: &Grants) -> String {
    match g {
        Grants::Baseline => "B".into(),
        Grants::Task(r) => format!("T{}", r.id),
        Grants::Call(r) => format!("C{}", r.id),
        Grants::CallInTask { call, task } => format!("CT{}/{}", call.id, task.id),
    }
}

#[test]
fn slots_round_trip_for_every_state() {
    for (label, g) in states() {
        let (task, orchestrator) = g.clone().into_slots();
        let s = Session {
            name: "s".into(),
            id: 9,
            root_pid: 1,
            command: Vec::new(),
            uid: 0,
            created_unix: 0,
            cgroup: None,
            sealed: false,
            write_ceiling: None,
            base: Some(rec(8, "base", false)),
            task,
            orchestrator,
            binary_sha256: None,
            parent: None,
            ended: crate::daemon::state::Ended::default(),
        };
        assert_eq!(Grants::of(&s), g, "{label}");
        assert_eq!(Grants::ids_of(&s), g.ids(), "{label}");
        assert_eq!(
            kernel_state(&s).task_grant,
            g.ids().first().copied().unwrap_or(0),
            "{label}: the kernel runs the record in force"
        );
    }
}

#[test]
fn a_task_grant_replaces_the_task_and_narrows_a_call_in_force() {
    // New task grant id 10; with a call in force the daemon prepared the narrowed call id 11.
    let want = [("baseline", "T10"), ("task", "T10"), ("call", "CT11/10"), ("call_in_task", "CT11/10")];
    for ((label, cur), (l2, expect)) in states().into_iter().zip(want) {
        assert_eq!(label, l2);
        let narrowed = cur.call_in_force().map(|c| GrantRecord { id: 11, ..c.clone() });
        let next = after_task_grant(&cur, rec(10, "t10", false), narrowed);
        assert_eq!(name(&next), expect, "{label}");
        if let Grants::CallInTask { call, .. } = &next {
            assert_eq!(call.call_id, cur.call_in_force().unwrap().call_id, "{label}: the same call continues");
        }
    }
}

#[test]
fn a_call_grant_runs_inside_the_task_if_there_is_one() {
    let want = [("baseline", "C20"), ("task", "CT20/1"), ("call", "C20"), ("call_in_task", "CT20/1")];
    for ((label, cur), (l2, expect)) in states().into_iter().zip(want) {
        assert_eq!(label, l2);
        assert_eq!(name(&after_call_grant(&cur, rec(20, "t20", true))), expect, "{label}");
    }
}

#[test]
fn revocations_for_every_state_and_task_name() {
    use RevokeError::{NoGrantForTask, NoTaskGrant};
    let e = |t: &str| Err(NoGrantForTask(t.into()));
    // (state, revoked task) -> next state or error
    let table: [(&str, Option<&str>, Result<&str, RevokeError>); 16] = [
        ("baseline", None, Err(NoTaskGrant)),
        ("baseline", Some("t1"), e("t1")),
        ("baseline", Some("t3"), e("t3")),
        ("baseline", Some("x"), e("x")),
        ("task", None, Ok("B")),
        ("task", Some("t1"), Ok("B")),
        ("task", Some("t3"), e("t3")),
        ("task", Some("x"), e("x")),
        ("call", None, Ok("B")),
        ("call", Some("t2"), Ok("B")),
        ("call", Some("t1"), e("t1")),
        ("call", Some("x"), e("x")),
        ("call_in_task", None, Ok("B")),
        // Ending the call puts the task grant held aside back in force.
        ("call_in_task", Some("t3"), Ok("T1")),
        // Ending the task ends the call inside it.
        ("call_in_task", Some("t1"), Ok("B")),
        ("call_in_task", Some("x"), e("x")),
    ];
    for (label, task, expect) in table {
        let cur = states().into_iter().find(|(l, _)| *l == label).unwrap().1;
        let got = after_revoke(&cur, task).map(|g| name(&g));
        assert_eq!(got, expect.map(str::to_owned), "{label} revoke {task:?}");
    }
}

#[test]
fn what_a_new_grant_composes_with() {
    let [(_, b), (_, t), (_, c), (_, ct)] = states();
    assert_eq!(
        [&b, &t, &c, &ct].map(|g| g.task_around_calls().map(|r| r.id)),
        [None, Some(1), None, Some(1)],
        "a call composes with the task in force or held aside"
    );
    assert_eq!([&b, &t, &c, &ct].map(|g| g.call_in_force().map(|r| r.id)), [None, None, Some(2), Some(3)]);
}
