//! Build script of the `wfpmon` driver: `wdk-build` derives the compiler and
//! linker configuration of a WDM kernel image from the WDK it finds.
//!
//! One addition: the `tracelogging` crate (ETW) declares `UuidCreate` in an
//! `extern` block with `#[link(name = "rpcrt4")]` (for `Guid::new`, a
//! user-mode helper a driver never calls), so the linker is asked to open
//! `rpcrt4.lib`, a user-mode library that the Linux build has nowhere on its
//! path. On a build host other than Windows, this script puts an empty
//! archive of that name on the library path: the link opens it and takes
//! nothing from it. Should anything ever call `UuidCreate`, that link fails
//! with an unresolved symbol instead of importing from a user-mode DLL. A
//! Windows host links against the SDK's real library instead, where such a
//! call would link; the image tests (tests/image), which check that the
//! Linux-built image imports from kernel modules only, cover the same code.

use std::path::PathBuf;
use std::{env, fs};

fn main() -> Result<(), wdk_build::ConfigError> {
    // The stub is for a build host that is not Windows (the Linux build,
    // scripts/linux). On a Windows host (VS Developer prompt, eWDK) `LIB`
    // holds the SDK's real um\x64\rpcrt4.lib, and a stub on the
    // /LIBPATH, which is searched before `LIB`, would shadow it: rust-lld
    // takes the empty archive, MSVC link.exe may reject it (LNK4003, LNK1107).
    //
    // Host, not target: a build script is compiled for and run on the build
    // host, so `cfg!(windows)` and cargo's `HOST` variable both describe the
    // machine that links, while `CARGO_CFG_TARGET_OS` describes the image
    // (`windows` on Linux and on Windows alike) and cannot tell the two
    // apart. `HOST` is read rather than `cfg!(windows)` so that
    // tests/image/test_build_script.py can run this compiled script with
    // either host and check both outcomes.
    let host = env::var("HOST").expect("cargo sets HOST for build scripts");
    if !host.split('-').any(|part| part == "windows") {
        let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        let stub_dir = out_dir.join("link-stubs");
        fs::create_dir_all(&stub_dir).expect("OUT_DIR is writable");
        // An empty COFF archive: the signature alone.
        fs::write(stub_dir.join("rpcrt4.lib"), b"!<arch>\n").expect("OUT_DIR is writable");
        println!("cargo:rustc-link-search=native={}", stub_dir.display());
    }
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
