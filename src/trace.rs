//! Diagnostics the Windows way: one `TraceLogging` (ETW) provider, `wfpmon`.
//!
//! The `tracelogging` crate (microsoft/tracelogging, feature `kernel_mode`)
//! builds each event's metadata at compile time and writes it with
//! `EtwWriteTransfer`; a write costs one check of a level and keyword mask
//! when no session listens. Its provider GUID is derived from the name
//! exactly as `TraceLogging` does (`define_provider!`), so `wpr`, `logman`,
//! `tracelog` and `netsh trace` can enable it as `wfpmon` or by GUID (listed
//! in the README and `docs/windows.md`).
//!
//! Keywords select what a session collects:
//! - [`keyword::LIFECYCLE`]: `DriverEntry` steps and statuses, each
//!   unregistration attempt with its status, removal passes with counts,
//!   waits, the end of teardown (`PASSIVE_LEVEL`, rare);
//! - [`keyword::ERRORS`]: failures, including per-flow failures summed up at
//!   teardown (never an event per failed flow);
//! - [`keyword::FLOWS`]: one event per flow established and per flow ended
//!   (with its final counters) — `DISPATCH_LEVEL`, written only when a
//!   session asked for this keyword.
//!
//! Nothing here is on the per-packet path.
//!
//! Lifetime: [`Registration`] registers the provider first thing in
//! `DriverEntry` and unregisters it when dropped — last in the one teardown
//! (a failed `DriverEntry` and Unload alike): a provider left registered
//! after the image unloads is a bugcheck the next time a session enables it
//! (ETW would call an enable callback in freed code). A failed registration
//! does not fail the driver; the events are then no-ops.

use tracelogging as tlg;
use wfpmon_core::catalog::AddressFamily;
use wfpmon_core::flow::{Direction, FlowRecord, FlowTuple, Traffic};
use wfpmon_core::protocol::Stats;

tlg::define_provider!(PROVIDER, "wfpmon");

/// Event keywords (bit masks a session enables).
pub mod keyword {
    /// Driver lifecycle: `DriverEntry`, unregistration, teardown.
    pub const LIFECYCLE: u64 = 0x1;
    /// Failures (summarised).
    pub const ERRORS: u64 = 0x2;
    /// Flow established / ended.
    pub const FLOWS: u64 = 0x4;
}

/// The provider's registration; unregisters on drop (see the module docs).
pub struct Registration {
    _private: (),
}

impl Registration {
    /// Registers the provider (`EtwRegister`). `PASSIVE_LEVEL`, once, first
    /// in `DriverEntry`. A failure is logged and otherwise ignored.
    pub fn register() -> Self {
        // SAFETY: the provider is unregistered by `Drop` below, which the
        // lifecycle runs last in every teardown, before the image can be
        // unloaded; DriverEntry registers once (no concurrent register or
        // unregister: DriverEntry and Unload are serialised).
        let status = unsafe { PROVIDER.register() };
        crate::kernel::log!("EtwRegister(wfpmon) -> {status:#x}");
        Self { _private: () }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        tlg::write_event!(
            PROVIDER,
            "TeardownComplete",
            level(Informational),
            keyword(keyword::LIFECYCLE),
        );
        let status = PROVIDER.unregister();
        crate::kernel::log!("EtwUnregister(wfpmon) -> {status:#x}");
    }
}

/// An NTSTATUS as the 32-bit pattern Windows documentation prints (written
/// with the `TraceLogging` `NTSTATUS` format, so decoders show its name).
#[allow(clippy::cast_sign_loss)] // the bit pattern
const fn bits(status: i32) -> u32 {
    status as u32
}

/// `DriverEntry` began.
pub fn driver_entry() {
    tlg::write_event!(
        PROVIDER,
        "DriverEntry",
        level(Informational),
        keyword(keyword::LIFECYCLE),
    );
}

/// One `DriverEntry` step (a kernel or engine call) and its status.
pub fn step(call: &str, status: i32) {
    tlg::write_event!(
        PROVIDER,
        "DriverEntryStep",
        level(Informational),
        keyword(keyword::LIFECYCLE),
        str8("Call", call),
        u32("Status", &bits(status), format(NtStatus)),
    );
}

/// `FwpsCalloutRegister1` for one callout.
pub fn callout_registered(callout: &str, id: u32, status: i32) {
    tlg::write_event!(
        PROVIDER,
        "CalloutRegister",
        level(Informational),
        keyword(keyword::LIFECYCLE),
        str8("Callout", callout),
        u32("CalloutId", &id),
        u32("Status", &bits(status), format(NtStatus)),
    );
}

