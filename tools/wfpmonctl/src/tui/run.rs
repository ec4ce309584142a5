//! The refresh loop of the live view, and the terminal it runs in.
//!
//! The loop is written against [`Input`] and [`Clock`] so that the tests
//! drive it with scripted keys on a ratatui `TestBackend`; [`terminal`]
//! runs it on the real terminal through crossterm (raw mode, the alternate
//! screen, restored on every way out: quit, Ctrl+C, an error, a panic).

use std::io::{self, IsTerminal};
use std::time::{Duration, Instant, SystemTime};

use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use super::Names;
use super::keys::{self, Action};
use super::model::Model;
use super::source::Source;
use super::view;
use crate::error::{Error, Kind};

/// The first two samples are this far apart (or one interval, if shorter),
/// so that the first paint has rates: see the module documentation of
/// `super::model` for why one sample cannot give them.
pub const PRIME: Duration = Duration::from_millis(250);

/// Terminal events.
pub trait Input {
    /// The next event, waiting at most `timeout`.
    ///
    /// # Errors
    /// The terminal could not be read.
    fn next(&mut self, timeout: Duration) -> io::Result<Option<Event>>;
}

/// Wall-clock and monotonic time, and the local time zone.
pub trait Clock {
    fn now(&mut self) -> (SystemTime, Duration);
    /// The local time zone's offset from UTC at `time`, in seconds east.
    fn utc_offset(&mut self, time: SystemTime) -> i32;
}

/// The system clocks.
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&mut self) -> (SystemTime, Duration) {
        (SystemTime::now(), self.0.elapsed())
    }

    fn utc_offset(&mut self, time: SystemTime) -> i32 {
        crate::view::units::local_offset(time)
    }
}

/// Keys and resizes from crossterm (the console input buffer on Windows).
pub struct Crossterm;

impl Input for Crossterm {
    fn next(&mut self, timeout: Duration) -> io::Result<Option<Event>> {
        if event::poll(timeout)? {
            event::read().map(Some)
        } else {
            Ok(None)
        }
    }
}

fn refresh(
    model: &mut Model,
    source: &mut dyn Source,
    names: &dyn Names,
    clock: &mut dyn Clock,
) -> Result<Duration, Error> {
    let (wall, mono) = clock.now();
    let sample = source.sample(wall, mono)?;
    model.update(
        sample,
        &mut |key, pid| source.name(key, pid),
        names,
        &mut |t| clock.utc_offset(t),
    );
    Ok(mono)
}

fn terminal_error(e: &dyn std::fmt::Display) -> Error {
    Error::new(Kind::Other, format!("the terminal failed: {e}"))
}

/// Runs the view until a quit key, Ctrl+C or `interrupted()`: two samples
/// [`PRIME`] apart, the first paint, then a sample every interval (unless
/// paused) and a redraw after each sample, key and resize.
///
/// # Errors
/// A failed request to the driver, or a terminal failure.
pub fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    model: &mut Model,
    source: &mut dyn Source,
    names: &dyn Names,
    input: &mut dyn Input,
    clock: &mut dyn Clock,
    interrupted: &mut dyn FnMut() -> bool,
) -> Result<(), Error> {
    let draw = |terminal: &mut Terminal<B>, model: &mut Model| {
        terminal
            .draw(|frame| view::draw(frame, model))
            .map(drop)
            .map_err(|e| terminal_error(&e))
    };
    let mut last = refresh(model, source, names, clock)?;
    let mut next = last + PRIME.min(model.interval);
    let mut primed = false;
    loop {
        let now = clock.now().1;
        if now >= next {
            if model.paused && primed {
                next = now + model.interval;
            } else {
                last = refresh(model, source, names, clock)?;
                next = last + model.interval;
            }
            primed = true;
            draw(terminal, model)?;
            continue;
        }
        if interrupted() {
            return Ok(());
        }
        let wait = next.saturating_sub(now).min(Duration::from_millis(200));
        match input.next(wait).map_err(|e| terminal_error(&e))? {
            Some(Event::Key(key)) if key.kind != KeyEventKind::Release => {
                match keys::handle(model, key) {
                    Action::Quit => return Ok(()),
                    Action::Refresh if primed => {
                        last = refresh(model, source, names, clock)?;
                        next = last + model.interval;
                    }
                    Action::Refresh | Action::Redraw => {}
                }
                if primed {
                    draw(terminal, model)?;
                }
            }
            Some(Event::Resize(..)) if primed => {
                terminal.autoresize().map_err(|e| terminal_error(&e))?;
                draw(terminal, model)?;
            }
            _ => {}
        }
    }
}

/// Runs the view on this process's terminal: refuses when standard output
/// is not one; otherwise raw mode and the alternate screen (ratatui's
/// `try_init`, which also installs a panic hook that restores the
/// terminal before the panic is reported), the loop, and the terminal
/// restored whatever the loop's outcome.
///
/// # Errors
/// Not a terminal ([`Kind::NotATerminal`]), a failed request, a terminal
/// failure.
pub fn terminal(
    model: &mut Model,
    source: &mut dyn Source,
    names: &dyn Names,
    interrupted: &mut dyn FnMut() -> bool,
) -> Result<(), Error> {
    if !io::stdout().is_terminal() {
        return Err(not_a_terminal());
    }
    let mut terminal = match ratatui::try_init() {
        Ok(terminal) => terminal,
        Err(e) => {
            // try_init may fail after raw mode and the alternate screen
            // (reading the size comes last): leave them before the error
            // is printed. Its own failure adds nothing to report.
            let _ = ratatui::try_restore();
            return Err(terminal_error(&e));
        }
    };
    let result = run(
        &mut terminal,
        model,
        source,
        names,
        &mut Crossterm,
        &mut SystemClock::default(),
        interrupted,
    );
    let restored = ratatui::try_restore().map_err(|e| terminal_error(&e));
    result.and(restored)
}

/// The refusal when standard output is not a terminal.
pub fn not_a_terminal() -> Error {
    Error::new(
        Kind::NotATerminal,
        "top is interactive and needs a terminal (a console window); standard output is a file or a pipe. For a log or a script use `wfpmonctl flows --watch SECONDS` (or `procs --watch`, `events --follow`), which print plain text or JSON",
    )
}

/// The refusal on a console that takes no virtual-terminal sequences (the
/// legacy console: `SetConsoleMode` refuses `ENABLE_VIRTUAL_TERMINAL_PROCESSING`).
///
/// crossterm would fall back to console API calls there, but its alternate
/// screen is then a second screen buffer made active, while ratatui writes
/// the text through standard output, which stays on the first one: the view
/// would draw on a buffer nobody sees. Refusing is the honest answer.
pub fn no_vt_console() -> Error {
    Error::new(
        Kind::NotATerminal,
        "top needs a console that takes virtual-terminal sequences (Windows Terminal, or the console host of Windows 10 or later with \"Use legacy console\" off); this console refused them. Use `wfpmonctl flows --watch SECONDS` (or `procs --watch`, `events --follow`) instead",
    )
}
