//! Start-up configuration: a bad setting ends the process with exit code 2
//! and one stderr line naming the setting; precedence is flag > env > file.

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use hubbub_testkit::{Node, NodeOpts, hubbub_command, random_key, run_to_exit};

/// A refused configuration must not take long to refuse.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);
/// The documented exit code for a bad setting.
const BAD_SETTING_EXIT: i32 = 2;

/// One refused start: what to change from a valid command line, and which
/// setting names the error may mention (any one of them).
struct Case {
    what: &'static str,
    flags: Vec<(&'static str, Option<String>)>,
    env: Vec<(&'static str, &'static str)>,
    names: &'static [&'static str],
}

fn case(what: &'static str, flags: &[(&'static str, Option<&str>)], names: &'static [&'static str]) -> Case {
    let flags = flags.iter().map(|(flag, value)| (*flag, value.map(str::to_owned))).collect();
    Case { what, flags, env: Vec::new(), names }
}

#[test]
fn bad_config() {
    let files = ScratchFiles::default();
    let invalid_toml = files.write("invalid.toml", "name = \"x\"\n[[[listen\n");
    let unknown_key = files.write("unknown-key.toml", "name = \"x\"\nbogus_setting = 1\n");
    let busy_tcp = TcpListener::bind("127.0.0.1:0").expect("hold a TCP port");
    let busy_tcp = busy_tcp.local_addr().expect("addr").to_string();
    let busy_udp = UdpSocket::bind("127.0.0.1:0").expect("hold a UDP port");
    let busy_udp = busy_udp.local_addr().expect("addr").to_string();

    let mut cases = vec![
        case("missing --name", &[("--name", None)], &["name"]),
        case("--name with a space and !", &[("--name", Some("bad name!"))], &["name"]),
        case("--listen nonsense", &[("--listen", Some("nonsense"))], &["listen"]),
        case("--gossip 1.2.3:x", &[("--gossip", Some("1.2.3:x"))], &["gossip"]),
        case("--seeds without a port", &[("--seeds", Some("hostwithoutport"))], &["seeds"]),
        case("--cluster-key too short", &[("--cluster-key", Some("short"))], &["cluster_key"]),
        case("no key and no --insecure", &[("--cluster-key", None)], &["cluster_key"]),
        case("--config missing file", &[("--config", Some("/nonexistent/x.toml"))], &["config"]),
        case("--config invalid TOML", &[("--config", Some(&invalid_toml))], &["config"]),
        case("--config unknown key", &[("--config", Some(&unknown_key))], &["config", "bogus_setting"]),
        case("--replication-factor 0", &[("--replication-factor", Some("0"))], &["replication_factor"]),
        // Larger bodies or histories would not fit one node-link frame.
        case("--max-body over 512 KiB", &[("--max-body", Some("524289"))], &["max_body"]),
        case(
            "--max-body over a quarter of the queue",
            &[("--max-body", Some("300000"))],
            &["max_body", "client_queue_bytes"],
        ),
        case("--history-bytes over 2 MiB", &[("--history-bytes", Some("2097153"))], &["history_bytes"]),
        case("--listen on a port in use", &[("--listen", Some(&busy_tcp))], &["listen"]),
        case("--gossip on a port in use", &[("--gossip", Some(&busy_udp))], &["gossip"]),
    ];
    let mut env_listen = case("HUBBUB_LISTEN=garbage", &[("--listen", None)], &["listen"]);
    env_listen.env.push(("HUBBUB_LISTEN", "garbage"));
    cases.push(env_listen);

    let failures: Vec<String> = cases.iter().filter_map(|c| run_case(c).err()).collect();
    println!("bad_config: {} refused-configuration cases, {} failed", cases.len(), failures.len());
    assert!(failures.is_empty(), "bad settings not refused as documented:\n{}", failures.join("\n"));
}

