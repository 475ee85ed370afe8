//! A small Chrome DevTools Protocol driver for browser tests of the web
//! client.
//!
//! [`Browser::launch`] starts headless `chromium` (Debian's package; set
//! `HUBBUB_CHROMIUM` to use another binary) with `--remote-debugging-port=0`
//! and a fresh profile directory, reads the port and the browser's WebSocket
//! path from the `DevToolsActivePort` file chromium writes there, and opens
//! one blocking WebSocket to it. Every [`Page`] is a tab attached with a
//! flattened session, so all commands share that one socket and carry a
//! `sessionId`. Dropping the `Browser` kills chromium and the processes it
//! started (by PID, through [`Process`]) and removes the profile.
//!
//! Waits poll a condition until a deadline ([`Page::wait_for`]), never sleep
//! for a fixed time.

use std::collections::HashMap;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message, WebSocket};

use crate::process::Process;
use crate::wait::wait_until;

/// How long chromium may take to write `DevToolsActivePort`.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CDP command may take to be answered.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a navigation may take to reach `readyState == "complete"`.
const LOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// How often [`Page::wait_for`] re-evaluates its condition.
const WAIT_POLL: Duration = Duration::from_millis(50);
/// The socket read timeout: bounds each blocking read so a command's deadline
/// is checked even when chromium sends nothing.
const READ_SLICE: Duration = Duration::from_millis(200);
/// Console lines kept per page; older ones are dropped.
const MAX_CONSOLE_LINES: usize = 500;

/// A headless chromium and the DevTools connection to it.
pub struct Browser {
    conn: Mutex<Connection>,
    /// Always `Some` until dropped: dropping it kills chromium and its
    /// children.
    process: Option<Process>,
    profile: PathBuf,
}

