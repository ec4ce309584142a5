//! The Windows side: runs a parsed command against the real filter engine,
//! service control manager and control device.
//!
//! - [`fwpm`]: a filter-engine session implementing
//!   [`crate::engine::FilterEngine`] with `Fwpm*0` calls, each `FWPM_*0`
//!   structure built from a [`crate::plan::Object`];
//! - [`device`]: the control device implementing
//!   [`crate::device::ControlDevice`] with `CreateFileW` / `DeviceIoControl`;
//! - [`system`]: service states (`QueryServiceStatusEx`) and token
//!   elevation.
//!
//! The `windows` crate is referred to as `::windows` throughout: this
//! module has the same name.

pub mod device;
pub mod fwpm;
pub mod system;

use std::io::{IsTerminal as _, Write as _};

use ::windows::Win32::Foundation::{
    E_ACCESSDENIED, ERROR_ACCESS_DENIED, ERROR_ARITHMETIC_OVERFLOW, ERROR_FILE_NOT_FOUND,
    ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_FUNCTION, ERROR_INVALID_PARAMETER,
    ERROR_INVALID_USER_BUFFER, ERROR_MORE_DATA, ERROR_NO_SUCH_DEVICE, ERROR_PATH_NOT_FOUND,
    ERROR_REVISION_MISMATCH, ERROR_SERVICE_DOES_NOT_EXIST, FWP_E_ALREADY_EXISTS,
    FWP_E_CALLOUT_NOT_FOUND, FWP_E_FILTER_NOT_FOUND, FWP_E_IN_USE, FWP_E_INVALID_FLAGS,
    FWP_E_LIFETIME_MISMATCH, FWP_E_NOT_FOUND, FWP_E_PROVIDER_NOT_FOUND, FWP_E_SUBLAYER_NOT_FOUND,
};
use ::windows::Win32::NetworkManagement::WindowsFilteringPlatform::{
    FWP_ACTION_CALLOUT_INSPECTION, FWP_ACTION_CALLOUT_TERMINATING, FWP_ACTION_CALLOUT_UNKNOWN,
    FWPM_CALLOUT_FLAG_PERSISTENT, FWPM_CALLOUT_FLAG_REGISTERED,
    FWPM_CALLOUT_FLAG_USES_PROVIDER_CONTEXT, FWPM_FILTER_FLAG_BOOTTIME,
    FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT, FWPM_FILTER_FLAG_DISABLED,
    FWPM_FILTER_FLAG_HAS_PROVIDER_CONTEXT, FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED,
    FWPM_FILTER_FLAG_PERSISTENT, FWPM_LAYER_ALE_FLOW_ESTABLISHED_V4,
    FWPM_LAYER_ALE_FLOW_ESTABLISHED_V6, FWPM_LAYER_DATAGRAM_DATA_V4, FWPM_LAYER_DATAGRAM_DATA_V6,
    FWPM_LAYER_STREAM_V4, FWPM_LAYER_STREAM_V6, FWPM_PROVIDER_FLAG_PERSISTENT,
    FWPM_SUBLAYER_FLAG_PERSISTENT,
};
use ::windows::Win32::System::Rpc::{EPT_S_NOT_REGISTERED, RPC_S_SERVER_UNAVAILABLE};
use ::windows::core::GUID;
use wfpmon_core::catalog::{self, Guid, management_layer};

use crate::app;
use crate::cli::{Cli, Command, Switch};
use crate::device as dev;
use crate::engine;
use crate::exit::{self, Error, Kind, code};
use crate::output;
use crate::plan::{self, ActionType, Plan};

/// Whether a catalog GUID and a `windows` crate GUID are the same.
#[must_use]
pub const fn same_guid(ours: Guid, theirs: GUID) -> bool {
    ours.to_u128() == theirs.to_u128()
}

/// A catalog GUID as a `windows` crate GUID.
#[must_use]
pub const fn to_guid(g: Guid) -> GUID {
    GUID::from_u128(g.to_u128())
}

