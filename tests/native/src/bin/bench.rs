//! Native benchmarks (see the README).

#[cfg(target_os = "linux")]
fn main() {
    println!("todo");
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("wfpmon-native-bench runs on Linux only");
}
