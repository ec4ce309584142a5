//! Drawing the [`Model`] with ratatui: title, tabs, the tab's table (only
//! the rows that fit are built), the status line, and the help.

use std::net::IpAddr;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, TableState, Wrap,
};

use super::keys::HELP;
use super::model::{Conn, EventRow, Mark, Model, Program, Row, Tab, columns};
use crate::flows::protocol_name;
use crate::view::units::{Units as Format, local_time};

/// Ages and durations as the other commands write them (human units).
const AGE: Format = Format::new(crate::view::units::Unit::Bytes, false);

/// The smallest terminal the view draws in.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 10;

/// How a column is laid out: a fixed width, or a share of what is left
/// with a minimum; and the rank by which columns are dropped when the
/// terminal is narrow (lowest first; 0: never).
#[derive(Clone, Copy, Debug)]
enum Width {
    Fixed(u16),
    Flex(u16, u16),
}

const fn layout(tab: Tab) -> &'static [(Width, u8)] {
    use Width::{Fixed, Flex};
    match tab {
        // PID PROGRAM CONNS IN/s OUT/s IN OUT
        Tab::Programs => &[
            (Fixed(7), 0),
            (Flex(14, 1), 0),
            (Fixed(6), 3),
            (Fixed(12), 0),
            (Fixed(12), 0),
            (Fixed(10), 2),
            (Fixed(10), 1),
        ],
        // PID PROGRAM PROTO LOCAL REMOTE HOST DIR AGE IN/s OUT/s IN OUT
        Tab::Connections => &[
            (Fixed(7), 7),
            (Flex(10, 4), 0),
            (Fixed(9), 6),
            (Flex(21, 2), 3),
            (Flex(21, 3), 0),
            (Flex(12, 2), 8),
            (Fixed(4), 4),
            (Fixed(6), 5),
            (Fixed(12), 0),
            (Fixed(12), 0),
            (Fixed(10), 2),
            (Fixed(10), 1),
        ],
        // TIME EVENT PID PROGRAM PROTO LOCAL REMOTE HOST DURATION IN OUT
        Tab::Events => &[
            (Fixed(12), 0),
            (Fixed(11), 0),
            (Fixed(7), 4),
            (Flex(10, 2), 0),
            (Fixed(9), 5),
            (Flex(21, 2), 6),
            (Flex(21, 3), 0),
            (Flex(12, 2), 7),
            (Fixed(9), 3),
            (Fixed(10), 2),
            (Fixed(10), 1),
        ],
    }
}

/// Columns of `tab` shown in `width` (their indices) and the widths of
/// the marker column and of each: columns are dropped by rank until the
/// minimum widths fit, then what is left is shared by the flexible
/// columns by weight.
fn fit(tab: Tab, width: u16) -> (Vec<usize>, Vec<Constraint>) {
    let spec = layout(tab);
    let min = |i: usize| match spec[i].0 {
        Width::Fixed(w) | Width::Flex(w, _) => w,
    };
    let mut shown: Vec<usize> = (0..spec.len()).collect();
    // The marker column and one space between columns.
    let need = |shown: &[usize]| -> u16 {
        shown.iter().map(|i| min(*i)).sum::<u16>()
            + 1
            + u16::try_from(shown.len()).unwrap_or(u16::MAX)
    };
    let mut ranks: Vec<(u8, usize)> = spec
        .iter()
        .enumerate()
        .filter(|(_, s)| s.1 > 0)
        .map(|(i, s)| (s.1, i))
        .collect();
    ranks.sort_unstable();
    for (_, i) in ranks {
        if need(&shown) <= width {
            break;
        }
        shown.retain(|x| *x != i);
    }
    let extra = width.saturating_sub(need(&shown));
    let weight = |i: usize| match spec[i].0 {
        Width::Fixed(_) => 0,
        Width::Flex(_, w) => w,
    };
    let weights: u16 = shown.iter().map(|i| weight(*i)).sum();
    let mut widths: Vec<u16> = shown
        .iter()
        .map(|i| min(*i) + (extra * weight(*i)).checked_div(weights).unwrap_or(0))
        .collect();
    // The rounding's remainder to the first flexible column.
    let used: u16 =
        widths.iter().sum::<u16>() + need(&shown) - shown.iter().map(|i| min(*i)).sum::<u16>();
    if let Some(first) = shown.iter().position(|i| weight(*i) > 0) {
        widths[first] += width.saturating_sub(used);
    }
    let mut constraints = vec![Constraint::Length(1)];
    constraints.extend(widths.into_iter().map(Constraint::Length));
    (shown, constraints)
}