impl Browser {
    /// Starts headless chromium with a fresh profile and connects to it.
    /// Panics (printing chromium's log) if it does not come up in time.
    pub fn launch() -> Browser {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let profile = std::env::temp_dir().join(format!(
            "hubbub-chromium-{}-{nanos}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&profile).unwrap_or_else(|e| panic!("cannot create {}: {e}", profile.display()));

        let binary = std::env::var("HUBBUB_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
        let mut cmd = Command::new(&binary);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--disable-background-networking",
            // Every tab is a page under test: none may be throttled or left
            // unpainted for being in the background.
            "--disable-background-timer-throttling",
            "--disable-backgrounding-occluded-windows",
            "--disable-renderer-backgrounding",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            "--mute-audio",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
        ]);
        cmd.arg(format!("--user-data-dir={}", profile.display()));
        cmd.arg("about:blank");
        let mut process = Process::spawn("chromium", cmd);

        let port_file = profile.join("DevToolsActivePort");
        let found = wait_until(Instant::now() + LAUNCH_TIMEOUT, Duration::from_millis(50), || {
            if !process.is_running() {
                return Ok(None);
            }
            let text = fs::read_to_string(&port_file).map_err(|e| format!("{}: {e}", port_file.display()))?;
            let mut lines = text.lines();
            match (lines.next().and_then(|p| p.trim().parse::<u16>().ok()), lines.next()) {
                (Some(port), Some(path)) if port != 0 && path.starts_with('/') => Ok(Some((port, path.to_owned()))),
                _ => Err(format!("{} is incomplete: {text:?}", port_file.display())),
            }
        });
        let (port, path) = match found {
            Ok(Some(found)) => found,
            Ok(None) => panic!("{binary} exited at start-up (is the chromium package installed?)"),
            Err(e) => panic!("{binary} did not write DevToolsActivePort: {e}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conn =
            Connection::open(addr, &path).unwrap_or_else(|e| panic!("cannot connect to chromium at {addr}: {e}"));
        process.note(&format!("devtools: ws://{addr}{path}"));
        Browser { conn: Mutex::new(conn), process: Some(process), profile }
    }

    /// The PID of the chromium process.
    pub fn pid(&self) -> u32 {
        self.process.as_ref().map_or(0, Process::pid)
    }

    /// Opens a new tab at `url` (1280×800 unless changed with
    /// [`Page::set_viewport`]) and waits until its document has loaded.
    pub fn new_page(&self, url: &str) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .unwrap_or_else(|e| panic!("cannot open a tab: {e}"));
        let target_id = target["targetId"].as_str().expect("createTarget returns targetId").to_owned();
        let attached = self
            .call(None, "Target.attachToTarget", json!({ "targetId": target_id, "flatten": true }))
            .unwrap_or_else(|e| panic!("cannot attach to tab {target_id}: {e}"));
        let session = attached["sessionId"].as_str().expect("attachToTarget returns sessionId").to_owned();
        let page = Page { browser: self, session, target_id };
        // Runtime events carry the page's console output and uncaught errors.
        page.command("Runtime.enable", json!({}));
        page.command("Page.enable", json!({}));
        page.set_viewport(1280, 800);
        page.goto(url);
        page
    }

    /// Sends one command and waits for its answer; events read meanwhile
    /// are kept for the page they belong to.
    fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        let mut conn = self.conn.lock().map_err(|_| "the CDP connection is poisoned".to_owned())?;
        conn.call(session, method, params)
    }

    fn take_console(&self, session: &str) -> Vec<String> {
        self.conn.lock().map(|mut c| c.console.remove(session).unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(conn) = self.conn.get_mut() {
            let _ = conn.socket.close(None);
        }
        // Kills chromium and its children by PID and reaps chromium, so
        // nothing writes into the profile any more.
        drop(self.process.take());
        let _ = fs::remove_dir_all(&self.profile);
    }
}

/// One tab of a [`Browser`].
pub struct Page<'b> {
    browser: &'b Browser,
    session: String,
    target_id: String,
}

impl Page<'_> {
    /// Navigates to `url` and waits until the document has loaded; panics on
    /// a navigation error.
    pub fn goto(&self, url: &str) {
        // A new document has a new time origin: this tells the loaded page
        // from the one before, even when both have the same URL.
        let before = self.try_eval("performance.timeOrigin").unwrap_or(Value::Null);
        let nav = self.command("Page.navigate", json!({ "url": url }));
        if let Some(error) = nav.get("errorText").and_then(Value::as_str) {
            panic!("navigating to {url} failed: {error}");
        }
        self.wait_for(
            &format!(
                "document.readyState === 'complete' && location.href === {} && performance.timeOrigin !== {before}",
                json!(url_with_path(url))
            ),
            LOAD_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{url} did not load: {e}"));
    }

    /// Evaluates `js` in the page (awaiting a returned promise) and returns
    /// its value as JSON (`null` for `undefined`), or the exception it threw.
    pub fn try_eval(&self, js: &str) -> Result<Value, String> {
        let params = json!({ "expression": js, "returnByValue": true, "awaitPromise": true });
        let reply = self.browser.call(Some(&self.session), "Runtime.evaluate", params)?;
        if let Some(details) = reply.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("exception")
                .to_owned();
            return Err(format!("`{js}` threw: {text}"));
        }
        Ok(reply["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// [`try_eval`](Self::try_eval), panicking if `js` throws.
    pub fn eval(&self, js: &str) -> Value {
        self.try_eval(js).unwrap_or_else(|e| panic!("{e}\npage console:\n{}", self.console().join("\n")))
    }

    /// Re-evaluates `condition` every 50 ms until it gives a truthy value
    /// (returned) or `timeout` passes (the error names the last value or
    /// exception).
    pub fn wait_for(&self, condition: &str, timeout: Duration) -> Result<Value, String> {
        wait_until(Instant::now() + timeout, WAIT_POLL, || match self.try_eval(condition) {
            Ok(value) if truthy(&value) => Ok(value),
            Ok(value) => Err(format!("`{condition}` is {value}")),
            Err(e) => Err(e),
        })
    }

    /// Sets the viewport to `width`×`height` CSS pixels (as a phone below
    /// 600 px wide: touch, `device-width` viewport).
    pub fn set_viewport(&self, width: u32, height: u32) {
        let mobile = width < 600;
        self.command(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
    }

    /// Types `text` into the focused element, as an input method would
    /// (one `input` event, no key events).
    pub fn type_text(&self, text: &str) {
        self.command("Input.insertText", json!({ "text": text }));
    }

    /// Presses and releases a key on the focused element: `Enter`, `Escape`
    /// or `Tab`, with real keyboard events (so `keydown` handlers and default
    /// actions run).
    pub fn press_key(&self, key: &str) {
        let (code, text) = match key {
            "Enter" => (13, "\r"),
            "Escape" => (27, ""),
            "Tab" => (9, ""),
            other => panic!("press_key does not know {other:?}"),
        };
        let mut down = json!({ "type": "keyDown", "key": key, "code": key, "windowsVirtualKeyCode": code });
        if !text.is_empty() {
            down["text"] = json!(text);
        }
        self.command("Input.dispatchKeyEvent", down);
        self.command(
            "Input.dispatchKeyEvent",
            json!({ "type": "keyUp", "key": key, "code": key, "windowsVirtualKeyCode": code }),
        );
    }

    /// Saves a PNG of the viewport to `path` (creating its directory).
    pub fn screenshot(&self, path: impl AsRef<Path>) {
        let path = path.as_ref();
        // A background tab may produce no frame to capture until it is shown.
        self.command("Page.bringToFront", json!({}));
        let shot = self.command("Page.captureScreenshot", json!({ "format": "png" }));
        let data = shot["data"].as_str().expect("captureScreenshot returns data");
        let png = base64_decode(data).unwrap_or_else(|e| panic!("screenshot is not base64: {e}"));
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        }
        fs::write(path, png).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// The page's console messages and uncaught exceptions since the last
    /// call, oldest first.
    pub fn console(&self) -> Vec<String> {
        // An empty evaluation drains pending events into the buffer.
        let _ = self.browser.call(Some(&self.session), "Runtime.evaluate", json!({ "expression": "0" }));
        self.browser.take_console(&self.session)
    }

    /// Sends a CDP command for this tab and returns its result; panics on a
    /// protocol error.
    pub fn command(&self, method: &str, params: Value) -> Value {
        self.browser.call(Some(&self.session), method, params).unwrap_or_else(|e| panic!("{method}: {e}"))
    }
}

impl Drop for Page<'_> {
    fn drop(&mut self) {
        let _ = self.browser.call(None, "Target.closeTarget", json!({ "targetId": self.target_id }));
    }
}

/// The blocking DevTools WebSocket.
struct Connection {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Console lines per session id.
    console: HashMap<String, Vec<String>>,
}

impl Connection {
    fn open(addr: SocketAddr, path: &str) -> Result<Connection, String> {
        let stream = TcpStream::connect_timeout(&addr, COMMAND_TIMEOUT).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(COMMAND_TIMEOUT)).map_err(|e| e.to_string())?;
        let (socket, _) =
            tungstenite::client(format!("ws://{addr}{path}"), stream).map_err(|e| format!("handshake: {e}"))?;
        // From now on reads are sliced so deadlines are checked (tungstenite
        // keeps partial frames across WouldBlock).
        socket.get_ref().set_read_timeout(Some(READ_SLICE)).map_err(|e| e.to_string())?;
        Ok(Connection { socket, next_id: 0, console: HashMap::new() })
    }

    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            request["sessionId"] = json!(session);
        }
        self.socket.send(Message::text(request.to_string())).map_err(|e| format!("send {method}: {e}"))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let text = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(frame)) => return Err(format!("chromium closed the connection: {frame:?}")),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    if Instant::now() >= deadline {
                        return Err(format!("{method}: no answer within {COMMAND_TIMEOUT:?}"));
                    }
                    continue;
                }
                Err(e) => return Err(format!("{method}: {e}")),
            };
            let frame: Value = serde_json::from_str(text.as_str()).map_err(|e| format!("bad CDP frame: {e}"))?;
            if frame.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(error) = frame.get("error") {
                    return Err(format!("{method} failed: {error}"));
                }
                return Ok(frame.get("result").cloned().unwrap_or(Value::Null));
            }
            self.event(&frame);
        }
    }

    /// Keeps console output and uncaught exceptions of a page.
    fn event(&mut self, frame: &Value) {
        let Some(session) = frame.get("sessionId").and_then(Value::as_str) else {
            return;
        };
        let params = &frame["params"];
        let line = match frame["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .map(|args| {
                        args.iter()
                            .map(|a| match a.get("value") {
                                Some(Value::String(s)) => s.clone(),
                                Some(v) => v.to_string(),
                                None => a["description"].as_str().unwrap_or("?").to_owned(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                format!("console.{}: {}", params["type"].as_str().unwrap_or("log"), args.join(" "))
            }
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"].as_str().or_else(|| details["text"].as_str());
                format!("uncaught: {}", text.unwrap_or("exception"))
            }
            _ => return,
        };
        let lines = self.console.entry(session.to_owned()).or_default();
        if lines.len() == MAX_CONSOLE_LINES {
            lines.remove(0);
        }
        lines.push(line);
    }
}

