//! The web client in a real browser against a real cluster: headless
//! chromium (the testkit's DevTools driver) opens the page served by each of
//! two nodes, two users chat in a room across the nodes, and screenshots of
//! both pages (desktop and 360 px wide) are saved under `artifacts/`. A page
//! whose node dies moves to a survivor and resumes its session and room
//! (`hello {session}`, `join {since}`): it shows every message exactly once.
//! A page whose node drains is told to `reconnect` and moves at once. A
//! burst of messages reaches a page whole and in order, in batched frames
//! (`hello.batch`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hubbub_client::{ClientError, ClientMsg, Connection, ErrorCode};
use hubbub_testkit::Cluster;
use hubbub_testkit::browser::{Browser, Page};
use serde_json::{Value, json};

use crate::chat_util::{FRAME_TIMEOUT, owner_of, runtime, ws_url};

/// The cluster must agree on its members this fast.
const CONVERGENCE: Duration = Duration::from_secs(15);
/// Bound for anything the page does after an action: connect, join, a
/// message crossing the cluster.
const UI_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for a page to be back in its room after its node was killed:
/// failure detection (~2 s), the client's backoff and the room moving.
const RECOVERY: Duration = Duration::from_secs(30);

/// `text` as a JavaScript string literal.
fn js(text: &str) -> String {
    json!(text).to_string()
}

