//! Builds `src/preload.c` into a shared library for the kernel tests (`MCPG_PRELOAD_SO`): a
//! library with a constructor, for the tests of executable mappings. The host's C compiler
//! builds it for the host's libc, which is also what the VM matrix's guests run.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("libmcpg_mark.so");
    let cc = env::var("MCPG_TEST_CC").unwrap_or_else(|_| "cc".into());
    let st = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg("src/preload.c")
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler `{cc}` for tests/src/preload.c: {e} (apt-get install gcc)"));
    assert!(st.success(), "`{cc}` failed to build tests/src/preload.c ({st})");
    println!("cargo:rerun-if-changed=src/preload.c");
    println!("cargo:rerun-if-env-changed=MCPG_TEST_CC");
    println!("cargo:rustc-env=MCPG_PRELOAD_SO={}", out.display());
}
