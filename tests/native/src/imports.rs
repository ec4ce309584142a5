//! The modelled imports, by name. **Adding a model = one line here** (and
//! the function in [`crate::kernel`] or [`crate::engine`]).
//!
//! The loader fills each import address table slot with the address found
//! here; an import that is not listed stops the load with its name.
//! Functions are `extern "win64"`; data imports (`IoDeviceObjectType`
//! and the like) resolve to the address of a host variable, as the kernel
//! exports the variable itself.

use crate::csq;
use crate::engine as e;
use crate::etw;
use crate::kernel as k;

/// What an import resolves to.
#[derive(Clone, Copy, Debug)]
pub enum Resolved {
    /// A function's address.
    Function(usize),
    /// A variable's address.
    Data(usize),
}

/// A fake `OBJECT_TYPE` the data imports point at.
static FAKE_OBJECT_TYPE: [u64; 32] = [0; 32];

/// `POBJECT_TYPE` variables (`IoDeviceObjectType`, `IoFileObjectType`):
/// each holds a pointer to an object type.
struct ObjectTypePtr(std::sync::OnceLock<usize>);
static OBJECT_TYPE_PTR: ObjectTypePtr = ObjectTypePtr(std::sync::OnceLock::new());

fn object_type_variable() -> usize {
    let cell = OBJECT_TYPE_PTR.0.get_or_init(|| {
        let slot = Box::leak(Box::new(std::ptr::addr_of!(FAKE_OBJECT_TYPE) as usize));
        std::ptr::from_mut(slot) as usize
    });
    *cell
}

/// The function models: (module, name, address). Module names compare
/// case-insensitively; `*` matches any module.
fn functions() -> Vec<(&'static str, &'static str, usize)> {
    vec![
        (
            "ntoskrnl.exe",
            "DbgPrint",
            k::dbg_print as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeBugCheckEx",
            k::ke_bug_check_ex as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "ExAllocatePool2",
            k::ex_allocate_pool2 as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "ExFreePoolWithTag",
            k::ex_free_pool_with_tag as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "ExFreePool",
            k::ex_free_pool as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeAcquireSpinLockRaiseToDpc",
            k::ke_acquire_spin_lock_raise_to_dpc as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeReleaseSpinLock",
            k::ke_release_spin_lock as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeAcquireSpinLockAtDpcLevel",
            k::ke_acquire_spin_lock_at_dpc_level as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeReleaseSpinLockFromDpcLevel",
            k::ke_release_spin_lock_from_dpc_level as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeAcquireInStackQueuedSpinLock",
            k::ke_acquire_in_stack_queued_spin_lock as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeReleaseInStackQueuedSpinLock",
            k::ke_release_in_stack_queued_spin_lock as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeInitializeEvent",
            k::ke_initialize_event as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeSetEvent",
            k::ke_set_event as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeClearEvent",
            k::ke_clear_event as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeResetEvent",
            k::ke_clear_event as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeWaitForSingleObject",
            k::ke_wait_for_single_object as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "KeQueryInterruptTimePrecise",
            k::ke_query_interrupt_time_precise as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "IoCreateDevice",
            k::io_create_device as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "IoDeleteDevice",
            k::io_delete_device as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "IofCompleteRequest",
            k::iof_complete_request as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "IoCsqInitialize",
            csq::io_csq_initialize as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "IoCsqInsertIrp",
            csq::io_csq_insert_irp as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "IoCsqRemoveNextIrp",
            csq::io_csq_remove_next_irp as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "ObSetSecurityObjectByPointer",
            k::ob_set_security_object_by_pointer as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "ObOpenObjectByPointer",
            k::ob_open_object_by_pointer as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "ZwSetSecurityObject",
            k::zw_set_security_object as *const () as usize,
        ),
        ("ntoskrnl.exe", "ZwClose", k::zw_close as *const () as usize),
        (
            "ntoskrnl.exe",
            "EtwRegister",
            etw::etw_register as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "EtwUnregister",
            etw::etw_unregister as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "EtwWriteTransfer",
            etw::etw_write_transfer as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "EtwWrite",
            etw::etw_write as *const () as usize,
        ),
        (
            "ntoskrnl.exe",
            "EtwSetInformation",
            etw::etw_set_information as *const () as usize,
        ),
        ("*", "memcpy", k::memcpy as *const () as usize),
        ("*", "memmove", k::memmove as *const () as usize),
        ("*", "memset", k::memset as *const () as usize),
        ("*", "memcmp", k::memcmp as *const () as usize),
        (
            "fwpkclnt.sys",
            "FwpsCalloutRegister0",
            e::fwps_callout_register as *const () as usize,
        ),
        (
            "fwpkclnt.sys",
            "FwpsCalloutRegister1",
            e::fwps_callout_register as *const () as usize,
        ),
        (
            "fwpkclnt.sys",
            "FwpsCalloutRegister2",
            e::fwps_callout_register as *const () as usize,
        ),
        (
            "fwpkclnt.sys",
            "FwpsCalloutRegister3",
            e::fwps_callout_register as *const () as usize,
        ),
        (
            "fwpkclnt.sys",
            "FwpsCalloutUnregisterById0",
            e::fwps_callout_unregister_by_id0 as *const () as usize,
        ),
        (
            "fwpkclnt.sys",
            "FwpsFlowAssociateContext0",
            e::fwps_flow_associate_context0 as *const () as usize,
        ),
        (
            "fwpkclnt.sys",
            "FwpsFlowRemoveContext0",
            e::fwps_flow_remove_context0 as *const () as usize,
        ),
        (
            "fwpkclnt.sys",
            "FwpsInjectionHandleCreate0",
            e::fwps_injection_handle_create0 as *const () as usize,
        ),
        (
            "fwpkclnt.sys",
            "FwpsInjectionHandleDestroy0",
            e::fwps_injection_handle_destroy0 as *const () as usize,
        ),
        (
            "fwpkclnt.sys",
            "FwpsQueryPacketInjectionState0",
            e::fwps_query_packet_injection_state0 as *const () as usize,
        ),
    ]
}

/// The data models: (module, name).
const DATA: &[(&str, &str)] = &[
    ("ntoskrnl.exe", "IoDeviceObjectType"),
    ("ntoskrnl.exe", "IoFileObjectType"),
];

/// Resolves `module!name`.
#[must_use]
pub fn resolve(module: &str, name: &str) -> Option<Resolved> {
    let module_matches = |m: &str| m == "*" || m.eq_ignore_ascii_case(module);
    if let Some((_, _, addr)) = functions()
        .into_iter()
        .find(|(m, n, _)| *n == name && module_matches(m))
    {
        return Some(Resolved::Function(addr));
    }
    DATA.iter()
        .any(|(m, n)| *n == name && module_matches(m))
        .then(|| Resolved::Data(object_type_variable()))
}

/// Every modelled name (for documentation and the loader's messages).
#[must_use]
pub fn modelled() -> Vec<&'static str> {
    functions()
        .into_iter()
        .map(|(_, n, _)| n)
        .chain(DATA.iter().map(|(_, n)| *n))
        .collect()
}