/// A valid command line with `changes` applied (`None` removes a flag).
fn command_line(changes: &[(&'static str, Option<String>)]) -> Vec<String> {
    let mut flags: Vec<(&str, Option<String>)> = vec![
        ("--name", Some("cfg-test".to_owned())),
        ("--listen", Some("127.0.0.1:0".to_owned())),
        ("--gossip", Some("127.0.0.1:0".to_owned())),
        ("--state-gossip", Some("127.0.0.1:0".to_owned())),
        ("--cluster-key", Some(random_key())),
    ];
    for (flag, value) in changes {
        match flags.iter_mut().find(|(f, _)| f == flag) {
            Some(slot) => slot.1 = value.clone(),
            None => flags.push((flag, value.clone())),
        }
    }
    let mut args = vec!["node".to_owned()];
    for (flag, value) in flags {
        if let Some(value) = value {
            args.extend([flag.to_owned(), value]);
        }
    }
    args
}

fn run_case(case: &Case) -> Result<(), String> {
    let args = command_line(&case.flags);
    let mut cmd = hubbub_command();
    // The one-line contract is about the default log setup.
    cmd.args(&args).env_remove("RUST_LOG").envs(case.env.iter().copied());
    let fail = |why: String| Err(format!("- {}: {why}\n    args: {args:?} env: {:?}", case.what, case.env));
    let finished = match run_to_exit(cmd, EXIT_TIMEOUT) {
        Ok(finished) => finished,
        Err(e) => return fail(e),
    };
    let stderr = finished.stderr.trim_end_matches('\n');
    if finished.status.code() != Some(BAD_SETTING_EXIT) {
        return fail(format!("exit {} (expected code {BAD_SETTING_EXIT}); stderr: {stderr:?}", finished.status));
    }
    if stderr.trim().is_empty() || stderr.contains('\n') {
        return fail(format!("stderr is not exactly one non-empty line: {stderr:?}"));
    }
    if !case.names.iter().any(|name| mentions(stderr, name)) {
        return fail(format!("stderr does not name {:?}: {stderr:?}", case.names));
    }
    if finished.stdout.contains("listening") {
        return fail(format!("reported listening before refusing: {:?}", finished.stdout));
    }
    println!("bad_config: {}: {stderr}", case.what);
    Ok(())
}

/// Whether `text` has `word` as a whole word (letters, digits and `_` make
/// words, so `name` is not found in `cluster_name`).
fn mentions(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

#[test]
fn config_precedence() {
    let files = ScratchFiles::default();
    let key = random_key();

    // A flag beats the environment.
    let mut opts = NodeOpts::new("good", &key);
    opts.env.push(("HUBBUB_NAME".to_owned(), "bad!".to_owned()));
    let node = Node::spawn(opts);
    assert_eq!(node.name(), "good");
    drop(node);

    // The environment beats the file.
    let bad_listen = files.write("bad-listen.toml", "listen = \"bad\"\n");
    let mut opts = NodeOpts::new("env-over-file", &key);
    opts.listen = None;
    opts.args = vec!["--config".to_owned(), bad_listen];
    opts.env.push(("HUBBUB_LISTEN".to_owned(), "127.0.0.1:0".to_owned()));
    drop(Node::spawn(opts));

    // The file alone configures a node, and no secret leaks into /debug/node.
    let file_key = random_key();
    let full = files.write(
        "full.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ngossip = \"127.0.0.1:0\"\nstate_gossip = \"127.0.0.1:0\"\n\
             cluster = \"from-file\"\ncluster_key = \"{file_key}\"\nreplication_factor = 3\n"
        ),
    );
    let mut opts = NodeOpts::new("file-node", &key);
    (opts.listen, opts.gossip, opts.state_gossip, opts.cluster_key) = (None, None, None, None);
    opts.args = vec!["--config".to_owned(), full];
    let node = Node::spawn(opts);
    let (status, body) = node.api().get("/debug/node").expect("/debug/node");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(&file_key), "/debug/node shows the cluster key: {body}");
    let ring = node.api().ring().expect("/debug/ring");
    assert_eq!(ring.replication_factor, 3, "replication_factor from the file");
    let info = node.api().node_info().expect("/debug/node parses");
    assert_eq!(info.cluster.as_deref(), Some("from-file"), "/debug/node's cluster: {body}");
}

/// Files for one test in the system temp dir, removed when dropped.
#[derive(Default)]
struct ScratchFiles {
    paths: std::cell::RefCell<Vec<PathBuf>>,
}

impl ScratchFiles {
    /// Writes `contents` to a fresh file and returns its path.
    fn write(&self, name: &str, contents: &str) -> String {
        let path =
            std::env::temp_dir().join(format!("hubbub-test-{}-{}-{name}", std::process::id(), &random_key()[..12]));
        fs::write(&path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self.paths.borrow_mut().push(path.clone());
        path.to_string_lossy().into_owned()
    }
}

impl Drop for ScratchFiles {
    fn drop(&mut self) {
        for path in self.paths.borrow().iter() {
            let _ = fs::remove_file(path);
        }
    }
}
