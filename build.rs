//! Build script of the `wfpmon` driver: `wdk-build` derives the compiler and
//! linker configuration of a WDM kernel image from the WDK it finds.

fn main() -> Result<(), wdk_build::ConfigError> {
    wdk_build::configure_wdk_binary_build()
}