fn endpoint(address: IpAddr, port: u16, icmp: bool) -> String {
    match (icmp, address) {
        (true, a) => a.to_string(),
        (false, IpAddr::V6(a)) => format!("[{a}]:{port}"),
        (false, IpAddr::V4(a)) => format!("{a}:{port}"),
    }
}

fn protocol(p: u8, icmp: bool, kind: (u16, u16)) -> String {
    if icmp {
        format!("{} {}/{}", protocol_name(p), kind.0, kind.1)
    } else {
        protocol_name(p)
    }
}

const fn style(mark: Mark) -> Style {
    match mark {
        Mark::New => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        Mark::Ended => Style::new().fg(Color::Red),
        Mark::None => Style::new(),
    }
}

const fn marker(mark: Mark) -> &'static str {
    match mark {
        Mark::New => "+",
        Mark::Ended => "-",
        Mark::None => " ",
    }
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).alignment(Alignment::Right))
}

/// The cells of a connection, in [`CONNECTION_COLUMNS`](super::model::CONNECTION_COLUMNS) order.
fn conn_cells(model: &Model, c: &Conn, indent: bool) -> Vec<Cell<'static>> {
    let units = model.units;
    let name = model
        .programs
        .get(&c.program)
        .map_or_else(|| "?".to_owned(), Program::label);
    let icmp = c.is_icmp();
    let program = if indent {
        format!("  └ {}", endpoint(c.remote, c.remote_port, icmp))
    } else {
        name
    };
    vec![
        right(c.program.pid.to_string()),
        Cell::from(program),
        Cell::from(protocol(c.protocol, icmp, (c.local_port, c.remote_port))),
        Cell::from(endpoint(c.local, c.local_port, icmp)),
        Cell::from(endpoint(c.remote, c.remote_port, icmp)),
        Cell::from(c.host.clone().unwrap_or_default()),
        Cell::from(if c.inbound { "in" } else { "out" }),
        right(AGE.age(c.age_ms)),
        right(units.rate(c.rate.0)),
        right(units.rate(c.rate.1)),
        right(units.amount(c.bytes.0)),
        right(units.amount(c.bytes.1)),
    ]
}

fn program_cells(model: &Model, p: &Program) -> Vec<Cell<'static>> {
    let units = model.units;
    let open = if model.expanded.contains(&p.id) {
        "▾ "
    } else {
        "▸ "
    };
    vec![
        right(p.id.pid.to_string()),
        Cell::from(format!("{open}{}", p.label())),
        right(p.conns.to_string()),
        right(units.rate(p.rate.0)),
        right(units.rate(p.rate.1)),
        right(units.amount(p.bytes.0)),
        right(units.amount(p.bytes.1)),
    ]
}

fn event_cells(model: &Model, e: &EventRow) -> Vec<Cell<'static>> {
    let units = model.units;
    let icmp = e.is_icmp();
    // Local time, as the other text views show it (JSON and CSV keep UTC).
    let time = local_time(e.wall, e.offset);
    let kind = match (e.known_kind, e.established) {
        (false, _) => "unknown",
        (true, true) => "established",
        (true, false) => "ended",
    };
    let ended = e.known_kind && !e.established;
    vec![
        Cell::from(time.get(11..23).unwrap_or_default().to_owned()),
        Cell::from(kind),
        right(e.pid.to_string()),
        Cell::from(e.program.clone()),
        Cell::from(protocol(e.protocol, icmp, (e.local_port, e.remote_port))),
        Cell::from(endpoint(e.local, e.local_port, icmp)),
        Cell::from(endpoint(e.remote, e.remote_port, icmp)),
        Cell::from(e.host.clone().unwrap_or_default()),
        right(if ended {
            AGE.age(e.duration / 10_000)
        } else {
            String::new()
        }),
        right(if ended {
            units.amount(e.bytes.0)
        } else {
            String::new()
        }),
        right(if ended {
            units.amount(e.bytes.1)
        } else {
            String::new()
        }),
    ]
}