// The platform-independent modules declare the Windows constants they use
// as plain numbers; check every one against the `windows` crate here, at
// compile time, so a wrong value cannot build for Windows.
const _: () = {
    // Layers of the catalog.
    assert!(same_guid(management_layer::STREAM_V4, FWPM_LAYER_STREAM_V4));
    assert!(same_guid(management_layer::STREAM_V6, FWPM_LAYER_STREAM_V6));
    assert!(same_guid(
        management_layer::DATAGRAM_DATA_V4,
        FWPM_LAYER_DATAGRAM_DATA_V4
    ));
    assert!(same_guid(
        management_layer::DATAGRAM_DATA_V6,
        FWPM_LAYER_DATAGRAM_DATA_V6
    ));
    assert!(same_guid(
        management_layer::ALE_FLOW_ESTABLISHED_V4,
        FWPM_LAYER_ALE_FLOW_ESTABLISHED_V4
    ));
    assert!(same_guid(
        management_layer::ALE_FLOW_ESTABLISHED_V6,
        FWPM_LAYER_ALE_FLOW_ESTABLISHED_V6
    ));

    // Object flags of the plan.
    assert!(plan::flags::PROVIDER_PERSISTENT == FWPM_PROVIDER_FLAG_PERSISTENT);
    assert!(plan::flags::SUBLAYER_PERSISTENT == FWPM_SUBLAYER_FLAG_PERSISTENT);
    assert!(plan::flags::CALLOUT_PERSISTENT == FWPM_CALLOUT_FLAG_PERSISTENT);
    assert!(plan::flags::CALLOUT_USES_PROVIDER_CONTEXT == FWPM_CALLOUT_FLAG_USES_PROVIDER_CONTEXT);
    assert!(plan::flags::CALLOUT_REGISTERED == FWPM_CALLOUT_FLAG_REGISTERED);
    assert!(plan::flags::FILTER_PERSISTENT == FWPM_FILTER_FLAG_PERSISTENT.0);
    assert!(plan::flags::FILTER_BOOTTIME == FWPM_FILTER_FLAG_BOOTTIME.0);
    assert!(plan::flags::FILTER_HAS_PROVIDER_CONTEXT == FWPM_FILTER_FLAG_HAS_PROVIDER_CONTEXT.0);
    assert!(plan::flags::FILTER_CLEAR_ACTION_RIGHT == FWPM_FILTER_FLAG_CLEAR_ACTION_RIGHT.0);
    assert!(
        plan::flags::FILTER_PERMIT_IF_CALLOUT_UNREGISTERED
            == FWPM_FILTER_FLAG_PERMIT_IF_CALLOUT_UNREGISTERED.0
    );
    assert!(plan::flags::FILTER_DISABLED == FWPM_FILTER_FLAG_DISABLED.0);

    // Action types.
    assert!(ActionType::CalloutInspection.raw() == FWP_ACTION_CALLOUT_INSPECTION.0);
    assert!(ActionType::CalloutTerminating.raw() == FWP_ACTION_CALLOUT_TERMINATING.0);
    assert!(ActionType::CalloutUnknown.raw() == FWP_ACTION_CALLOUT_UNKNOWN.0);

    // Status codes the exit-code classification relies on.
    assert!(code::ERROR_INVALID_FUNCTION == ERROR_INVALID_FUNCTION.0);
    assert!(code::ERROR_FILE_NOT_FOUND == ERROR_FILE_NOT_FOUND.0);
    assert!(code::ERROR_PATH_NOT_FOUND == ERROR_PATH_NOT_FOUND.0);
    assert!(code::ERROR_ACCESS_DENIED == ERROR_ACCESS_DENIED.0);
    assert!(code::ERROR_INVALID_PARAMETER == ERROR_INVALID_PARAMETER.0);
    assert!(code::ERROR_INSUFFICIENT_BUFFER == ERROR_INSUFFICIENT_BUFFER.0);
    assert!(code::ERROR_MORE_DATA == ERROR_MORE_DATA.0);
    assert!(code::ERROR_NO_SUCH_DEVICE == ERROR_NO_SUCH_DEVICE.0);
    assert!(code::ERROR_ARITHMETIC_OVERFLOW == ERROR_ARITHMETIC_OVERFLOW.0);
    assert!(code::ERROR_SERVICE_DOES_NOT_EXIST == ERROR_SERVICE_DOES_NOT_EXIST.0);
    assert!(code::ERROR_REVISION_MISMATCH == ERROR_REVISION_MISMATCH.0);
    assert!(code::ERROR_INVALID_USER_BUFFER == ERROR_INVALID_USER_BUFFER.0);
    assert!(code::RPC_S_SERVER_UNAVAILABLE == RPC_S_SERVER_UNAVAILABLE.0.cast_unsigned());
    assert!(code::EPT_S_NOT_REGISTERED == EPT_S_NOT_REGISTERED.0.cast_unsigned());
    assert!(code::E_ACCESSDENIED == E_ACCESSDENIED.0.cast_unsigned());
    assert!(code::FWP_E_CALLOUT_NOT_FOUND == FWP_E_CALLOUT_NOT_FOUND.0.cast_unsigned());
    assert!(code::FWP_E_FILTER_NOT_FOUND == FWP_E_FILTER_NOT_FOUND.0.cast_unsigned());
    assert!(code::FWP_E_PROVIDER_NOT_FOUND == FWP_E_PROVIDER_NOT_FOUND.0.cast_unsigned());
    assert!(code::FWP_E_SUBLAYER_NOT_FOUND == FWP_E_SUBLAYER_NOT_FOUND.0.cast_unsigned());
    assert!(code::FWP_E_NOT_FOUND == FWP_E_NOT_FOUND.0.cast_unsigned());
    assert!(code::FWP_E_ALREADY_EXISTS == FWP_E_ALREADY_EXISTS.0.cast_unsigned());
    assert!(code::FWP_E_IN_USE == FWP_E_IN_USE.0.cast_unsigned());
    assert!(code::FWP_E_INVALID_FLAGS == FWP_E_INVALID_FLAGS.0.cast_unsigned());
    assert!(code::FWP_E_LIFETIME_MISMATCH == FWP_E_LIFETIME_MISMATCH.0.cast_unsigned());
};

