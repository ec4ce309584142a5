//! Windows only: the device, the service, the ETW provider.
//!
//! The control device over `DeviceIoControl` (wfpmonctl's overlapped
//! transport, so a pending read can be bounded and cancelled), the service (the
//! `windows-service` crate: dispatcher, control handler, install and
//! removal), and the ETW provider errors are written to.
//!
//! Type-checked on Linux (clippy for x86_64-pc-windows-msvc); not run on
//! a real Windows here (see README: what is verified where).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracelogging as tlg;
use wfpmonctl::listing::{ControlDevice, IoctlError};
use wfpmonctl::overlapped::{OpenError, Overlapped, Pending};
use windows_service::service::Service;
use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::service_dispatcher;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_sys::Win32::Foundation::GENERIC_READ;

use crate::config::{self, Config, Error, ExitCode};
use crate::run::{self, Level};
use crate::service_status::{Exit, Report, State, Status};

/// The service's name.
pub const SERVICE_NAME: &str = "wfpmon-export";
const DISPLAY_NAME: &str = "wfpmon flow exporter (IPFIX, Prometheus)";
const DESCRIPTION: &str =
    "Streams the wfpmon driver's process-attributed flows to IPFIX collectors and Prometheus";

tlg::define_provider!(PROVIDER, "wfpmon-export");

/// Registers the ETW provider (once, at start).
pub fn register_provider() {
    // SAFETY: an executable, not a DLL: the provider stays registered for
    // the life of the process; called once, from `main`, before any thread
    // writes an event.
    unsafe { PROVIDER.register() };
}

/// Writes a log line as an ETW event of provider "wfpmon-export" (level
/// Error or Informational, field "Message").
pub fn log(level: Level, message: &str) {
    match level {
        Level::Error => {
            tlg::write_event!(PROVIDER, "Error", level(Error), str8("Message", message))
        }
        Level::Info => tlg::write_event!(
            PROVIDER,
            "Info",
            level(Informational),
            str8("Message", message)
        ),
    };
}

/// Longest a pending event read waits before it is cancelled (the loop then
/// does its scans and metrics and reads again).
pub const PENDING_READ_BOUND: Duration = Duration::from_millis(250);

/// The driver's control device, opened for overlapped I/O through
/// wfpmonctl's transport ([`wfpmonctl::overlapped`]), and the driver's
/// service (to see it stopping).
pub struct Device {
    io: Overlapped,
    stop: Arc<AtomicBool>,
    driver: Option<(ServiceManager, Service)>,
}

/// What a request the exporter gave up because the driver is stopping
/// fails with: `ERROR_DEVICE_REMOVED` ("The device has been removed").
const ERROR_DEVICE_REMOVED: u32 = 1617;

/// The driver's service, to query its state (`None`: the query is not
/// possible; the device is then closed only when a request fails).
fn driver_service() -> Option<(ServiceManager, Service)> {
    let manager =
        ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT).ok()?;
    let service = manager
        .open_service(
            wfpmon_core::catalog::SERVICE_NAME,
            ServiceAccess::QUERY_STATUS,
        )
        .ok()?;
    Some((manager, service))
}

impl Device {
    /// Opens `\\.\GLOBALROOT\Device\WfpMon` (read access is enough for
    /// every request the exporter makes), and the driver's service with
    /// `SERVICE_QUERY_STATUS`.
    ///
    /// # Errors
    /// The Win32 error, as text.
    pub fn open(stop: Arc<AtomicBool>) -> Result<Self, String> {
        let io = Overlapped::open(wfpmon_core::catalog::DEVICE_USER_PATH, GENERIC_READ).map_err(
            |e| match e {
                OpenError::CreateFile(c) => {
                    format!("opening the wfpmon control device: Win32 error {c}")
                }
                OpenError::CreateEvent(c) => format!("CreateEventW: Win32 error {c}"),
            },
        )?;
        Ok(Self {
            io,
            stop,
            driver: driver_service(),
        })
    }
}

/// The exporter's policy for a pending read: it is cancelled once it has
/// waited [`PENDING_READ_BOUND`] (the loop then does its scans and metrics
/// and reads again) or when the exporter stops. At the bound the driver's
/// service is asked for its state: the I/O manager unloads a driver only
/// once no handle to its device is open ("Unload Routine Environment"), so
/// `sc stop wfpmon` waits (`STOP_PENDING`) until this handle is closed; a
/// stopping driver fails the request, and the caller closes the device
/// (forced ends; it is opened again later).
struct Bounded<'a> {
    started: Instant,
    stop: &'a AtomicBool,
    driver: Option<&'a Service>,
    cancelled: bool,
    stopping: bool,
}

impl Pending for Bounded<'_> {
    fn pending(&mut self) -> bool {
        false
    }

    fn waited(&mut self) -> bool {
        let bound = self.started.elapsed() >= PENDING_READ_BOUND;
        if bound && !self.cancelled {
            self.stopping = self.driver.is_some_and(|service| {
                service.query_status().is_ok_and(|s| {
                    matches!(
                        s.current_state,
                        ServiceState::StopPending | ServiceState::Stopped
                    )
                })
            });
        }
        let due = bound || self.stop.load(Ordering::SeqCst);
        let cancel = due && !self.cancelled;
        self.cancelled |= cancel;
        cancel
    }
}

