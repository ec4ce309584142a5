//! `wfpmonctl top` in a real terminal: the view code built for Linux,
//! driven by the real `wfpmon.sys` on the native host with traffic running
//! on threads (the `wfpmon-native-top` binary), inside tmux — a shell in a
//! 120×40 window, keys sent with `send-keys`, screens read with
//! `capture-pane -p`. Every screen read is asserted and printed into the
//! test log (`scripts/test.sh` runs this test with `--nocapture`).
//!
//! Checked: program names and non-zero rates on the first screen, the
//! sort order after a key, a filter applied, a bad CIDR explained, the
//! connections tab with new and ended connections marked, the events tab,
//! an unknown key's hint, the help, pause, a resize and a terminal too
//! small, quit giving back the shell with the terminal restored (`stty`
//! shows canonical mode and echo again), the same after the driver fails
//! (the error and its exit code shown after the view), and a panic inside the view
//! restoring the terminal before it is reported (the process then aborts:
//! the workspace builds with `panic = "abort"`).
//!
//! Without the image or without tmux the test prints `SKIPPED: …` and
//! passes; `scripts/test.sh` builds the image and checks for tmux first.

#![cfg(target_os = "linux")]

use std::process::Command;
use std::time::{Duration, Instant};

use wfpmon_native_host::image_present;

/// A tmux server of our own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("tmux {args:?}: {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends `keys` as tmux key names (`Enter`, `Escape`, `C-u`, …).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "top", "-l", text]);
    }

    fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Waits (up to 20 s) for a screen `ok` accepts; prints it under
    /// `title` and returns it.
    fn wait_for(&self, title: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if ok(&screen) {
                eprintln!(
                    "---- {title} ({:.1} s) ----\n{}",
                    start.elapsed().as_secs_f64(),
                    screen.trim_end()
                );
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{title}: not seen within 20 s; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn tmux_present() -> bool {
    if Command::new("tmux").arg("-V").output().is_ok() {
        return true;
    }
    let message = "SKIPPED: tmux is not installed (scripts/linux/setup.sh installs it)";
    println!("{message}");
    eprintln!("{message}");
    false
}

/// The table rows of a screen: the lines after the header line (the one
/// with `IN/s`) that begin with a row's mark column (` `, `+` or `-`,
/// then a space) — not the status line.
fn rows(screen: &str) -> Vec<&str> {
    let lines: Vec<&str> = screen.lines().collect();
    let Some(header) = lines.iter().position(|l| l.contains("IN/s")) else {
        return Vec::new();
    };
    lines[header + 1..]
        .iter()
        .copied()
        .filter(|l| {
            let mut chars = l.chars();
            matches!(chars.next(), Some(' ' | '+' | '-')) && chars.next() == Some(' ')
        })
        .filter(|l| !l.trim().is_empty() && !l.contains("? help"))
        .collect()
}

/// The rate cells (`12.5 MiB/s`, `0 B/s`) of a line.
fn rates(line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[1].ends_with("/s") && w[0].parse::<f64>().is_ok())
        .map(|w| format!("{} {}", w[0], w[1]))
        .collect()
}

fn nonzero(rate: &str) -> bool {
    rate.split_whitespace()
        .next()
        .and_then(|n| n.parse::<f64>().ok())
        .is_some_and(|n| n > 0.0)
}

#[test]
fn top_in_tmux_against_the_real_driver() {
    if !image_present() || !tmux_present() {
        return;
    }
    let binary = env!("CARGO_BIN_EXE_wfpmon-native-top");
    let image = wfpmon_native_host::image_path();
    let tmux = Tmux {
        socket: format!("wfpmon-top-{}", std::process::id()),
    };
    tmux.run(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        "-s",
        "top",
        "-e",
        "PS1=$ ",
        "bash --norc --noprofile",
    ]);
    tmux.type_text(&format!(
        "WFPMON_SYS={} {binary} --interval 0.5; echo top-exit=$?",
        image.display()
    ));
    tmux.keys(&["Enter"]);

    programs_sort_and_filter(&tmux);
    tabs_and_keys(&tmux);
    resize(&tmux);
    quit_and_panic(&tmux, binary, &image.display().to_string());
}

