//! The long-running loop of the service (and of `--foreground`):
//! platform-independent, given a way to open the control device.
//!
//! It keeps running when the driver goes away (forced-end records, then a
//! new attempt to open the device every few seconds) and when the
//! collector does (UDP: sends fail and are counted; TCP: the queue fills
//! and its drops are counted). It ends only when `stop` is set: every flow
//! then gets a forced-end record, and the TCP queue has a few seconds to
//! drain.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wfpmonctl::listing::ControlDevice;

use crate::config::{Config, Error, ExitCode, Transport};
use crate::exporter::{DeviceError, Exporter, unix_ms};
use crate::metrics::write_atomically;
use crate::transport::{Sink, Tcp, Udp};

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Something failed (driver gone, metrics not written).
    Error,
    /// Worth knowing (driver back, reconnection).
    Info,
}

/// Where the loop reports (the Event Log / ETW on Windows, stderr in a
/// console).
pub type Log<'a> = &'a mut dyn FnMut(Level, &str);

/// Pause between attempts to open the control device (the service's).
pub const REOPEN_PAUSE: Duration = Duration::from_secs(5);

/// Makes the transport of `config`.
///
/// # Errors
/// [`ExitCode::Failure`] when the socket or thread cannot be made.
pub fn sink(config: &Config) -> Result<Option<Box<dyn Sink>>, Error> {
    let Some(c) = &config.collector else {
        return Ok(None);
    };
    let fail =
        |e: std::io::Error| Error::new(ExitCode::Failure, format!("collector {}: {e}", c.name));
    Ok(Some(match c.transport {
        Transport::Udp => Box::new(Udp::new(c.address).map_err(fail)?),
        Transport::Tcp => Box::new(
            Tcp::new(
                c.address,
                c.queue_messages,
                c.reconnect_max,
                Exporter::template_message_maker(config),
            )
            .map_err(fail)?,
        ),
    }))
}

/// Binds the metrics address of `config`, if any.
///
/// # Errors
/// [`ExitCode::MetricsBind`].
pub fn bind_metrics(config: &Config) -> Result<Option<TcpListener>, Error> {
    config
        .metrics_listen
        .map(|a| {
            TcpListener::bind(a)
                .map_err(|e| Error::new(ExitCode::MetricsBind, format!("metrics.listen {a}: {e}")))
        })
        .transpose()
}

/// Runs until `stop` is set. `open` opens the control device (tried again
/// every `reopen` while it fails); `wait`: read events with pending reads
/// (the device bounds each wait itself).
///
/// # Errors
/// Set-up failures (transport, metrics address) with their exit codes.
pub fn run<D: ControlDevice>(
    config: &Config,
    mut open: impl FnMut() -> Result<D, String>,
    stop: &AtomicBool,
    wait: bool,
    reopen: Duration,
    log: Log<'_>,
) -> Result<(), Error> {
    let listener = bind_metrics(config)?;
    let mut exporter = Exporter::new(config, sink(config)?);
    let text = Arc::new(Mutex::new(String::new()));
    let server_stop = Arc::new(AtomicBool::new(false));
    let server = listener.map(|l| {
        let (text, server_stop) = (Arc::clone(&text), Arc::clone(&server_stop));
        std::thread::spawn(move || crate::metrics::serve(&l, &text, &server_stop))
    });
    let mut device: Option<D> = None;
    let mut next_open = 0u64;
    let mut next_scan = 0u64;
    let mut next_metrics = 0u64;
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut metrics_failed = false;
    while !stop.load(Ordering::SeqCst) {
        let now = unix_ms();
        if device.is_none() && now >= next_open {
            next_open = now + ms(reopen);
            match open() {
                Ok(mut d) => match exporter.start(&mut d) {
                    Ok(()) => {
                        log(Level::Info, "connected to the wfpmon driver");
                        device = Some(d);
                        next_scan = now + ms(config.scan_interval);
                    }
                    Err(e) => log(
                        Level::Error,
                        &format!("the wfpmon driver did not answer: {e}"),
                    ),
                },
                Err(e) => {
                    if exporter.started() {
                        log(Level::Error, &e);
                    }
                }
            }
        }
        let mut result = Ok(());
        if let Some(d) = device.as_mut() {
            result = match exporter.poll(d, wait) {
                Ok(_) | Err(DeviceError::Aborted) => Ok(()),
                Err(e) => Err(e),
            };
            let now = unix_ms();
            if result.is_ok() && now >= next_scan {
                next_scan = now + ms(config.scan_interval);
                result = exporter.scan(d);
            }
        }
        if let Err(e) = result {
            log(
                Level::Error,
                &format!(
                    "the wfpmon driver went away ({e}); its flows end (forced end) and the device is opened again every {} ms",
                    reopen.as_millis()
                ),
            );
            exporter.driver_lost();
            device = None;
        }
        exporter.flush(device.as_mut());
        let now = unix_ms();
        if now >= next_metrics {
            next_metrics = now + ms(config.metrics_interval);
            let body = exporter.refresh_metrics(device.as_mut()).to_owned();
            if let Some(dir) = &config.metrics_directory {
                match write_atomically(dir, &config.metrics_file_name, &body) {
                    Ok(()) => metrics_failed = false,
                    Err(e) if !metrics_failed => {
                        metrics_failed = true;
                        log(
                            Level::Error,
                            &format!("metrics file in {}: {e}", dir.display()),
                        );
                    }
                    Err(_) => {}
                }
            }
            if let Ok(mut t) = text.lock() {
                *t = body;
            }
        }
        if !wait || device.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Each step of the stop is logged (the service reports each as a
    // checkpoint of its STOP_PENDING status).
    exporter.stop();
    let flushed = exporter.flush(device.as_mut());
    log(
        Level::Info,
        &format!("stopping: every open flow ended (forced end): {flushed} final records"),
    );
    if exporter.drain_sink(Duration::from_secs(5)) {
        log(Level::Info, "stopping: the collector has every message");
    } else {
        log(
            Level::Error,
            "stopping: the collector did not take every queued message before the stop",
        );
    }
    let body = exporter.refresh_metrics(device.as_mut()).to_owned();
    if let Some(dir) = &config.metrics_directory {
        match write_atomically(dir, &config.metrics_file_name, &body) {
            Ok(()) => log(Level::Info, "stopping: final metrics written"),
            Err(e) => log(
                Level::Error,
                &format!("stopping: final metrics file in {}: {e}", dir.display()),
            ),
        }
    }
    server_stop.store(true, Ordering::SeqCst);
    if let Some(s) = server {
        let _ = s.join();
    }
    Ok(())
}
