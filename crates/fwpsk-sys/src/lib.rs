//! Raw declarations of the kernel-mode Windows Filtering Platform (WFP)
//! callout API: the parts of `fwpsk.h`, `fwpstypes.h` and `fwptypes.h` a
//! callout driver needs to register callouts, read what `classifyFn`
//! receives, associate flow contexts and recognise its own injected
//! packets, plus read-only views of the NDIS `NET_BUFFER_LIST` /
//! `NET_BUFFER` headers for counting bytes.
//!
//! Everything is re-exported flat at the crate root under its C name
//! (`FWPS_CALLOUT1`, `FwpsCalloutRegister1`, `FWPS_LAYER_STREAM_V4`, ...);
//! the modules only group the declarations and carry their sources.
//!
//! # Why hand-written
//!
//! No crate on crates.io binds `fwpsk.h`: `wdk-sys` generates bindings for
//! a fixed set of WDK headers that does not include it, and `windows-sys`
//! only covers the management API (`Fwpm*`), linking those functions (all
//! but three BFE-state ones) to the **user-mode** `fwpuclnt.dll`, and
//! declares no `Fwps*` function at all. A
//! kernel driver must call the `Fwps*` functions of `fwpkclnt.sys`. So the
//! declarations are written here by hand from Microsoft's reference
//! documentation (learn.microsoft.com: the WDK "fwpsk.h" reference and the
//! Windows SDK "fwpstypes.h" / "fwptypes.h" references, whose sources are
//! the `MicrosoftDocs/windows-driver-docs-ddi` and `MicrosoftDocs/sdk-api`
//! repositories), cross-checked against the `windows-sys` metadata for the
//! constants it shares and against a public preprocessed copy of the WDK
//! headers for enumeration order. Each item's doc comment names the page or
//! header it comes from.
//!
//! The crate is `#![no_std]` and has no dependencies, so it builds and runs
//! its layout tests on any host; other WFP drivers can depend on it
//! alongside whatever WDK binding they use.
//!
//! # Layout guarantees
//!
//! Every structure is `#[repr(C)]` with fixed-width fields (`ULONG` is
//! `u32`: Windows is LLP64, so `core::ffi::c_ulong` is never used), no bit
//! fields, and C enumerations as `i32`. Next to each structure a
//! `const` block, compiled when `target_pointer_width = "64"`, asserts its
//! size, alignment and the offset of every field against the values of the
//! documented C definition on x64 (the arithmetic is in comments where it
//! is not obvious). These asserts run on the Linux host and on
//! `x86_64-pc-windows-msvc` alike, since `repr(C)` with these field types
//! lays out the same on both.
//!
//! # Linking
//!
//! The functions are declared in an `unsafe extern "system"` block that,
//! on Windows targets, carries
//! `#[link(name = "fwpkclnt.sys", kind = "raw-dylib", modifiers = "+verbatim")]`:
//! rustc emits the import table entries for `fwpkclnt.sys` itself, so no
//! import library (`fwpkclnt.lib`) is needed at link time. `+verbatim`
//! keeps the `.sys` name; without it the import would name
//! `fwpkclnt.sys.dll`. On other targets nothing is linked.
//!
//! # Safety and IRQL
//!
//! All functions are `unsafe`: their contracts (valid pointers, object
//! lifetimes, IRQL) cannot be checked by the compiler. Each function's
//! documentation states its IRQL and return values from its reference page:
//!
//! | function | IRQL |
//! |---|---|
//! | [`FwpsCalloutRegister1`] | `PASSIVE_LEVEL` |
//! | [`FwpsCalloutUnregisterById0`] | `PASSIVE_LEVEL` |
//! | [`FwpsFlowAssociateContext0`] | `<= DISPATCH_LEVEL` |
//! | [`FwpsFlowRemoveContext0`] | `<= DISPATCH_LEVEL` |
//! | [`FwpsInjectionHandleCreate0`] | `PASSIVE_LEVEL` |
//! | [`FwpsInjectionHandleDestroy0`] | `PASSIVE_LEVEL` |
//! | [`FwpsQueryPacketInjectionState0`] | `<= DISPATCH_LEVEL` |
//!
//! The callbacks ([`FWPS_CALLOUT_CLASSIFY_FN1`], [`FWPS_CALLOUT_NOTIFY_FN1`],
//! [`FWPS_CALLOUT_FLOW_DELETE_NOTIFY_FN0`]) are called at
//! `<= DISPATCH_LEVEL`, concurrently on several processors.
//!
//! The structures the engine passes in (`FWPS_INCOMING_VALUES0`,
//! `FWPS_INCOMING_METADATA_VALUES0`, `FWPS_FILTER1`, the stream packet and
//! the net buffer lists) are owned by the engine and valid only during the
//! callback. Read a metadata member only if its bit is present
//! ([`FWPS_IS_METADATA_FIELD_PRESENT`]) and a data field only if its index
//! is below `valueCount` ([`FWPS_INCOMING_VALUES0::value`]).
//!
//! # What is left out or uncertain
//!
//! * Only the Windows Vista run-time layers (ids 0..=55) are declared; later
//!   layers changed position between WDK versions.
//! * `*_MAX` of the field enumerations is that of the newest documented
//!   header and grows with the WDK; check `valueCount`.
//! * The `FWPS_STREAM_FLAG_*` and `FWPS_INJECTION_TYPE_*` values are the
//!   header `#define`s; Microsoft's pages document the names and meanings
//!   but not the numbers.
//! * Pointers to types not declared here (`DEVICE_OBJECT`,
//!   `NET_BUFFER_LIST`, `MDL`, `SID`, `WSACMSGHDR`, `SOCKADDR`,
//!   `FWPM_PROVIDER_CONTEXT1`) are `c_void` pointers.

#![cfg_attr(not(test), no_std)]
// The C names are kept on purpose, so that code reads like the WDK samples.
#![allow(non_camel_case_types, non_snake_case)]
#![allow(clippy::upper_case_acronyms)]

pub mod callout;
pub mod classify;
pub mod fields;
pub mod functions;
pub mod inet;
pub mod injection;
pub mod layers;
pub mod metadata;
pub mod ndis;
pub mod status;
pub mod stream;
pub mod types;

pub use callout::*;
pub use classify::*;
pub use fields::*;
pub use functions::*;
pub use inet::*;
pub use injection::*;
pub use layers::*;
pub use metadata::*;
pub use ndis::*;
pub use status::*;
pub use stream::*;
pub use types::*;
