//! `hubbub dev`: a local 3-node cluster from one command.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hubbub_testkit::{NodeApi, Process, free_port_range, hubbub_command, wait_until};

const NODES: u16 = 3;

#[test]
fn dev_launcher() {
    let base = free_port_range(10 * NODES);
    let mut cmd = hubbub_command();
    cmd.args(["dev", "--nodes", &NODES.to_string(), "--base-port", &base.to_string()]);
    let mut dev = Process::spawn("dev", cmd);
    let started = Instant::now();

    let http: Vec<SocketAddr> = (0..NODES).map(|i| SocketAddr::from(([127, 0, 0, 1], base + 10 * i))).collect();
    let apis: Vec<NodeApi> = http.iter().map(|addr| NodeApi::new(*addr)).collect();
    let names: Vec<String> = (1..=NODES).map(|i| format!("n{i}")).collect();
    wait_until(started + Duration::from_secs(30), Duration::from_millis(100), || {
        for (addr, api) in http.iter().zip(&apis) {
            let members = api.members()?;
            let alive: Vec<&str> = names.iter().filter(|n| members.is_alive(n)).map(String::as_str).collect();
            if alive.len() != names.len() {
                return Err(format!("{addr} sees alive only {alive:?}"));
            }
        }
        Ok(())
    })
    .expect("the dev cluster converges");
    println!("dev_launcher: 3 nodes alive on ports {base}.. after {:.2}s", started.elapsed().as_secs_f64());

    // One stdout line per node, with its HTTP address.
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !http.iter().all(|addr| lines.iter().any(|l: &String| l.contains(&addr.to_string()))) {
        match dev.next_stdout_line(deadline) {
            Ok(line) => lines.push(line),
            Err(e) => panic!("dev did not print every node's URL ({e}); printed {lines:?}"),
        }
    }

    let interrupted = Instant::now();
    dev.sigint();
    let status = dev.wait_exit(Duration::from_secs(10));
    println!("dev_launcher: exited {status} {:.2}s after SIGINT", interrupted.elapsed().as_secs_f64());
    assert_eq!(status.code(), Some(0), "dev exits 0 on SIGINT");

    wait_until(Instant::now() + Duration::from_secs(3), Duration::from_millis(50), || {
        let answering: Vec<&SocketAddr> =
            http.iter().filter(|addr| TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()).collect();
        if answering.is_empty() { Ok(()) } else { Err(format!("still answering: {answering:?}")) }
    })
    .expect("the dev nodes are gone after dev exits");
}