/// `DriverEntry` ended: `STATUS_SUCCESS`, or the failing step's status after
/// everything was undone.
pub fn driver_entry_done(failed_call: Option<&str>, status: i32) {
    match failed_call {
        None => {
            tlg::write_event!(
                PROVIDER,
                "DriverEntryComplete",
                level(Informational),
                keyword(keyword::LIFECYCLE),
                u32("Status", &bits(status), format(NtStatus)),
            );
        }
        Some(call) => {
            tlg::write_event!(
                PROVIDER,
                "DriverEntryFailed",
                level(Error),
                keyword(keyword::LIFECYCLE | keyword::ERRORS),
                str8("Call", call),
                u32("Status", &bits(status), format(NtStatus)),
            );
        }
    }
}

/// The unload routine was called.
pub fn unload() {
    tlg::write_event!(
        PROVIDER,
        "Unload",
        level(Informational),
        keyword(keyword::LIFECYCLE),
    );
}

/// Teardown began: the counters of the driver's life, with the per-flow
/// failures classify counted instead of logging them.
pub fn teardown_begins(totals: &Stats) {
    tlg::write_event!(
        PROVIDER,
        "TeardownBegins",
        level(Informational),
        keyword(keyword::LIFECYCLE),
        u64("FlowsTracked", &totals.flows_tracked),
        u64("FlowsDeleted", &totals.flows_deleted),
    );
    if totals.allocation_failures + totals.association_failures > 0 {
        tlg::write_event!(
            PROVIDER,
            "FlowFailures",
            level(Warning),
            keyword(keyword::ERRORS),
            u64("AllocationFailures", &totals.allocation_failures),
            u64("AssociationFailures", &totals.association_failures),
        );
    }
}

/// One `FwpsCalloutUnregisterById0` call.
pub fn unregister_attempt(callout: &str, id: u32, attempt: u32, status: i32) {
    tlg::write_event!(
        PROVIDER,
        "CalloutUnregisterAttempt",
        level(Verbose),
        keyword(keyword::LIFECYCLE),
        str8("Callout", callout),
        u32("CalloutId", &id),
        u32("Attempt", &attempt),
        u32("Status", &bits(status), format(NtStatus)),
    );
}

/// What one removal pass's `FwpsFlowRemoveContext0` calls answered.
pub struct RemovalCounts {
    /// `STATUS_SUCCESS`.
    pub removed: u32,
    /// `STATUS_PENDING`.
    pub pending: u32,
    /// `STATUS_UNSUCCESSFUL`.
    pub no_context: u32,
    /// Anything else.
    pub other: u32,
    /// The first "anything else".
    pub first_other: i32,
    /// Flows of the callout still tracked after the pass.
    pub still_tracked: u32,
}

/// A removal pass for one callout.
pub fn removal_pass(callout: &str, counts: &RemovalCounts) {
    tlg::write_event!(
        PROVIDER,
        "RemovalPass",
        level(Informational),
        keyword(keyword::LIFECYCLE),
        str8("Callout", callout),
        u32("Removed", &counts.removed),
        u32("Pending", &counts.pending),
        u32("NoContext", &counts.no_context),
        u32("Other", &counts.other),
        u32(
            "FirstOtherStatus",
            &bits(counts.first_other),
            format(NtStatus)
        ),
        u32("StillTracked", &counts.still_tracked),
    );
}

/// A callout is still registered after `elapsed_ms`; teardown keeps waiting.
pub fn still_registered(callout: &str, elapsed_ms: u64, attempts: u32, last: i32, tracked: u32) {
    tlg::write_event!(
        PROVIDER,
        "CalloutStillRegistered",
        level(Warning),
        keyword(keyword::LIFECYCLE),
        str8("Callout", callout),
        u64("ElapsedMs", &elapsed_ms),
        u32("Attempts", &attempts),
        u32("LastStatus", &bits(last), format(NtStatus)),
        u32("FlowsTracked", &tracked),
    );
}

/// A callout is unregistered (or the engine no longer knew it).
pub fn callout_unregistered(callout: &str, attempts: u32, already_gone: bool, elapsed_ms: u64) {
    tlg::write_event!(
        PROVIDER,
        "CalloutUnregistered",
        level(Informational),
        keyword(keyword::LIFECYCLE),
        str8("Callout", callout),
        u32("Attempts", &attempts),
        bool8("AlreadyGone", &already_gone),
        u64("ElapsedMs", &elapsed_ms),
    );
}

