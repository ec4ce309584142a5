//! `wfpmon-export check-config` run as a program: the collector probe and
//! its exit code (8), on this system's sockets.

use std::process::Command;

fn check_config(dir: &std::path::Path, toml: &str) -> (i32, String) {
    let path = dir.join("wfpmon-export.toml");
    std::fs::write(&path, toml).expect("configuration written");
    let out = Command::new(env!("CARGO_BIN_EXE_wfpmon-export"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .expect("wfpmon-export runs");
    (
        out.status.code().expect("an exit code"),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_config_probes_a_tcp_collector_and_exits_8_when_it_is_unreachable() {
    let dir = std::env::temp_dir().join(format!("wfpmon-export-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("directory");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let tcp = format!("[collector]\naddress = \"127.0.0.1:{port}\"\ntransport = \"tcp\"\n");

    let (code, out) = check_config(&dir, &tcp);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accepts connections"), "{out}");

    drop(listener);
    let (code, out) = check_config(&dir, &tcp);
    assert_eq!(code, 8, "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{port}")) && out.contains("refused"),
        "{out}"
    );

    // UDP to the same closed port: valid, and said not to be probed.
    let udp = format!("[collector]\naddress = \"127.0.0.1:{port}\"\n");
    let (code, out) = check_config(&dir, &udp);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not probed"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