/// The cells and mark of row `row`.
fn cells(model: &Model, row: Row) -> (Vec<Cell<'static>>, Mark) {
    match row {
        Row::Program(id) => model.programs.get(&id).map_or_else(
            || (Vec::new(), Mark::None),
            |p| (program_cells(model, p), model.mark(p.life)),
        ),
        Row::Conn(id) => model.conns.get(&id).map_or_else(
            || (Vec::new(), Mark::None),
            |c| {
                let child = model.tab == Tab::Programs;
                let mut cells = conn_cells(model, c, child);
                if child {
                    // Below its program: the program's columns.
                    let units = model.units;
                    cells = vec![
                        Cell::from(""),
                        cells.swap_remove(1),
                        Cell::from(""),
                        right(units.rate(c.rate.0)),
                        right(units.rate(c.rate.1)),
                        right(units.amount(c.bytes.0)),
                        right(units.amount(c.bytes.1)),
                    ];
                }
                (cells, model.mark(c.life))
            },
        ),
        Row::Event(seq) => model.event(seq).map_or_else(
            || (Vec::new(), Mark::None),
            |e| {
                let mark = if e.known_kind && !e.established {
                    Mark::Ended
                } else if e.established {
                    Mark::New
                } else {
                    Mark::None
                };
                (event_cells(model, e), mark)
            },
        ),
    }
}

/// Draws the whole view into `frame`.
pub fn draw(frame: &mut Frame<'_>, model: &mut Model) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "The terminal is too small ({}×{}): wfpmonctl top needs at least {MIN_WIDTH}×{MIN_HEIGHT}. Enlarge the window, or press q to quit.",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let [title, tabs, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(title_line(model, area.width), title);
    frame.render_widget(tab_line(model), tabs);
    table(frame, model, body);
    frame.render_widget(status_line(model), status);
    if model.help {
        help(frame, area);
    }
}

fn title_line(model: &Model, width: u16) -> Paragraph<'static> {
    let (rate_in, rate_out) = model.shown_rates();
    let live = model
        .conns
        .values()
        .filter(|c| c.life.ended.is_none())
        .count();
    let programs = model.programs.len();
    let rates = format!(
        "in {} out {}{}",
        model.units.rate(rate_in),
        model.units.rate(rate_out),
        if model.filter.is_empty() {
            ""
        } else {
            " (filtered)"
        }
    );
    let every = humantime::format_duration(model.interval);
    // The longest that fits: the rates always stay.
    let candidates = [
        format!(
            " wfpmonctl top │ {programs} programs │ {live} conns (driver: {}) │ {rates} │ every {every}",
            model.active
        ),
        format!(" wfpmonctl top │ {programs} programs │ {live} conns │ {rates} │ every {every}"),
        format!(" {programs} programs │ {live} conns │ {rates} │ every {every}"),
        format!(" {programs} programs │ {live} conns │ {rates}"),
        format!(" {rates}"),
    ];
    let paused = if model.paused { " │ PAUSED" } else { "" };
    let fits = |t: &String| t.chars().count() + paused.len() <= usize::from(width);
    let text = candidates
        .iter()
        .find(|t| fits(t))
        .unwrap_or(&candidates[candidates.len() - 1])
        .clone();
    let mut spans = vec![Span::raw(text)];
    if model.paused {
        spans.push(Span::styled(
            paused,
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    Paragraph::new(Line::from(spans)).style(Style::new().add_modifier(Modifier::REVERSED))
}

fn tab_line(model: &Model) -> Paragraph<'static> {
    let mut spans = Vec::new();
    for tab in Tab::ALL {
        let rows = &model.rows[tab.index()];
        let count = if tab == Tab::Programs {
            rows.iter().filter(|r| matches!(r, Row::Program(_))).count()
        } else {
            rows.len()
        };
        let label = format!(" {} ({count}) ", tab.title());
        spans.push(if tab == model.tab {
            Span::styled(
                label,
                Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD),
            )
        } else {
            Span::raw(label)
        });
        spans.push(Span::raw("│"));
    }
    if !model.filter.is_empty() {
        spans.push(Span::styled(
            format!(" filter: {}", model.filter.text),
            Style::new().fg(Color::Cyan),
        ));
    }
    if model.tab == Tab::Events && model.events_dropped > 0 {
        spans.push(Span::styled(
            format!(" {} events lost to the driver's ring", model.events_dropped),
            Style::new().fg(Color::Yellow),
        ));
    }
    Paragraph::new(Line::from(spans))
}

