//! Running `dbsnap` on a pseudo-terminal, as a user at a terminal would:
//! standard input, output and error are the terminal (and it is the
//! controlling terminal, so prompts that open `/dev/tty` work too). The
//! test waits for text on the screen, types answers, and reads everything
//! that was shown.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command running on a pseudo-terminal.
pub struct Pty {
    child: Child,
    input: File,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// How long [`Pty::expect`] waits by default.
pub const WAIT: Duration = Duration::from_secs(60);

impl Pty {
    /// Starts `cmd` on a new 160x50 terminal.
    pub fn spawn(cmd: Command) -> Pty {
        let size = nix::pty::Winsize {
            ws_row: 50,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&size, None).expect("openpty");
        let slave: OwnedFd = pty.slave;
        let mut cmd = in_new_session(&cmd);
        cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .env("TERM", "xterm-256color");
        let child = cmd.spawn().expect("start dbsnap on a terminal");
        drop(cmd); // closes the parent's copies of the terminal's slave side
        let master = File::from(pty.master);
        let mut output = master.try_clone().unwrap();
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = screen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the child and its descendants closed the terminal.
            while let Ok(n) = output.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            input: master,
            screen,
            reader: Some(reader),
        }
    }

    /// Everything written to the terminal so far, escape codes included.
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Everything written so far as plain text (escape codes removed).
    pub fn text(&self) -> String {
        strip_ansi(&self.raw())
    }

    /// Waits until the plain text shown so far contains `needle`; panics
    /// with the screen if it does not appear in time.
    pub fn expect(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            if start.elapsed() > WAIT {
                panic!("timed out waiting for {needle:?}; the terminal shows:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `keys` (use `\r` for Enter).
    pub fn send(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    /// Waits for the command to end; returns its exit code and the plain
    /// text it showed.
    pub fn wait(self) -> (i32, String) {
        let (code, raw) = self.wait_raw();
        (code, strip_ansi(&raw))
    }

    /// Waits for the command to end; returns its exit code and everything
    /// it wrote to the terminal, escape codes included.
    pub fn wait_raw(mut self) -> (i32, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > WAIT * 3 {
                let _ = self.child.kill();
                panic!("dbsnap did not end; the terminal shows:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status.code().unwrap_or(-1), self.raw())
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `cmd` run by util-linux `setsid --ctty`: a new session whose
/// controlling terminal is its standard input (prompts open `/dev/tty`).
fn in_new_session(cmd: &Command) -> Command {
    let mut wrapped = Command::new("setsid");
    // The test's own environment says nothing about this terminal.
    wrapped.env_remove("NO_COLOR");
    wrapped
        .arg("--ctty")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        wrapped.current_dir(d);
    }
    wrapped
}

/// `s` without ANSI escape sequences (CSI, OSC) and carriage returns.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