impl ControlDevice for Device {
    fn ioctl(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize, IoctlError> {
        let mut policy = Bounded {
            started: Instant::now(),
            stop: &self.stop,
            driver: self.driver.as_ref().map(|(_, service)| service),
            cancelled: false,
            stopping: false,
        };
        match self
            .io
            .request(code, input, output, Duration::from_millis(50), &mut policy)
        {
            Err(_) if policy.stopping => Err(IoctlError::win32(ERROR_DEVICE_REMOVED)),
            result => result,
        }
    }
}

/// The stop flag the service control handler sets.
static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
/// The configuration path the service was installed with.
static CONFIG_PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

windows_service::define_windows_service!(ffi_service_main, service_main);

/// Reports the service's status; shared by `ServiceMain`'s thread and the
/// control handler (which the dispatcher runs on the main thread). The lock
/// is held across `SetServiceStatus`, so that reports reach the SCM in the
/// order their checkpoints were counted.
struct Reporter {
    handle: ServiceStatusHandle,
    status: Mutex<Status>,
}

impl Reporter {
    fn report(&self, next: impl FnOnce(&mut Status) -> Option<Report>) {
        let Ok(mut status) = self.status.lock() else {
            return;
        };
        if let Some(r) = next(&mut status) {
            let _ = self.handle.set_service_status(ServiceStatus {
                service_type: ServiceType::OWN_PROCESS,
                current_state: match r.state {
                    State::Stopped => ServiceState::Stopped,
                    State::StartPending => ServiceState::StartPending,
                    State::StopPending => ServiceState::StopPending,
                    State::Running => ServiceState::Running,
                },
                controls_accepted: if r.accepts_stop {
                    ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
                } else {
                    ServiceControlAccept::empty()
                },
                exit_code: match r.exit {
                    Exit::NoError => ServiceExitCode::NO_ERROR,
                    Exit::ServiceSpecific(c) => ServiceExitCode::ServiceSpecific(c),
                },
                checkpoint: r.checkpoint,
                wait_hint: Duration::from_millis(u64::from(r.wait_hint_ms)),
                process_id: None,
            });
        }
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let stop = Arc::clone(STOP.get_or_init(|| Arc::new(AtomicBool::new(false))));
    let reporter: Arc<OnceLock<Reporter>> = Arc::new(OnceLock::new());
    let (handler_stop, handler_reporter) = (Arc::clone(&stop), Arc::clone(&reporter));
    // The handler returns at once ("Service Control Handler Function"): a
    // stop or shutdown sets the flag the loop checks (a pending read is
    // cancelled within 50 ms) and reports STOP_PENDING; the loop reports
    // each further step of the stop as a checkpoint.
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            handler_stop.store(true, Ordering::SeqCst);
            if let Some(r) = handler_reporter.get() {
                r.report(Status::stop_pending);
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(handle) = service_control_handler::register(SERVICE_NAME, handler) else {
        log(Level::Error, "RegisterServiceCtrlHandlerExW failed");
        return;
    };
    let reporter = reporter.get_or_init(|| Reporter {
        handle,
        status: Mutex::new(Status::default()),
    });
    reporter.report(Status::start_pending);
    let path = CONFIG_PATH
        .get()
        .cloned()
        .unwrap_or_else(default_config_path);
    // Every line logged during the stop is a step of it: one more checkpoint.
    let mut service_log = |level: Level, message: &str| {
        log(level, message);
        reporter.report(Status::progress);
    };
    let result = config::load(&path).and_then(|config| {
        reporter.report(Status::running);
        let device_stop = Arc::clone(&stop);
        run::run(
            &config,
            || Device::open(Arc::clone(&device_stop)),
            &stop,
            true,
            run::REOPEN_PAUSE,
            &mut service_log,
        )
    });
    let code = result.err().map(|e| {
        log(Level::Error, &e.message);
        e.code as u8
    });
    reporter.report(|s| s.stopped(code));
}

/// `%ProgramData%\wfpmon\wfpmon-export.toml`.
#[must_use]
pub fn default_config_path() -> PathBuf {
    let base = std::env::var_os("ProgramData")
        .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
    base.join("wfpmon").join("wfpmon-export.toml")
}

/// Runs as the service (the SCM started the process with `service`).
///
/// # Errors
/// [`ExitCode::Service`] when the process was not started by the SCM.
pub fn run_service(config: &Path) -> Result<(), Error> {
    let _ = CONFIG_PATH.set(config.to_path_buf());
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).map_err(|e| {
        let detail = match &e {
            windows_service::Error::Winapi(io) => io.to_string(),
            other => other.to_string(),
        };
        Error::new(
            ExitCode::Service,
            format!(
                "not started by the service control manager: `service` is for the SCM (`sc start {SERVICE_NAME}`); in a console use --foreground [StartServiceCtrlDispatcherW: {detail}]"
            ),
        )
    })
}

/// Console control handler: Ctrl+C, Ctrl+Break and closing the console
/// stop the loop (flows then get their forced-end records).
unsafe extern "system" fn on_ctrl(_event: u32) -> windows_sys::core::BOOL {
    if let Some(stop) = STOP.get() {
        stop.store(true, Ordering::SeqCst);
    }
    1
}

/// Runs in the console until Ctrl+C.
///
/// # Errors
/// Set-up failures with their exit codes.
pub fn run_foreground(config: &Config) -> Result<(), Error> {
    let stop = Arc::clone(STOP.get_or_init(|| Arc::new(AtomicBool::new(false))));
    // SAFETY: `on_ctrl` lives as long as the process and only stores to an
    // atomic.
    unsafe { windows_sys::Win32::System::Console::SetConsoleCtrlHandler(Some(on_ctrl), 1) };
    let device_stop = Arc::clone(&stop);
    let mut log = |level: Level, m: &str| {
        log(level, m);
        eprintln!("wfpmon-export: {m}");
    };
    run::run(
        config,
        || Device::open(Arc::clone(&device_stop)),
        &stop,
        true,
        run::REOPEN_PAUSE,
        &mut log,
    )
}

/// The Win32 error of a failed service-manager call.
fn win32(e: &windows_service::Error) -> Option<i32> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    }
}

