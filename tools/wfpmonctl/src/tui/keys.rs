//! Keys of the live view and what they do to the [`Model`].

use std::fmt::Write as _;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::filter::Filter;
use super::model::{Model, Row, Status, Tab, columns};

/// The keys, as the help screen and the README list them.
pub const HELP: [(&str, &str); 17] = [
    ("Tab, Shift+Tab", "next / previous tab"),
    ("p  c  e", "Programs, Connections, Events tab"),
    ("↑ ↓  PgUp PgDn  Home End", "move the selection (also j k)"),
    ("Enter, →, ←", "expand / collapse a program (Programs tab)"),
    ("+  -", "expand / collapse every program"),
    ("<  >", "sort by the column left / right of the current one"),
    ("r", "reverse the sort order"),
    ("/", "filter: type words, Enter applies, Esc cancels"),
    ("", "  10.0.0.0/8  192.0.2.7  :443  pid:1234  proto:udp"),
    ("", "  other words: program, path, service or host name"),
    (
        "Ctrl+U (in /)",
        "clear what is typed; an empty filter shows all",
    ),
    ("Space", "pause / resume refreshing"),
    ("b", "rates and amounts in bits (kbit/s) or bytes (KiB/s)"),
    ("?, F1", "this help (any key closes it)"),
    ("q, Esc, Ctrl+C", "quit"),
    (
        "",
        "green: new connection; red: ended, shown for a few seconds",
    ),
    ("", "+ marks a new row, - an ended one"),
];

/// What the loop does after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Redraw.
    Redraw,
    /// Refresh now (pause ended), then redraw.
    Refresh,
    Quit,
}

fn describe(code: KeyCode, modifiers: KeyModifiers) -> String {
    let mut name = String::new();
    for (bit, word) in [
        (KeyModifiers::CONTROL, "Ctrl+"),
        (KeyModifiers::ALT, "Alt+"),
        (KeyModifiers::SUPER, "Win+"),
    ] {
        if modifiers.contains(bit) {
            name.push_str(word);
        }
    }
    let _ = match code {
        KeyCode::Char(c) => write!(name, "'{c}'"),
        KeyCode::F(n) => write!(name, "F{n}"),
        other => write!(name, "{other:?}"),
    };
    name
}

/// Applies `key` to `model`.
pub fn handle(model: &mut Model, key: KeyEvent) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::Redraw;
    }
    let (code, mods) = (key.code, key.modifiers);
    if mods.contains(KeyModifiers::CONTROL) && matches!(code, KeyCode::Char('c' | 'C')) {
        return Action::Quit;
    }
    if model.input.is_some() {
        return edit(model, code, mods);
    }
    if model.help {
        // Any key closes the help; q still quits.
        model.help = false;
        return if matches!(code, KeyCode::Char('q')) {
            Action::Quit
        } else {
            Action::Redraw
        };
    }
    model.status = None;
    let tab = model.tab.index();
    let rows = model.rows[tab].len();
    let page = 10;
    match code {
        KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
        KeyCode::Char('?') | KeyCode::F(1) => model.help = true,
        KeyCode::Tab => model.tab = Tab::ALL[(tab + 1) % 3],
        KeyCode::BackTab => model.tab = Tab::ALL[(tab + 2) % 3],
        KeyCode::Char('p') => model.tab = Tab::Programs,
        KeyCode::Char('c') => model.tab = Tab::Connections,
        KeyCode::Char('e') => model.tab = Tab::Events,
        KeyCode::Down | KeyCode::Char('j') => move_to(model, model.selected[tab] + 1),
        KeyCode::Up | KeyCode::Char('k') => move_to(model, model.selected[tab].saturating_sub(1)),
        KeyCode::PageDown => move_to(model, model.selected[tab] + page),
        KeyCode::PageUp => move_to(model, model.selected[tab].saturating_sub(page)),
        KeyCode::Home => move_to(model, 0),
        KeyCode::End => move_to(model, rows.saturating_sub(1)),
        KeyCode::Enter | KeyCode::Right | KeyCode::Left => expand(model, code),
        KeyCode::Char('+') => {
            model.expanded = model.programs.keys().copied().collect();
            model.rebuild();
        }
        KeyCode::Char('-') => {
            model.expanded.clear();
            model.rebuild();
        }
        KeyCode::Char('<' | ',') => resort(model, -1),
        KeyCode::Char('>' | '.') => resort(model, 1),
        KeyCode::Char('r') => {
            model.sort[tab].descending = !model.sort[tab].descending;
            model.rebuild();
        }
        KeyCode::Char('/') => model.input = Some(model.filter.text.clone()),
        KeyCode::Char(' ') => {
            model.paused = !model.paused;
            if !model.paused {
                return Action::Refresh;
            }
        }
        KeyCode::Char('b') => model.units = model.units.toggled(),
        other => {
            model.status = Some(Status {
                text: format!(
                    "unknown key {}: press ? for the list of keys",
                    describe(other, mods)
                ),
                error: true,
            });
        }
    }
    Action::Redraw
}