/// The programs tab: names, rates, a sort key, filters.
fn programs_sort_and_filter(tmux: &Tmux) {
    // Programs, largest IN/s first, with rates from the first screen.
    let screen = tmux.wait_for("programs", |s| {
        let r = rows(s);
        s.contains("wfpmonctl top") && r.len() >= 3 && r.iter().any(|l| l.contains("backup.exe"))
    });
    let r = rows(&screen);
    assert!(
        r[0].contains("browser.exe"),
        "largest IN/s first:\n{screen}"
    );
    for program in ["browser.exe", "backup.exe", "svchost.exe"] {
        let line = r
            .iter()
            .find(|l| l.contains(program))
            .unwrap_or_else(|| panic!("{program}:\n{screen}"));
        let cells = rates(line);
        assert_eq!(cells.len(), 2, "IN/s and OUT/s of {program}: {line}");
        assert!(
            cells.iter().any(|c| nonzero(c)),
            "{program} moves data: {line}"
        );
    }
    assert!(nonzero(&rates(r[0])[0]), "browser receives: {}", r[0]);

    // > : sort by OUT/s: backup.exe first.
    tmux.keys(&[">"]);
    tmux.wait_for("sorted by OUT/s", |s| {
        s.contains("OUT/s▼") && rows(s).first().is_some_and(|l| l.contains("backup.exe"))
    });

    // / filter by name.
    tmux.keys(&["/"]);
    tmux.type_text("backup");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("filter: backup", |s| {
        s.contains("filter: backup") && !rows(s).is_empty()
    });
    assert!(
        rows(&screen).iter().all(|l| l.contains("backup.exe")),
        "{screen}"
    );
    assert!(!screen.contains("browser.exe"), "{screen}");

    // A bad CIDR is explained; Esc keeps the previous filter.
    tmux.keys(&["/", "C-u"]);
    tmux.type_text("10.0.0.0/33");
    tmux.keys(&["Enter"]);
    tmux.wait_for("bad CIDR", |s| {
        s.contains("bad CIDR '10.0.0.0/33': the prefix length must be 0 to 32")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter kept", |s| {
        s.contains("filter: backup") && !s.contains("bad CIDR")
    });
    // A CIDR that matches every connection (the host's remotes are in
    // 192.168.0.0/16), then no filter.
    tmux.keys(&["/", "C-u"]);
    tmux.type_text("192.168.0.0/16");
    tmux.keys(&["Enter"]);
    tmux.wait_for("filter 192.168.0.0/16", |s| {
        s.contains("filter: 192.168.0.0/16")
            && s.contains("browser.exe")
            && s.contains("svchost.exe")
    });
    tmux.keys(&["/", "C-u", "Enter"]);
    tmux.wait_for("no filter", |s| {
        s.contains("filter cleared") && s.contains("browser.exe")
    });
}

/// The connections and events tabs, an unknown key, the help, pause.
fn tabs_and_keys(tmux: &Tmux) {
    // Connections: a new curl.exe connection marked +, an ended one -.
    tmux.keys(&["c"]);
    tmux.wait_for("connections: a new one", |s| {
        s.contains("REMOTE")
            && rows(s)
                .iter()
                .any(|l| l.starts_with('+') && l.contains("curl.exe"))
    });
    tmux.wait_for("connections: an ended one", |s| {
        rows(s)
            .iter()
            .any(|l| l.starts_with('-') && l.contains("curl.exe"))
    });

    // Events: established and ended, from the driver's ring.
    tmux.keys(&["e"]);
    tmux.wait_for("events", |s| {
        let r = rows_events(s);
        r.iter()
            .any(|l| l.contains("established") && l.contains("curl.exe"))
            && r.iter()
                .any(|l| l.contains("ended") && l.contains("curl.exe"))
    });

    // An unknown key, the help, pause.
    tmux.keys(&["p", "z"]);
    tmux.wait_for("unknown key", |s| {
        s.contains("unknown key 'z': press ? for the list of keys")
    });
    tmux.keys(&["?"]);
    tmux.wait_for("help", |s| {
        s.contains("wfpmonctl top: keys")
            && s.contains("sort by the column left / right")
            && s.contains("q, Esc, Ctrl+C")
    });
    tmux.keys(&["x"]);
    tmux.wait_for("help closed", |s| {
        !s.contains("wfpmonctl top: keys") && s.contains("browser.exe")
    });
    tmux.keys(&["Space"]);
    let paused = tmux.wait_for("paused", |s| s.contains("PAUSED"));
    std::thread::sleep(Duration::from_millis(1200));
    let still = tmux.capture();
    assert_eq!(
        rows(&paused),
        rows(&still),
        "nothing refreshes while paused"
    );
    tmux.keys(&["Space"]);
    tmux.wait_for("resumed", |s| !s.contains("PAUSED"));
}