/// Runs `cli` and returns the process exit code; failures are printed to
/// standard error.
#[must_use]
pub fn run(cli: &Cli) -> u8 {
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", app::error_line(&e));
            e.exit_code()
        }
    }
}

fn dispatch(cli: &Cli) -> Result<u8, Error> {
    match &cli.command {
        Command::Install(args) => {
            let plan = Plan::install(args.options())
                .map_err(|e| Error::new(Kind::Usage, e.to_string()))?;
            require_elevation("install")?;
            let mut session = fwpm::Session::open(false)?;
            let report = engine::install(&mut session, &plan)?;
            print_out(&output::install_text(&report, plan.lifetime()))?;
            Ok(exit::SUCCESS)
        }
        Command::Uninstall => {
            require_elevation("uninstall")?;
            let mut session = fwpm::Session::open(false)?;
            let report = engine::uninstall(&mut session, &Plan::uninstall())?;
            print_out(&output::uninstall_text(&report))?;
            Ok(exit::SUCCESS)
        }
        Command::Status(format) => {
            let driver = system::service_state(catalog::SERVICE_NAME)?;
            let bfe = system::service_state(system::BFE_SERVICE_NAME)?;
            let device = app::device_state(device::Device::open(false).map(drop));
            let wfp = fwpm::Session::open(true)
                .and_then(|mut session| engine::wfp_status(&mut session, &Plan::uninstall()));
            let (report, code) = app::status_report(driver, bfe, device, wfp);
            let text = if format.json {
                output::status_json(&report)
            } else {
                output::status_table(&report)
            };
            print_out(&text)?;
            if let Some(e) = &report.wfp_error {
                eprintln!("wfpmonctl: error: {e}");
            }
            Ok(code)
        }
        Command::Stats(view) => {
            let mut device = device::Device::open(false)?;
            watch(view.watch, view.json, || {
                let stats = dev::query_stats(&mut device)?;
                Ok(if view.json {
                    output::stats_json(&stats)
                } else {
                    output::stats_table(&stats)
                })
            })
        }
        Command::Flows(args) => {
            let mut device = device::Device::open(false)?;
            watch(args.view.watch, args.view.json, || {
                let list = dev::list_flows(&mut device, args.max)?;
                Ok(if args.view.json {
                    output::flows_json(&list)
                } else {
                    output::flows_table(&list)
                })
            })
        }
        Command::Counting(args) => {
            require_elevation("counting")?;
            let mut device = device::Device::open(true)?;
            let on = args.state == Switch::On;
            dev::set_counting(&mut device, on)?;
            print_out(if on {
                "traffic counting is on\n"
            } else {
                "traffic counting is off\n"
            })?;
            Ok(exit::SUCCESS)
        }
    }
}

/// Refuses to go on in a process that is not elevated. When elevation cannot
/// be determined, the operation is attempted and its own access check decides.
fn require_elevation(what: &str) -> Result<(), Error> {
    match system::is_elevated() {
        Ok(false) => Err(Error::new(
            Kind::NotElevated,
            format!(
                "`wfpmonctl {what}` needs administrator rights: run it from an elevated prompt"
            ),
        )),
        Ok(true) | Err(_) => Ok(()),
    }
}

fn watch<R>(seconds: Option<u64>, json: bool, render: R) -> Result<u8, Error>
where
    R: FnMut() -> Result<String, Error>,
{
    let stdout = std::io::stdout();
    let clear = seconds.is_some() && !json && stdout.is_terminal();
    app::refresh(
        &mut stdout.lock(),
        seconds,
        clear,
        render,
        std::thread::sleep,
    )?;
    Ok(exit::SUCCESS)
}

fn print_out(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::new(Kind::Other, format!("writing the output failed: {e}")))
}
