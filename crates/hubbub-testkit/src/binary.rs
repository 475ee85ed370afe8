//! Where the `hubbub` binary under test lives.

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// Path of the `hubbub` binary: `HUBBUB_BIN` if set, else `target/debug/hubbub`
/// (the profile directory that holds the test executable's `deps/`).
///
/// Panics with instructions when it does not exist: integration tests of one
/// package cannot make cargo build another package's binary.
pub fn hubbub_bin() -> PathBuf {
    if let Some(bin) = env::var_os("HUBBUB_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "HUBBUB_BIN={} is not a file", bin.display());
        return bin;
    }
    let exe = env::current_exe().expect("the test executable has a path");
    // target/debug/deps/cluster-0123abcd -> target/debug/hubbub
    let profile_dir =
        exe.parent().and_then(|deps| deps.parent()).expect("the test executable lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("hubbub{}", env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the hubbub binary is missing at {}: run `cargo build -p hubbub` first \
         (or point HUBBUB_BIN at a hubbub binary)",
        bin.display()
    );
    bin
}

/// A `Command` for the `hubbub` binary whose environment has no `HUBBUB_*`
/// variable, so the developer's shell cannot change what a test starts, and
/// `NO_COLOR=1`, so logs read as plain text.
pub fn hubbub_command() -> Command {
    let mut cmd = Command::new(hubbub_bin());
    cmd.env("NO_COLOR", "1");
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("HUBBUB_") {
            cmd.env_remove(key);
        }
    }
    cmd
}
