use super::*;

fn sample(enforce: Verdict) -> Report {
    let mut checks = vec![
        Check::ok("kernel", "6.18.0 (x86_64)"),
        Check::bad("backend.lsm", Verdict::No, "refused", "boot another kernel"),
        Check::ok("backend.kill", "loaded and attached"),
        Check::ok("backend", "kill"),
    ];
    checks.push(Check { check: "enforce".into(), verdict: enforce, detail: "probe".into(), fix: None });
    Report {
        checks,
        backend: Some(Backend::Kill),
        channels: vec![
            ("exec".into(), "kill".into()),
            ("connect".into(), "eperm".into()),
            ("signal".into(), "none".into()),
            ("open".into(), "kill".into()),
        ],
    }
}

#[test]
fn lsm_param_appends_bpf_to_the_current_list() {
    assert_eq!(
        lsm_param_with("lockdown,capability,landlock\n", "bpf").unwrap(),
        "lsm=lockdown,capability,landlock,bpf"
    );
    assert_eq!(lsm_param_with("capability,bpf", "bpf"), None);
    assert_eq!(lsm_param_with("", "bpf").unwrap(), "lsm=bpf");
    assert_eq!(lsm_param_with("capability,,yama,", "landlock").unwrap(), "lsm=capability,yama,landlock");
    // `bpf` as a substring of another name is not `bpf`.
    assert_eq!(lsm_param_with("bpfx", "bpf").unwrap(), "lsm=bpfx,bpf");
    assert!(lsm_fix("capability", "bpf").unwrap().contains("`lsm=capability,bpf`"));
}

#[test]
fn exit_status_needs_a_backend_and_a_stopped_probe() {
    assert_eq!(exit_status(&sample(Verdict::Ok)), 0);
    assert_eq!(exit_status(&sample(Verdict::No)), 1);
    let mut none = sample(Verdict::Ok);
    none.backend = None;
    assert_eq!(exit_status(&none), 1);
    assert_eq!(exit_status(&Report::default()), 1);
    let mut no_backend_line = sample(Verdict::Ok);
    no_backend_line.checks.retain(|c| c.check != "backend");
    assert_eq!(exit_status(&no_backend_line), 1);
}

#[test]
fn text_is_aligned_with_the_fix_under_each_problem() {
    let text = render_text(&sample(Verdict::Ok));
    let lines: Vec<&str> = text.lines().collect();
    let w = "backend.kill".len();
    assert_eq!(lines[0], format!("{:<w$}  ok       6.18.0 (x86_64)", "kernel"));
    assert_eq!(lines[1], format!("{:<w$}  no       refused", "backend.lsm"));
    assert_eq!(lines[2], format!("{:<w$}           fix: boot another kernel", ""));
    assert_eq!(lines[3], "backend.kill  ok       loaded and attached");
    // Verdicts and details start in the same columns on every check line.
    for l in &lines[..6] {
        assert_eq!(&l[w..w + 2], "  ", "{l:?}");
    }
    assert!(text.contains("channels on the kill backend:"));
    assert!(text.contains("refused synchronously (EPERM)  connect\n"), "{text}");
    assert!(text.contains("stopped only by a kill         exec, open\n"), "{text}");
    assert!(text.contains("not governed                   signal\n"), "{text}");
    assert!(text.ends_with("this host can enforce: kill backend\n"));
    assert!(render_text(&sample(Verdict::No)).contains("this host cannot enforce"));
}

#[test]
fn json_shape() {
    let v = to_json(&sample(Verdict::Ok));
    assert_eq!(v["can_enforce"], true);
    assert_eq!(v["backend"], "kill");
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 5);
    assert_eq!(checks[0], json!({"check": "kernel", "verdict": "ok", "detail": "6.18.0 (x86_64)", "fix": null}));
    assert_eq!(checks[1]["verdict"], "no");
    assert_eq!(checks[1]["fix"], "boot another kernel");
    assert_eq!(v["channels"], json!({"exec": "kill", "connect": "eperm", "signal": "none", "open": "kill"}));
    let none = to_json(&Report::default());
    assert_eq!(none["backend"], Value::Null);
    assert_eq!(none["can_enforce"], false);
    assert_eq!(none["channels"], json!({}));
}

#[test]
fn trampoline_refusal_is_recognised_in_both_loaders_messages() {
    let aya = "program `mcpg_lsm_exec`: the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). Verifier output: ";
    let fmod =
        "loading mcpg_fmod_exec (fmod_ret security_bprm_check): Operation not permitted (os error 1); verifier: ";
    assert!(refused_before_verifier(aya));
    assert!(refused_before_verifier(fmod));
    assert!(!refused_before_verifier(
        "loading x (fmod_ret f): Permission denied (os error 13); verifier: R1 invalid mem access"
    ));
    assert!(!refused_before_verifier("... (os error 1). Verifier output: 0: R1=ctx() invalid"));
    let (v, detail, fix) = explain_backend(Backend::FmodRet, &Err(fmod.into()), Some("capability"), true);
    assert_eq!(v, Verdict::No);
    assert!(detail.starts_with("this kernel refuses trampoline programs (kill backend only)"));
    assert!(fix.is_some());
}

#[test]
fn backend_explanations() {
    let (v, _, fix) = explain_backend(
        Backend::Lsm,
        &Err("`bpf` is not in the active LSM list (lockdown,capability)".into()),
        Some("lockdown,capability"),
        true,
    );
    assert_eq!(v, Verdict::No);
    assert!(fix.unwrap().contains("`lsm=lockdown,capability,bpf`"));
    let (v, _, fix) = explain_backend(Backend::Lsm, &Err("x (os error 1). Verifier output: ".into()), None, false);
    assert_eq!(v, Verdict::No);
    assert!(fix.unwrap().starts_with("run as root"), "unprivileged EPERM is not blamed on the kernel");
    let (v, d, fix) = explain_backend(Backend::Kill, &Ok(()), None, true);
    assert_eq!((v, d.as_str(), fix), (Verdict::Ok, "loaded and attached", None));
    let (_, d, _) = explain_backend(Backend::Lsm, &Ok(()), None, true);
    assert!(d.contains("hooks ran"));
}

#[test]
fn lockdown_mode_is_the_bracketed_word() {
    assert_eq!(lockdown_mode("none [integrity] confidentiality\n"), Some("integrity"));
    assert_eq!(lockdown_mode("[none] integrity confidentiality"), Some("none"));
    assert_eq!(lockdown_mode("none integrity"), None);
}

#[test]
fn channels_group_in_a_fixed_order() {
    let ch: Vec<(String, String)> = [("a", "kill"), ("b", "none"), ("c", "eperm"), ("d", "kill"), ("e", "odd")]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .to_vec();
    let g = group_channels(&ch);
    let names: Vec<&str> = g.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["eperm", "kill", "none", "odd"]);
    assert_eq!(g[1].1, ["a", "d"]);
}