/// The engine let a callout go (`STATUS_SUCCESS` or
/// `STATUS_FWP_CALLOUT_NOT_FOUND`) while flow records of it were still
/// tracked, i.e. flow-delete callbacks still owed: teardown waits for them
/// (an engine rule was broken, or deletions it deferred are still to come).
pub fn released_with_records(callout: &str, id: u32, status: i32, still_tracked: u32) {
    tlg::write_event!(
        PROVIDER,
        "CalloutReleasedWithFlowsOwed",
        level(Warning),
        keyword(keyword::LIFECYCLE | keyword::ERRORS),
        str8("Callout", callout),
        u32("CalloutId", &id),
        u32("Status", &bits(status), format(NtStatus)),
        u32("StillTracked", &still_tracked),
    );
}

/// Flow records still tracked after every callout's protocol ended (on the
/// report schedule while teardown waits for them): an engine rule was
/// broken. Teardown does not go on before they are gone.
pub fn records_left(count: u32) {
    tlg::write_event!(
        PROVIDER,
        "FlowRecordsLeft",
        level(Error),
        keyword(keyword::LIFECYCLE | keyword::ERRORS),
        u32("Count", &count),
    );
}

/// A teardown step after the callouts (device, injection handle).
pub fn teardown_step(call: &str, status: i32) {
    tlg::write_event!(
        PROVIDER,
        "TeardownStep",
        level(Informational),
        keyword(keyword::LIFECYCLE),
        str8("Call", call),
        u32("Status", &bits(status), format(NtStatus)),
    );
}

/// Whether flow events would be written: lets classify skip even the
/// argument preparation when no session asked for them.
pub fn flows_enabled() -> bool {
    PROVIDER.enabled(tlg::Level::Informational, keyword::FLOWS)
}

const fn ipv4(address: &[u8; 16]) -> [u8; 4] {
    [address[0], address[1], address[2], address[3]]
}

const fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Outbound => "outbound",
        Direction::Inbound => "inbound",
    }
}

/// A flow was tracked. `DISPATCH_LEVEL`; only when [`flows_enabled`].
pub fn flow_established(flow_handle: u64, process_id: u64, tuple: &FlowTuple) {
    let direction = direction_name(tuple.direction);
    // TraceLogging's port type is in network byte order.
    let (local_port, remote_port) = (tuple.local_port.to_be(), tuple.remote_port.to_be());
    match tuple.family {
        AddressFamily::V4 => {
            tlg::write_event!(
                PROVIDER,
                "FlowEstablished",
                level(Informational),
                keyword(keyword::FLOWS),
                u64_hex("FlowHandle", &flow_handle),
                u64("ProcessId", &process_id),
                u8("IpProtocol", &tuple.ip_protocol),
                ipv4("LocalAddress", &ipv4(&tuple.local_address)),
                port("LocalPort", &local_port),
                ipv4("RemoteAddress", &ipv4(&tuple.remote_address)),
                port("RemotePort", &remote_port),
                str8("Direction", direction),
            );
        }
        AddressFamily::V6 => {
            tlg::write_event!(
                PROVIDER,
                "FlowEstablished",
                level(Informational),
                keyword(keyword::FLOWS),
                u64_hex("FlowHandle", &flow_handle),
                u64("ProcessId", &process_id),
                u8("IpProtocol", &tuple.ip_protocol),
                ipv6("LocalAddress", &tuple.local_address),
                port("LocalPort", &local_port),
                ipv6("RemoteAddress", &tuple.remote_address),
                port("RemotePort", &remote_port),
                str8("Direction", direction),
            );
        }
    }
}

/// A tracked flow ended (or its context was removed at unload), with its
/// final counters. `DISPATCH_LEVEL`; only when [`flows_enabled`].
pub fn flow_ended(record: &FlowRecord, traffic: &Traffic, duration_ms: u64) {
    let process_id = u64::from(record.process_id);
    tlg::write_event!(
        PROVIDER,
        "FlowEnded",
        level(Informational),
        keyword(keyword::FLOWS),
        u64_hex("FlowHandle", &record.association.flow_id),
        u64("ProcessId", &process_id),
        u8("IpProtocol", &record.tuple.ip_protocol),
        u64("BytesIn", &traffic.bytes_inbound),
        u64("BytesOut", &traffic.bytes_outbound),
        u64("PacketsIn", &traffic.packets_inbound),
        u64("PacketsOut", &traffic.packets_outbound),
        u64("DurationMs", &duration_ms),
    );
}