fn move_to(model: &mut Model, row: usize) {
    let tab = model.tab.index();
    model.selected[tab] = row.min(model.rows[tab].len().saturating_sub(1));
}

/// Sorts by the column `step` places from the current one.
fn resort(model: &mut Model, step: isize) {
    let tab = model.tab.index();
    let all = columns(model.tab);
    let n = all.len().cast_signed();
    let column = (model.sort[tab].column.cast_signed() + step)
        .rem_euclid(n)
        .cast_unsigned();
    model.sort[tab].column = column;
    model.sort[tab].descending = all[column].descending;
    model.rebuild();
}

fn expand(model: &mut Model, code: KeyCode) {
    if model.tab != Tab::Programs {
        return;
    }
    let tab = model.tab.index();
    // On a connection row, the program above it.
    let Some(program) = model.rows[tab][..model.rows[tab].len().min(model.selected[tab] + 1)]
        .iter()
        .rev()
        .find_map(|r| match r {
            Row::Program(p) => Some(*p),
            _ => None,
        })
    else {
        return;
    };
    let open = match code {
        KeyCode::Right => true,
        KeyCode::Left => false,
        _ => !model.expanded.contains(&program),
    };
    if open {
        model.expanded.insert(program);
    } else {
        model.expanded.remove(&program);
    }
    model.rebuild();
    if let Some(i) = model.rows[tab]
        .iter()
        .position(|r| *r == Row::Program(program))
    {
        model.selected[tab] = i;
    }
}

/// A key while the filter is typed.
fn edit(model: &mut Model, code: KeyCode, mods: KeyModifiers) -> Action {
    let Some(text) = model.input.as_mut() else {
        return Action::Redraw;
    };
    match code {
        KeyCode::Esc => {
            model.input = None;
            model.status = None;
        }
        KeyCode::Enter => match Filter::parse(text) {
            Ok(filter) => {
                model.status = Some(Status {
                    text: if filter.is_empty() {
                        "filter cleared: everything is shown".to_owned()
                    } else {
                        format!("filter: {}", filter.text)
                    },
                    error: false,
                });
                model.filter = filter;
                model.input = None;
                model.selected = [0; 3];
                model.rebuild();
            }
            // The typed text stays, to be corrected.
            Err(message) => {
                model.status = Some(Status {
                    text: message,
                    error: true,
                });
            }
        },
        KeyCode::Backspace => {
            text.pop();
        }
        KeyCode::Char('u') if mods.contains(KeyModifiers::CONTROL) => text.clear(),
        KeyCode::Char(c) if !mods.contains(KeyModifiers::CONTROL) && text.chars().count() < 200 => {
            text.push(c);
        }
        _ => {}
    }
    Action::Redraw
}