/// A narrower terminal, one too small, and back.
fn resize(tmux: &Tmux) {
    // Resize: narrower, too small, back.
    tmux.run(&["resize-window", "-t", "top", "-x", "70", "-y", "24"]);
    let narrow = tmux.wait_for("resized to 70×24", |s| {
        s.lines().count() <= 24 && s.contains("IN/s") && s.contains("browser.exe")
    });
    assert!(narrow.lines().all(|l| l.chars().count() <= 70), "{narrow}");
    tmux.run(&["resize-window", "-t", "top", "-x", "50", "-y", "12"]);
    tmux.wait_for("too small", |s| {
        s.contains("The terminal is too small (50×12)")
    });
    tmux.run(&["resize-window", "-t", "top", "-x", "120", "-y", "40"]);
    tmux.wait_for("back to 120×40", |s| {
        s.contains("browser.exe") && !s.contains("too small")
    });
}

/// Quit, a failing driver and a panic: the shell is back each time, the
/// terminal restored.
fn quit_and_panic(tmux: &Tmux, binary: &str, image: &str) {
    // Quit: the shell is back, the terminal restored.
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("quit", |s| printed(s, "top-exit=").is_some());
    assert_eq!(printed(&screen, "top-exit="), Some("0"), "{screen}");
    assert!(
        !screen.contains("wfpmonctl top │"),
        "the alternate screen is gone:\n{screen}"
    );
    assert!(
        screen.contains("driver unloaded, run checked: no rule broken"),
        "{screen}"
    );
    check_terminal_restored(tmux, "after q");

    // The driver failing: the view ends, the terminal is restored, then
    // the tool's error and exit code.
    tmux.run(&["send-keys", "-t", "top", "clear", "Enter"]);
    tmux.type_text(&format!(
        "WFPMON_SYS={image} {binary} --fail-test --interval 0.5; echo fail-exit=$?"
    ));
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("a failing driver", |s| printed(s, "fail-exit=").is_some());
    assert_eq!(printed(&screen, "fail-exit="), Some("1"), "{screen}");
    assert!(
        screen.contains(
            "wfpmonctl: error: reading the driver's flow list failed [DeviceIoControl(IOCTL_WFPMON_LIST_FLOWS) failed: Win32 error 21"
        ),
        "{screen}"
    );
    assert!(!screen.contains("wfpmonctl top │"), "{screen}");
    check_terminal_restored(tmux, "after the error");

    // A panic inside the view: the terminal is restored, then the panic
    // is reported and the process aborts (the workspace's panic = "abort").
    tmux.run(&["send-keys", "-t", "top", "clear", "Enter"]);
    tmux.type_text(&format!(
        "WFPMON_SYS={image} {binary} --panic-test --interval 0.5; echo panic-exit=$?"
    ));
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("panic", |s| printed(s, "panic-exit=").is_some());
    assert_eq!(
        printed(&screen, "panic-exit="),
        Some("134"),
        "SIGABRT:\n{screen}"
    );
    assert!(
        screen.contains("--panic-test: naming process 6666 panics inside the view"),
        "the panic is reported on the main screen:\n{screen}"
    );
    assert!(!screen.contains("wfpmonctl top │"), "{screen}");
    check_terminal_restored(tmux, "after the panic");
}

/// What follows `prefix` on a line that begins with it (a line the shell
/// printed, not the command line that contains it).
fn printed<'a>(screen: &'a str, prefix: &str) -> Option<&'a str> {
    screen
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::trim)
}

/// Rows of the events tab (its header has no `IN/s`).
fn rows_events(screen: &str) -> Vec<&str> {
    let lines: Vec<&str> = screen.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.contains("EVENT"))
        .unwrap_or(lines.len());
    lines.get(header + 1..).unwrap_or_default().to_vec()
}

/// The shell's terminal is in canonical mode with echo (not raw), and the
/// main screen shows what is typed.
fn check_terminal_restored(tmux: &Tmux, when: &str) {
    tmux.keys(&["C-l"]);
    tmux.type_text("stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '; echo stty-$((1+1))");
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for(&format!("stty {when}"), |s| s.contains("stty-2"));
    let line = screen
        .lines()
        .find(|l| l.trim_end().ends_with("stty-2") && !l.contains("grep"))
        .unwrap_or_default();
    assert!(
        line.contains("icanon")
            && line.contains("echo")
            && !line.contains("-icanon")
            && !line.contains("-echo"),
        "{when}: the terminal is not restored: {line:?}\n{screen}"
    );
}