fn status_line(model: &Model) -> Paragraph<'static> {
    if let Some(text) = &model.input {
        let mut spans = vec![
            Span::styled("/", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(text.clone()),
            Span::styled("█", Style::new().add_modifier(Modifier::SLOW_BLINK)),
        ];
        match &model.status {
            Some(s) if s.error => {
                spans.push(Span::styled(
                    format!("  {}", s.text),
                    Style::new().fg(Color::Red),
                ));
            }
            _ => spans.push(Span::raw("  Enter applies, Esc cancels")),
        }
        return Paragraph::new(Line::from(spans));
    }
    model.status.as_ref().map_or_else(
        || {
            Paragraph::new(format!(
                " ? help  q quit  / filter  < > sort  r reverse  Space pause  b {}  Enter expand",
                model.units.toggled().name()
            ))
            .style(Style::new().fg(Color::DarkGray))
        },
        |s| {
            Paragraph::new(s.text.clone()).style(if s.error {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else {
                Style::new().fg(Color::Cyan)
            })
        },
    )
}

fn table(frame: &mut Frame<'_>, model: &mut Model, area: Rect) {
    let tab = model.tab;
    let t = tab.index();
    let (shown, constraints) = fit(tab, area.width);
    let sort = model.sort[t];
    let all = columns(tab);
    let mut header = vec![Cell::from("")];
    header.extend(shown.iter().map(|i| {
        let arrow = if *i != sort.column {
            ""
        } else if sort.descending {
            "▼"
        } else {
            "▲"
        };
        let title = format!("{}{arrow}", all[*i].title);
        if all[*i].descending {
            right(title)
        } else {
            Cell::from(title)
        }
    }));
    let header = TableRow::new(header)
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    // Only the rows that fit are built.
    let height = usize::from(area.height.saturating_sub(1));
    let rows = &model.rows[t];
    if rows.is_empty() {
        let text = if model.filter.is_empty() {
            match tab {
                Tab::Events => "no flow event yet".to_owned(),
                _ => "no connection is tracked".to_owned(),
            }
        } else {
            format!(
                "nothing matches the filter '{}' (/ to change it)",
                model.filter.text
            )
        };
        let table = Table::new(Vec::<TableRow<'_>>::new(), constraints).header(header);
        frame.render_widget(table, area);
        if area.height > 2 {
            let line = Rect {
                y: area.y + 2,
                height: 1,
                ..area
            };
            frame.render_widget(Paragraph::new(text).alignment(Alignment::Center), line);
        }
        return;
    }
    let selected = model.selected[t].min(rows.len() - 1);
    let mut offset = model.offset[t].min(rows.len().saturating_sub(1));
    if selected < offset {
        offset = selected;
    } else if height > 0 && selected >= offset + height {
        offset = selected + 1 - height;
    }
    model.offset[t] = offset;
    let window: Vec<TableRow<'static>> = rows[offset..rows.len().min(offset + height)]
        .iter()
        .map(|r| {
            let (cells, mark) = cells(model, *r);
            let mut line = vec![Cell::from(marker(mark))];
            line.extend(shown.iter().filter_map(|i| cells.get(*i).cloned()));
            TableRow::new(line).style(style(mark))
        })
        .collect();
    let table = Table::new(window, constraints)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(selected - offset));
    frame.render_stateful_widget(table, area, &mut state);
}

fn help(frame: &mut Frame<'_>, area: Rect) {
    let key_width = HELP
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let lines: Vec<Line<'static>> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<key_width$}  "),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    let width = area
        .width
        .min(u16::try_from(key_width + 62).unwrap_or(u16::MAX));
    let height = area
        .height
        .min(u16::try_from(HELP.len() + 2).unwrap_or(u16::MAX));
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" wfpmonctl top: keys (any key closes) ");
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false }),
        popup,
    );
}
