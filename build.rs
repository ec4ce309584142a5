//! Build script of the `wfpmon` driver: `wdk-build` derives the compiler and
//! linker configuration of a WDM kernel image from the WDK it finds.
//!
//! One addition: the `tracelogging` crate (ETW) declares `UuidCreate` in an
//! `extern` block with `#[link(name = "rpcrt4")]` (for `Guid::new`, a
//! user-mode helper a driver never calls), so the linker is asked to open
//! `rpcrt4.lib`, a user-mode library that no kernel link has on its path.
//! This script puts an empty archive of that name on the library path: the
//! link opens it and takes nothing from it. Should anything ever call
//! `UuidCreate`, the link fails with an unresolved symbol instead of
//! importing from a user-mode DLL (the image tests also check that the
//! image imports from kernel modules only).

use std::path::PathBuf;
use std::{env, fs};

fn main() -> Result<(), wdk_build::ConfigError> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let stub_dir = out_dir.join("link-stubs");
    fs::create_dir_all(&stub_dir).expect("OUT_DIR is writable");
    // An empty COFF archive: the signature alone.
    fs::write(stub_dir.join("rpcrt4.lib"), b"!<arch>\n").expect("OUT_DIR is writable");
    println!("cargo:rustc-link-search=native={}", stub_dir.display());
    // Mark the image CET shadow-stack compatible (an
    // IMAGE_DEBUG_TYPE_EX_DLLCHARACTERISTICS debug directory entry with
    // IMAGE_DLLCHARACTERISTICS_EX_CET_COMPAT): Windows 11's kernel-mode
    // hardware-enforced stack protection treats unmarked drivers as
    // incompatible. MSVC's link.exe (Visual Studio 2019 and later) and
    // lld-link both take the option; being here, it reaches the Windows
    // (`cargo make`) and the Linux build alike. tests/image checks the entry.
    println!("cargo:rustc-cdylib-link-arg=/CETCOMPAT");
    wdk_build::configure_wdk_binary_build()
}