/// JavaScript truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `url` as `location.href` reports it: `http://host:port` gains a `/`.
fn url_with_path(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) if !rest.contains('/') => format!("{url}/"),
        _ => url.to_owned(),
    }
}

/// Decodes standard base64 (with or without padding).
fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    fn sextet(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        if chunk.len() == 1 {
            return Err("truncated input".to_owned());
        }
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = sextet(c).ok_or_else(|| format!("bad character {:?}", c as char))?;
            acc |= v << (18 - 6 * i);
        }
        let decoded = acc.to_be_bytes();
        out.extend_from_slice(&decoded[1..chunk.len()]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n");
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
    }

    #[test]
    fn js_truthiness() {
        assert!(!truthy(&Value::Null));
        assert!(!truthy(&json!(0)));
        assert!(!truthy(&json!("")));
        assert!(truthy(&json!("x")));
        assert!(truthy(&json!([])));
    }

    #[test]
    fn href_of_a_bare_origin_has_a_slash() {
        assert_eq!(url_with_path("http://127.0.0.1:80"), "http://127.0.0.1:80/");
        assert_eq!(url_with_path("http://127.0.0.1:80/x"), "http://127.0.0.1:80/x");
        assert_eq!(url_with_path("about:blank"), "about:blank");
    }
}