const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_SERVICE_MARKED_FOR_DELETE: i32 = 1072;
const ERROR_SERVICE_EXISTS: i32 = 1073;
const ERROR_DUPLICATE_SERVICE_NAME: i32 = 1078;

/// [`ExitCode::Service`] with what `call` failing while `doing` means.
fn service_error(doing: &str, call: &str, e: &windows_service::Error) -> Error {
    let detail = match e {
        windows_service::Error::Winapi(io) => io.to_string(),
        other => other.to_string(),
    };
    let meaning = match win32(e) {
        Some(ERROR_ACCESS_DENIED) => {
            format!("{doing} needs administrator rights: run it from an elevated prompt")
        }
        Some(ERROR_SERVICE_EXISTS) => format!(
            "service {SERVICE_NAME} is already installed: `wfpmon-export uninstall-service` removes it"
        ),
        Some(ERROR_DUPLICATE_SERVICE_NAME) => {
            format!("another service already has the display name \"{DISPLAY_NAME}\"")
        }
        Some(ERROR_SERVICE_MARKED_FOR_DELETE) => format!(
            "service {SERVICE_NAME} is marked for deletion: close the Services console (and anything else holding it open), then try again"
        ),
        _ => format!("{doing} failed"),
    };
    Error::new(ExitCode::Service, format!("{meaning} [{call}: {detail}]"))
}

/// Installs the service (own process, automatic start, `LocalSystem`), to
/// run this executable with `service --config PATH`.
///
/// # Errors
/// [`ExitCode::Service`] with the system's error and what it means.
pub fn install(config: &Path) -> Result<(), Error> {
    let doing = "installing the service";
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .map_err(|e| service_error(doing, "OpenSCManagerW", &e))?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::new(ExitCode::Service, format!("the executable's path: {e}")))?;
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe,
        launch_arguments: vec![
            "service".into(),
            "--config".into(),
            config.as_os_str().to_owned(),
        ],
        dependencies: vec![],
        account_name: None,
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG)
        .map_err(|e| service_error(doing, "CreateServiceW", &e))?;
    service.set_description(DESCRIPTION).map_err(|e| {
        service_error(
            "setting the service's description",
            "ChangeServiceConfig2W",
            &e,
        )
    })?;
    Ok(())
}

/// What `uninstall-service` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The service was removed (stopped first if it ran).
    Removed,
    /// There was no such service.
    NotInstalled,
    /// It was already marked for deletion (it goes when the last handle to
    /// it closes).
    AlreadyMarked,
}

/// Stops (if running) and removes the service.
///
/// # Errors
/// [`ExitCode::Service`] with the system's error and what it means.
pub fn uninstall() -> Result<Removal, Error> {
    let doing = "removing the service";
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| service_error(doing, "OpenSCManagerW", &e))?;
    let service = match manager.open_service(
        SERVICE_NAME,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    ) {
        Ok(s) => s,
        Err(e) if win32(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => {
            return Ok(Removal::NotInstalled);
        }
        Err(e) => return Err(service_error(doing, "OpenServiceW", &e)),
    };
    let state = service
        .query_status()
        .map_err(|e| service_error(doing, "QueryServiceStatusEx", &e))?
        .current_state;
    if state != ServiceState::Stopped {
        let _ = service.stop();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline
            && service
                .query_status()
                .is_ok_and(|s| s.current_state != ServiceState::Stopped)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    match service.delete() {
        Ok(()) => Ok(Removal::Removed),
        Err(e) if win32(&e) == Some(ERROR_SERVICE_MARKED_FOR_DELETE) => Ok(Removal::AlreadyMarked),
        Err(e) => Err(service_error(doing, "DeleteService", &e)),
    }
}