/// Waits for `condition` on `page`, panicking with the page's console when
/// it never holds.
fn expect(page: &Page<'_>, who: &str, what: &str, condition: &str) -> Value {
    page.wait_for(condition, UI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{who}: {what}: {e}\n{who}'s console:\n{}", page.console().join("\n")))
}

/// Picks `user` in the name dialog (typing it and pressing Enter) and waits
/// until the page is connected to `node`.
fn sign_in(page: &Page<'_>, user: &str, node: &str) {
    expect(page, user, "the name dialog opens", "document.getElementById('name-dialog').open");
    page.eval("document.querySelector('[data-testid=name-input]').focus()");
    page.type_text(user);
    page.press_key("Enter");
    expect(
        page,
        user,
        &format!("connected to {node}"),
        &format!(
            "document.querySelector('[data-testid=node-label]').textContent === {} \
             && document.querySelector('[data-testid=conn-status]').textContent === 'Connected'",
            js(node)
        ),
    );
    assert_eq!(page.eval("document.querySelector('[data-testid=me-name]').textContent"), user);
    assert_eq!(page.eval("localStorage.getItem('hubbub.user')"), json!(user).to_string(), "{user}: name remembered");
}

/// Joins `room` through the join form and waits until sending is possible.
fn join(page: &Page<'_>, who: &str, room: &str) {
    page.eval("document.querySelector('[data-testid=join-input]').focus()");
    page.type_text(room);
    page.eval("document.querySelector('[data-testid=join-button]').click()");
    expect(
        page,
        who,
        &format!("joined {room}"),
        &format!(
            "document.querySelector('[data-testid=room-item][data-room={}]') !== null \
             && !document.querySelector('[data-testid=send-button]').disabled",
            js(room)
        ),
    );
}

/// Types `body` into the message box of the open conversation.
fn compose(page: &Page<'_>, body: &str) {
    page.eval("document.querySelector('[data-testid=message-input]').focus()");
    page.type_text(body);
}

/// JS: the list item of the room message in `room` from `from` with `body`.
fn message_from(room: &str, from: &str, body: &str) -> String {
    format!(
        "[...document.querySelectorAll('[data-testid=message][data-room={}][data-from={}]')]\
         .find(li => li.querySelector('.body').textContent === {})",
        js(room),
        js(from),
        js(body)
    )
}

/// JS: the (room, seq, from, body, shown sender) of every message shown.
const SHOWN: &str = "[...document.querySelectorAll('[data-testid=message]')].map(li => \
    [li.dataset.room, Number(li.dataset.seq), li.dataset.from, li.querySelector('.body').textContent, \
     li.querySelector('.from').textContent])";

/// The repository's `artifacts/` directory (git-ignored).
fn artifacts() -> PathBuf {
    let tests_crate = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    tests_crate.parent().expect("tests/ is inside the repository").join("artifacts")
}

#[test]
fn two_users_chat_across_two_nodes_in_the_browser() {
    let mut cluster = Cluster::start(2);
    cluster.wait_converged(CONVERGENCE).expect("2 nodes converge");
    let url = |name: &str| format!("http://{}/", cluster.node(name).http_addr());

    let browser = Browser::launch();
    let a = browser.new_page(&url("n1"));
    let b = browser.new_page(&url("n2"));

    sign_in(&a, "ann", "n1");
    sign_in(&b, "bob", "n2");
    for (page, who) in [(&a, "ann"), (&b, "bob")] {
        expect(
            page,
            who,
            "the header lists both nodes",
            "[...document.querySelectorAll('[data-testid=nodes-list] [data-node]')]\
             .map(li => li.dataset.node).join(',') === 'n1,n2'",
        );
    }
    assert_eq!(a.eval("document.querySelector('[data-testid=nodes-list] [data-current]').dataset.node"), "n1");
    assert_eq!(b.eval("document.querySelector('[data-testid=nodes-list] [data-current]').dataset.node"), "n2");

    join(&a, "ann", "lobby");
    join(&b, "bob", "lobby");

    // ann sends with Enter; bob sees it under ann's name, on the other node.
    let hello = "hello from ann on n1 <b>not bold</b>";
    compose(&a, hello);
    a.press_key("Enter");
    expect(&b, "bob", "ann's message arrives", &message_from("lobby", "ann", hello));
    let acked = format!("{}?.dataset.state === 'acked'", message_from("lobby", "ann", hello));
    expect(&a, "ann", "her own message is acknowledged", &acked);
    assert_eq!(a.eval("document.querySelector('[data-testid=message-input]').value"), "", "the box is cleared");
    // Text is shown as text: no element was made from the body.
    assert_eq!(b.eval("document.querySelectorAll('[data-testid=message-list] b').length"), 0);

    // bob answers with the Send button; ann sees it.
    let answer = "hi ann, bob here on n2";
    compose(&b, answer);
    b.eval("document.querySelector('[data-testid=send-button]').click()");
    expect(&a, "ann", "bob's answer arrives", &message_from("lobby", "bob", answer));
    expect(
        &b,
        "bob",
        "his answer is acknowledged",
        &format!("{}?.dataset.state === 'acked'", message_from("lobby", "bob", answer)),
    );

    // Both pages show the same two messages, in sequence order, each once,
    // with the sender's name (or "You" for one's own).
    for (page, who) in [(&a, "ann"), (&b, "bob")] {
        let shown = page.eval(SHOWN);
        let shown = shown.as_array().expect("an array");
        assert_eq!(shown.len(), 2, "{who} shows {shown:?}");
        let seqs: Vec<u64> = shown.iter().map(|m| m[1].as_u64().expect("a seq")).collect();
        assert!(seqs[0] < seqs[1], "{who}: messages out of order: {shown:?}");
        assert_eq!((&shown[0][2], &shown[0][3]), (&json!("ann"), &json!(hello)), "{who}: {shown:?}");
        assert_eq!((&shown[1][2], &shown[1][3]), (&json!("bob"), &json!(answer)), "{who}: {shown:?}");
        let expected_names = if who == "ann" { ["You", "bob"] } else { ["ann", "You"] };
        assert_eq!(shown[0][4], expected_names[0], "{who}: {shown:?}");
        assert_eq!(shown[1][4], expected_names[1], "{who}: {shown:?}");
    }

    // A direct message: bob gets an unread badge for ann's conversation.
    a.eval("document.querySelector('[data-testid=dm-input]').focus()");
    a.type_text("bob");
    a.press_key("Enter");
    let dm = "a private word, bob";
    compose(&a, dm);
    a.press_key("Enter");
    expect(
        &b,
        "bob",
        "ann's direct message is counted unread",
        "document.querySelector('[data-testid=dm-item] .conv-button[data-conv-key=\"dm:ann\"] .badge')\
         ?.textContent === '1'",
    );
    expect(
        &a,
        "ann",
        "the direct message is acknowledged",
        "document.querySelector('[data-testid=message][data-kind=direct]')?.dataset.state === 'acked'",
    );
    b.eval("document.querySelector('[data-conv-key=\"dm:ann\"]').click()");
    expect(
        &b,
        "bob",
        "the direct message is shown",
        &format!(
            "[...document.querySelectorAll('[data-testid=message][data-kind=direct][data-from=ann]')]\
             .some(li => li.querySelector('.body').textContent === {})",
            js(dm)
        ),
    );
    b.eval("document.querySelector('[data-conv-key=\"room:lobby\"]').click()");
    a.eval("document.querySelector('[data-conv-key=\"room:lobby\"]').click()");

    let dir = artifacts();
    a.screenshot(dir.join("web-two-nodes-a.png"));
    b.screenshot(dir.join("web-two-nodes-b.png"));

    // 360 px wide: the conversation list folds into a drawer and nothing
    // overflows sideways.
    b.set_viewport(360, 740);
    expect(&b, "bob", "the page fits 360 px", "innerWidth === 360 && document.documentElement.scrollWidth <= 360");
    assert_eq!(b.eval("getComputedStyle(document.getElementById('drawer-toggle')).display !== 'none'"), true);
    assert_eq!(b.eval("getComputedStyle(document.getElementById('sidebar')).visibility"), "hidden");
    b.screenshot(dir.join("web-two-nodes-360.png"));
    b.eval("document.getElementById('drawer-toggle').click()");
    expect(
        &b,
        "bob",
        "the drawer opens",
        "getComputedStyle(document.getElementById('sidebar')).visibility === 'visible'",
    );

    for (page, who) in [(&a, "ann"), (&b, "bob")] {
        let errors: Vec<String> = page.console().into_iter().filter(|l| l.starts_with("uncaught")).collect();
        assert!(errors.is_empty(), "{who}'s page threw: {errors:?}");
    }
    println!("web: screenshots in {}", dir.display());
}

#[test]
fn the_page_reconnects_to_a_surviving_node_and_rejoins() {
    // Three nodes: after a crash the survivors are a majority and keep
    // acknowledging (two nodes split evenly; see ARCHITECTURE.md, fencing).
    let mut cluster = Cluster::start(3);
    cluster.wait_converged(CONVERGENCE).expect("3 nodes converge");
    let url = |name: &str| format!("http://{}/", cluster.node(name).http_addr());

    let browser = Browser::launch();
    let a = browser.new_page(&url("n1"));
    let b = browser.new_page(&url("n2"));
    sign_in(&a, "ann", "n1");
    sign_in(&b, "bob", "n2");
    join(&a, "ann", "lobby");
    join(&b, "bob", "lobby");
    let before = "before the crash";
    compose(&a, before);
    a.press_key("Enter");
    expect(&b, "bob", "the first message arrives", &message_from("lobby", "ann", before));

    // bob's node dies: his page must move to a survivor by itself and re-join lobby.
    let killed = std::time::Instant::now();
    cluster.node_mut("n2").kill9();
    b.wait_for(
        "['n1', 'n3'].includes(document.querySelector('[data-testid=node-label]').textContent) \
         && document.querySelector('[data-testid=room-item][data-room=lobby]') !== null \
         && !document.querySelector('[data-testid=send-button]').disabled",
        RECOVERY,
    )
    .unwrap_or_else(|e| panic!("bob's page did not recover on a survivor: {e}\n{}", b.console().join("\n")));
    println!(
        "web: bob's page back on a survivor and in lobby {:.2}s after n2 was killed",
        killed.elapsed().as_secs_f64()
    );

    // The room works again in both directions, and nothing is shown twice.
    let after = "after the crash";
    compose(&a, after);
    a.press_key("Enter");
    b.wait_for(&message_from("lobby", "ann", after), RECOVERY)
        .unwrap_or_else(|e| panic!("bob: ann's message after the crash: {e}\n{}", b.console().join("\n")));
    let reply = "still here";
    compose(&b, reply);
    b.press_key("Enter");
    expect(&a, "ann", "bob's message after the crash", &message_from("lobby", "bob", reply));
    let bodies = b.eval(
        "[...document.querySelectorAll('[data-testid=message]')].map(li => li.querySelector('.body').textContent)",
    );
    assert_eq!(bodies, json!([before, after, reply]), "bob's page");
    b.screenshot(artifacts().join("web-reconnected-b.png"));
}

/// Messages published at once in the burst test (under the in-flight limit
/// and the page's 500 shown items).
const BURST: u64 = 300;

#[test]
fn a_burst_reaches_the_page_whole_in_batched_frames() {
    let mut cluster = Cluster::start(2);
    cluster.wait_converged(CONVERGENCE).expect("2 nodes converge");
    let browser = Browser::launch();
    let page = browser.new_page(&format!("http://{}/", cluster.node("n2").http_addr()));
    sign_in(&page, "ann", "n2");
    join(&page, "ann", "burst");

    // A client on the other node sends the burst without waiting, then
    // collects the acks: deliveries reach n2 in link batches and queue up
    // for the page's connection.
    let rt = runtime();
    let n1 = ws_url(cluster.node("n1"));
    rt.block_on(async {
        let (mut conn, _) = tokio::time::timeout(FRAME_TIMEOUT, Connection::open(&n1, "pub"))
            .await
            .unwrap_or_else(|_| panic!("publisher: opening {n1} took longer than {FRAME_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("publisher: {e}"));
        conn.join("burst").await.expect("publisher joins");
        for i in 0..BURST {
            let msg = ClientMsg::Send { room: "burst".into(), body: format!("burst {i}"), id: format!("b{i}") };
            conn.send(&msg).await.expect("publisher sends");
        }
        for i in 0..BURST {
            conn.wait_ack(&format!("b{i}")).await.unwrap_or_else(|e| panic!("publisher: b{i} not acked: {e}"));
        }
    });
    let shown = "[...document.querySelectorAll('[data-testid=message][data-room=burst]')].map(li => \
        [Number(li.dataset.seq), li.querySelector('.body').textContent])";
    page.wait_for(&format!("{shown}.length >= {BURST}"), UI_TIMEOUT)
        .unwrap_or_else(|e| panic!("ann: {BURST} burst messages not shown: {e}\n{}", page.console().join("\n")));
    let expected: Vec<Value> = (0..BURST).map(|i| json!([i + 1, format!("burst {i}")])).collect();
    assert_eq!(page.eval(shown), Value::Array(expected), "every message once, in order");
    let (frames, messages) =
        (page.eval("window.hubbub.client.framesRead"), page.eval("window.hubbub.client.messagesRead"));
    println!("web: the page read {messages} messages in {frames} frames");
    assert!(
        messages.as_u64() > frames.as_u64(),
        "the page never got a frame with several messages ({messages} messages in {frames} frames)"
    );
}

/// Messages the publisher sends in the resume test, half of them before the
/// kill and half while the page is away.
const PUBLISHED: usize = 30;
/// Bound on the publisher getting one message acknowledged, retries through
/// the failover included.
const ACK_BOUND: Duration = Duration::from_secs(30);

/// JS: (seq, from, body) of every message of room lobby shown.
const LOBBY: &str = "[...document.querySelectorAll('[data-testid=message][data-room=lobby]')].map(li => \
    [Number(li.dataset.seq), li.dataset.from, li.querySelector('.body').textContent])";

/// Sends `body` to `room` as `id` until it is acknowledged, re-sending with
/// the same id after `unavailable` or no answer (the owner de-duplicates),
/// and joining again after `not_joined`; returns the seq.
async fn publish(conn: &mut Connection, room: &str, body: &str, id: &str) -> u64 {
    let deadline = Instant::now() + ACK_BOUND;
    let mut last = String::new();
    while Instant::now() < deadline {
        match conn.send_and_ack(room, body, id).await {
            Ok(seq) => return seq,
            Err(ClientError::Refused { code: ErrorCode::NotJoined, message }) => {
                last = format!("not_joined: {message}");
                // The node dropped the room while its owner failed over.
                if let Err(e) = conn.join(room).await {
                    last = format!("re-join: {e}");
                }
            }
            Err(e @ (ClientError::Refused { code: ErrorCode::Unavailable, .. } | ClientError::Timeout(_))) => {
                last = e.to_string();
            }
            Err(e) => panic!("publisher: sending {id}: {e}"),
        }
    }
    panic!("publisher: {id} not acknowledged within {ACK_BOUND:?}; last: {last}");
}

/// Waits until `page` shows `count` messages in lobby and returns them as
/// (seq, from, body), in page order.
fn lobby_messages(page: &Page<'_>, who: &str, count: usize, within: Duration) -> Vec<(u64, String, String)> {
    page.wait_for(&format!("{LOBBY}.length >= {count}"), within).unwrap_or_else(|e| {
        panic!("{who}: {count} lobby messages not shown: {e}\n{who}'s console:\n{}", page.console().join("\n"))
    });
    let shown = page.eval(LOBBY);
    shown
        .as_array()
        .expect("an array")
        .iter()
        .map(|m| {
            let seq = m[0].as_u64().unwrap_or_else(|| panic!("{who}: a message without a seq: {shown}"));
            (seq, m[1].as_str().unwrap_or("").to_owned(), m[2].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

#[test]
fn the_page_resumes_without_gaps_after_its_node_dies() {
    let mut cluster = Cluster::start(3);
    cluster.wait_converged(CONVERGENCE).expect("3 nodes converge");
    let url = |name: &str| format!("http://{}/", cluster.node(name).http_addr());
    println!("web: lobby is owned by {}", owner_of(&["n1", "n2", "n3"], "lobby"));

    let browser = Browser::launch();
    let a = browser.new_page(&url("n1"));
    let b = browser.new_page(&url("n2"));
    sign_in(&a, "ann", "n1");
    sign_in(&b, "bob", "n2");
    join(&a, "ann", "lobby");
    join(&b, "bob", "lobby");
    let session = b.eval("window.hubbub.client.session");
    assert!(session.as_str().is_some_and(|s| !s.is_empty()), "bob's page has a session: {session}");

    // A plain client on n3 publishes; it stays up through the kill.
    let rt = runtime();
    let n3 = ws_url(cluster.node("n3"));
    let mut publisher = rt.block_on(async {
        let (mut conn, _) = tokio::time::timeout(FRAME_TIMEOUT, Connection::open(&n3, "pub"))
            .await
            .unwrap_or_else(|_| panic!("publisher: opening {n3} took longer than {FRAME_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("publisher: cannot open {n3}: {e}"));
        conn.set_timeout(FRAME_TIMEOUT);
        conn.join("lobby").await.unwrap_or_else(|e| panic!("publisher: joining lobby: {e}"));
        conn
    });
    let body = |i: usize| format!("message {i} of {PUBLISHED}");
    let mut acked = Vec::with_capacity(PUBLISHED);
    let half = PUBLISHED / 2;
    rt.block_on(async {
        for i in 1..=half {
            acked.push(publish(&mut publisher, "lobby", &body(i), &format!("p{i}")).await);
        }
    });
    // bob has seen the first half: his resume point is behind what follows.
    lobby_messages(&b, "bob", half, UI_TIMEOUT);

    // bob's page is kept from reconnecting until the second half has been
    // published (through the page's own client object, on the test side
    // only): what he missed must come from the replay of `join {since}`,
    // not from live delivery.
    b.eval(
        "(() => { const c = window.hubbub.client; const connect = c.connect.bind(c); \
         window.holdReconnect = true; \
         c.connect = () => { if (window.holdReconnect) { window.reconnectHeld = true; return; } connect(); }; \
         return true; })()",
    );
    // bob's node dies; the second half is published while his page is away.
    let killed = Instant::now();
    cluster.node_mut("n2").kill9();
    b.wait_for("window.reconnectHeld === true", RECOVERY)
        .unwrap_or_else(|e| panic!("bob's page did not notice n2's death: {e}\n{}", b.console().join("\n")));
    rt.block_on(async {
        for i in half + 1..=PUBLISHED {
            acked.push(publish(&mut publisher, "lobby", &body(i), &format!("p{i}")).await);
        }
    });
    println!(
        "web: the publisher's {PUBLISHED} messages acknowledged {:.2}s after n2 was killed",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(b.eval(&format!("{LOBBY}.length")), json!(half), "bob's page got messages while away");
    b.eval("window.holdReconnect = false; window.hubbub.client.connect(); true");

    b.wait_for(
        "['n1', 'n3'].includes(document.querySelector('[data-testid=node-label]').textContent) \
         && !document.querySelector('[data-testid=send-button]').disabled",
        RECOVERY,
    )
    .unwrap_or_else(|e| panic!("bob's page did not recover on a survivor: {e}\n{}", b.console().join("\n")));
    let shown_b = lobby_messages(&b, "bob", PUBLISHED, RECOVERY);
    println!(
        "web: bob's page shows all {PUBLISHED} messages {:.2}s after n2 was killed",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(b.eval("window.hubbub.client.session"), session, "bob's page resumed its session");

    // Every acknowledged message once, in seq order, without a gap, on both
    // pages; the room was new, so its seqs are 1..=PUBLISHED.
    let expected: Vec<(u64, String, String)> =
        acked.iter().enumerate().map(|(i, &seq)| (seq, "pub".to_owned(), body(i + 1))).collect();
    let seqs: Vec<u64> = expected.iter().map(|m| m.0).collect();
    assert_eq!(seqs, (1..=PUBLISHED as u64).collect::<Vec<_>>(), "the publisher's acks");
    assert_eq!(shown_b, expected, "bob's page");
    let shown_a = lobby_messages(&a, "ann", PUBLISHED, RECOVERY);
    assert_eq!(shown_a, expected, "ann's page");
    // The history reached back far enough: no note about missing messages.
    assert_eq!(b.eval("document.querySelectorAll('[data-testid=message-list] .system').length"), 0);
    for (page, who) in [(&a, "ann"), (&b, "bob")] {
        let errors: Vec<String> = page.console().into_iter().filter(|l| l.starts_with("uncaught")).collect();
        assert!(errors.is_empty(), "{who}'s page threw: {errors:?}");
    }
    b.screenshot(artifacts().join("web-resumed-b.png"));
}

#[test]
fn the_page_moves_to_another_node_when_its_node_drains() {
    let mut cluster = Cluster::start(3);
    cluster.wait_converged(CONVERGENCE).expect("3 nodes converge");
    let url = |name: &str| format!("http://{}/", cluster.node(name).http_addr());

    let browser = Browser::launch();
    let a = browser.new_page(&url("n1"));
    let b = browser.new_page(&url("n2"));
    sign_in(&a, "ann", "n1");
    sign_in(&b, "bob", "n2");
    join(&a, "ann", "lobby");
    join(&b, "bob", "lobby");
    let before = "before the drain";
    compose(&a, before);
    a.press_key("Enter");
    expect(&b, "bob", "the first message arrives", &message_from("lobby", "ann", before));

    // n2 drains: it sends `reconnect` and bob's page moves at once, saying
    // so quietly in the status line (no error toast).
    let drained = Instant::now();
    cluster.node("n2").sigterm();
    b.wait_for(
        "['n1', 'n3'].includes(document.querySelector('[data-testid=node-label]').textContent) \
         && document.querySelector('[data-testid=conn-status]').textContent.startsWith('Connected · moved to n') \
         && !document.querySelector('[data-testid=send-button]').disabled",
        RECOVERY,
    )
    .unwrap_or_else(|e| panic!("bob's page did not move off n2: {e}\n{}", b.console().join("\n")));
    println!("web: bob's page moved off draining n2 in {:.2}s", drained.elapsed().as_secs_f64());
    assert_eq!(b.eval("document.querySelectorAll('#toasts .toast.error').length"), 0, "no error shown");

    let after = "after the drain";
    compose(&a, after);
    a.press_key("Enter");
    b.wait_for(&message_from("lobby", "ann", after), RECOVERY)
        .unwrap_or_else(|e| panic!("bob: ann's message after the drain: {e}\n{}", b.console().join("\n")));
    let bodies = b.eval(
        "[...document.querySelectorAll('[data-testid=message]')].map(li => li.querySelector('.body').textContent)",
    );
    assert_eq!(bodies, json!([before, after]), "bob's page");
}
