//! Drawing an [`App`]: the VM table, the GPU table (or the remote note), the bridge line, the
//! footer, and the dialog of the current mode on top. Pure: the same app draws the same screen.
//!
//! A narrow terminal drops the least useful columns first (autostart, cluster, GPUs, disk,
//! network, …) rather than wrapping or squeezing names; `NO_COLOR` keeps only reverse video for
//! the selection (and its `>` marker).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use vmctl::commands::observe::VmRow;
use vmctl::hypervisor::State;

use crate::app::{App, Mode};
use crate::fmt;

/// One VM column: its header, its cell, its widest allowed width, and how long it stays.
struct Col {
    title: &'static str,
    /// Lower goes first when the terminal is too narrow.
    keep: u8,
    max: u16,
    cell: fn(&VmRow) -> String,
}

/// The columns in screen order.
fn columns() -> Vec<Col> {
    vec![
        Col {
            title: "NAME",
            keep: 255,
            max: 32,
            cell: |v| v.name.clone(),
        },
        Col {
            title: "STATE",
            keep: 250,
            max: 11,
            cell: |v| v.state.as_str().to_string(),
        },
        Col {
            title: "VCPU",
            keep: 150,
            max: 4,
            cell: |v| v.vcpus.to_string(),
        },
        Col {
            title: "CPU%",
            keep: 200,
            max: 6,
            cell: |v| fmt::percent(v.cpu_percent.filter(|_| v.state.is_active())),
        },
        Col {
            title: "MEMORY",
            keep: 190,
            max: 17,
            cell: |v| fmt::memory(v.memory_used_kib, v.memory_kib),
        },
        Col {
            title: "DISK R/W",
            keep: 100,
            max: 11,
            cell: |v| match v.state.is_active() {
                true => fmt::rate_pair(v.disk_read_bps, v.disk_write_bps),
                false => "-".into(),
            },
        },
        Col {
            title: "NET RX/TX",
            keep: 110,
            max: 11,
            cell: |v| match v.state.is_active() {
                true => fmt::rate_pair(v.net_rx_bps, v.net_tx_bps),
                false => "-".into(),
            },
        },
        Col {
            title: "IP",
            keep: 180,
            max: 16,
            cell: |v| {
                let mut s = v.ips.first().map(ToString::to_string).unwrap_or_default();
                if v.ips.len() > 1 {
                    s.push('+');
                }
                s
            },
        },
        Col {
            title: "GPUS",
            keep: 120,
            max: 12,
            cell: |v| match v.gpus.len() {
                0 => String::new(),
                1 => short_bdf(&v.gpus[0]),
                n => format!("{} +{}", short_bdf(&v.gpus[0]), n - 1),
            },
        },
        Col {
            title: "AUTO",
            keep: 60,
            max: 4,
            cell: |v| if v.autostart { "yes" } else { "" }.to_string(),
        },
        Col {
            title: "CLUSTER/ROLE",
            keep: 90,
            max: 24,
            cell: |v| match (&v.cluster, &v.role) {
                (Some(c), Some(r)) => format!("{c}/{r}"),
                (Some(c), None) => c.clone(),
                _ => String::new(),
            },
        },
    ]
}

/// `0000:01:00.0` as `01:00.0`: the domain is almost always 0000.
fn short_bdf(bdf: &str) -> String {
    bdf.strip_prefix("0000:").unwrap_or(bdf).to_string()
}

/// The columns that fit in `width` (the selection marker and column gaps included), each as
/// wide as its header or its longest cell. Columns no row fills (GPUs, cluster, autostart on
/// a host without them) are left out; then the lowest `keep` go first; the name column
/// shrinks (to 12 at least) only when nothing else can go.
fn fit(rows: &[&VmRow], width: u16) -> Vec<(Col, u16)> {
    let mut cols: Vec<(Col, u16)> = columns()
        .into_iter()
        .filter_map(|c| {
            let cells: Vec<String> = rows.iter().map(|v| (c.cell)(v)).collect();
            let optional = matches!(c.title, "GPUS" | "AUTO" | "CLUSTER/ROLE");
            if optional && !rows.is_empty() && cells.iter().all(String::is_empty) {
                return None;
            }
            let w = cells
                .iter()
                .map(|s| s.chars().count())
                .chain([c.title.len()])
                .max()
                .unwrap_or(0) as u16;
            let w = w.min(c.max);
            Some((c, w))
        })
        .collect();
    let total = |cols: &[(Col, u16)]| -> u16 {
        // "> " marker, one space between columns
        2 + cols.iter().map(|c| c.1).sum::<u16>() + cols.len().saturating_sub(1) as u16
    };
    while total(&cols) > width {
        let lowest = cols
            .iter()
            .enumerate()
            .filter(|(_, c)| c.0.keep < 250)
            .min_by_key(|(_, c)| c.0.keep)
            .map(|(i, _)| i);
        match lowest {
            Some(i) => {
                cols.remove(i);
            }
            None => {
                let over = total(&cols) - width;
                cols[0].1 = cols[0].1.saturating_sub(over).max(12);
                break;
            }
        }
    }
    cols
}

/// Styles, or none of them under `NO_COLOR`.
struct Theme {
    plain: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.plain {
            Style::default()
        } else {
            Style::default().fg(c)
        }
    }
    fn bold(&self) -> Style {
        if self.plain {
            Style::default()
        } else {
            Style::default().add_modifier(Modifier::BOLD)
        }
    }
    fn header(&self) -> Style {
        if self.plain {
            Style::default()
        } else {
            Style::default()
                .fg(Color::Cyan)
                .add_modifier(Modifier::BOLD)
        }
    }
    fn state(&self, s: State) -> Style {
        self.fg(match s {
            State::Running | State::Blocked => Color::Green,
            State::Paused | State::Suspended | State::ShuttingDown => Color::Yellow,
            State::Crashed => Color::Red,
            _ => Color::DarkGray,
        })
    }
}

/// Draws the whole screen.
pub fn render(app: &App, f: &mut Frame) {
    let theme = Theme {
        plain: app.no_color,
    };
    let area = f.area();
    let gpu_h = if app.view.gpus_note.is_some() || app.view.gpus.is_empty() {
        1
    } else {
        (app.view.gpus.len() as u16 + 1).min(6)
    };
    let [header, vms, gpus, bridge, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(gpu_h + 1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(app, &theme, f, header);
    render_vms(app, &theme, f, vms);
    render_gpus(app, &theme, f, gpus);
    render_bridge(app, &theme, f, bridge);
    render_footer(app, &theme, f, footer);
    match &app.mode {
        Mode::List | Mode::Filter => {}
        Mode::Details => render_details(app, &theme, f, area),
        Mode::Help => render_help(&theme, f, area),
        Mode::ConfirmDelete { vm, typed, refused } => {
            let mut lines = vec![
                Line::from(format!(
                    "Delete VM {vm} and the storage vmctl created for it?"
                )),
                Line::from("Type its name and press Enter (Esc cancels):"),
                Line::from(vec![
                    Span::raw("> "),
                    Span::styled(typed.clone(), theme.bold()),
                    Span::raw("_"),
                ]),
            ];
            if *refused {
                lines.push(Line::styled(
                    format!("That is not the name: {vm} is kept."),
                    theme.fg(Color::Red),
                ));
            }
            popup(f, &theme, area, "delete", lines, 64, true);
        }
        Mode::Gpu {
            vm,
            choices,
            selected,
        } => {
            let mut lines = vec![Line::from(format!(
                "GPUs for {vm} (Enter attaches or detaches, Esc closes):"
            ))];
            let name_w = choices
                .iter()
                .map(|c| c.name.chars().count())
                .max()
                .unwrap_or(0);
            for (i, c) in choices.iter().enumerate() {
                let what = if c.attached {
                    "detach".to_string()
                } else if let Some(h) = &c.held_by {
                    format!("attach (held by {h})")
                } else {
                    "attach".to_string()
                };
                let text = format!(
                    "{} {}  {:<name_w$}  {what}",
                    if i == *selected { ">" } else { " " },
                    c.bdf,
                    c.name
                );
                let style = if i == *selected {
                    Style::default().add_modifier(Modifier::REVERSED)
                } else {
                    Style::default()
                };
                lines.push(Line::styled(text, style));
            }
            popup(f, &theme, area, "gpu", lines, 72, false);
        }
        Mode::Message {
            title,
            lines,
            error,
        } => {
            let mut ls: Vec<Line> = Vec::new();
            for (i, l) in lines.iter().enumerate() {
                if i == 0 && *error {
                    ls.push(Line::styled(format!("error: {l}"), theme.fg(Color::Red)));
                } else {
                    ls.push(Line::from(l.clone()));
                }
            }
            ls.push(Line::from(""));
            ls.push(Line::styled("(any key closes)", theme.fg(Color::DarkGray)));
            popup(f, &theme, area, title, ls, 76, *error);
        }
    }
}

fn render_header(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let running = app.view.vms.iter().filter(|v| v.state.is_active()).count();
    let mut text = format!(
        "vmctl top - {}  {} VMs, {} running",
        app.view.uri,
        app.view.vms.len(),
        running
    );
    if let Some(ms) = app.refresh_ms {
        text += &format!("  refresh {ms:.1} ms");
    }
    f.render_widget(Paragraph::new(text).style(theme.bold()), area);
}

fn render_vms(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let rows = app.visible();
    let cols = fit(&rows, area.width);
    let header = Row::new(cols.iter().map(|c| Cell::from(c.0.title))).style(theme.header());
    let body: Vec<Row> = rows
        .iter()
        .map(|v| {
            Row::new(cols.iter().map(|(c, _)| {
                let text = (c.cell)(v);
                if c.title == "STATE" {
                    Cell::from(text).style(theme.state(v.state))
                } else {
                    Cell::from(text)
                }
            }))
        })
        .collect();
    let widths: Vec<Constraint> = cols.iter().map(|c| Constraint::Length(c.1)).collect();
    let title = if app.filter.is_empty() {
        " VMs ".to_string()
    } else {
        format!(
            " VMs ({} of {}, filter: {}) ",
            rows.len(),
            app.view.vms.len(),
            app.filter
        )
    };
    let table = Table::new(body, widths)
        .header(header)
        .block(Block::default().borders(Borders::TOP).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .highlight_spacing(ratatui::widgets::HighlightSpacing::Always);
    let mut state = TableState::default();
    if !rows.is_empty() && app.interactive {
        state.select(Some(app.selected));
    }
    f.render_stateful_widget(table, area, &mut state);
    if rows.is_empty() {
        let msg = if app.view.vms.is_empty() {
            "  no VMs on this connection"
        } else {
            "  no VM matches the filter (Esc clears it)"
        };
        let inner = Rect {
            y: area.y + 2,
            height: 1,
            ..area
        };
        if area.height > 2 {
            f.render_widget(Paragraph::new(msg), inner);
        }
    }
}

fn render_gpus(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let block = Block::default().borders(Borders::TOP).title(" GPUs ");
    if let Some(note) = &app.view.gpus_note {
        f.render_widget(
            Paragraph::new(format!("  {note}"))
                .style(theme.fg(Color::DarkGray))
                .block(block),
            area,
        );
        return;
    }
    if app.view.gpus.is_empty() {
        f.render_widget(
            Paragraph::new("  no NVIDIA GPU on this host").block(block),
            area,
        );
        return;
    }
    let wide = area.width >= 80;
    let name_w = app
        .view
        .gpus
        .iter()
        .map(|g| g.name.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(4, 40) as u16;
    let mut widths = vec![
        Constraint::Length(12),
        Constraint::Length(name_w),
        Constraint::Length(10),
        Constraint::Length(16),
    ];
    let mut titles = vec!["BDF", "NAME", "DRIVER", "VM"];
    if wide {
        widths.push(Constraint::Length(8));
        titles.push("ISOLATED");
    }
    let rows: Vec<Row> = app
        .view
        .gpus
        .iter()
        .map(|g| {
            let mut cells = vec![
                Cell::from(short_bdf(&g.bdf)),
                Cell::from(g.name.clone()),
                Cell::from(g.driver.clone().unwrap_or_else(|| "-".into())),
                Cell::from(g.vm.clone().unwrap_or_default()),
            ];
            if wide {
                cells.push(Cell::from(match g.isolated {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "?",
                }));
            }
            Row::new(cells)
        })
        .collect();
    let table = Table::new(rows, widths)
        .header(Row::new(titles).style(theme.header()))
        .block(block)
        .column_spacing(1);
    f.render_widget(table, area);
}

fn render_bridge(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let text = match &app.view.bridge {
        Some(b) => {
            let conflicts = match b.conflicts.as_slice() {
                [] => "no conflicts".to_string(),
                [one] => format!("1 conflict: {one}"),
                [a, b2, rest @ ..] => {
                    let more = if rest.is_empty() {
                        String::new()
                    } else {
                        format!(" +{}", rest.len())
                    };
                    format!("{} conflicts: {a}, {b2}{more}", b.conflicts.len())
                }
            };
            let age = fmt::age(app.now_secs.saturating_sub(b.scanned_at));
            let long = format!(
                "Bridge {} {}: {} free, {} used, {conflicts}; scanned {age} ago (n: scan)",
                b.interface, b.subnet, b.free_count, b.used_count
            );
            if long.chars().count() <= area.width as usize {
                long
            } else {
                format!(
                    "{} {}: {} free, {conflicts}; {age} ago",
                    b.interface, b.subnet, b.free_count
                )
            }
        }
        None => format!("Bridge {}: not scanned yet (n: scan)", app.view.bridge_name),
    };
    let style = match &app.view.bridge {
        Some(b) if !b.conflicts.is_empty() => theme.fg(Color::Red),
        _ => Style::default(),
    };
    f.render_widget(Paragraph::new(text).style(style), area);
}

fn render_footer(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let line = if app.mode == Mode::Filter {
        Line::from(vec![
            Span::styled("/", theme.bold()),
            Span::raw(app.filter.clone()),
            Span::raw("_  (Enter keeps, Esc clears)"),
        ])
    } else if let Some(s) = &app.status {
        Line::from(s.clone())
    } else if !app.interactive {
        Line::from(format!(
            "libvirt round trips for this refresh: {}",
            app.view.round_trips
        ))
    } else {
        let keys = if area.width >= 100 {
            "Enter details  s start  x stop  r reboot  d delete  g GPU  n scan  / filter  ? help  q quit"
        } else {
            "Enter info s start x stop r reboot d del g GPU n scan / filter ? q"
        };
        Line::styled(keys, theme.fg(Color::DarkGray))
    };
    f.render_widget(Paragraph::new(line), area);
}

fn render_details(app: &App, theme: &Theme, f: &mut Frame, area: Rect) {
    let Some(v) = app.selected_vm() else {
        return;
    };
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let count = |o: Option<u64>| o.map_or_else(|| "-".into(), |b| fmt::bytes(b as f64));
    let rows: Vec<(&str, String)> = vec![
        ("state", v.state.as_str().to_string()),
        ("vCPUs", v.vcpus.to_string()),
        ("CPU", format!("{} %", fmt::percent(v.cpu_percent))),
        (
            "CPU time",
            v.cpu_time_ns
                .map_or_else(|| "-".into(), |ns| format!("{:.1} s", ns as f64 / 1e9)),
        ),
        ("memory", fmt::memory(v.memory_used_kib, v.memory_kib)),
        (
            "disk read",
            format!(
                "{} ({})",
                fmt::rate(v.disk_read_bps),
                count(v.disk_read_bytes)
            ),
        ),
        (
            "disk write",
            format!(
                "{} ({})",
                fmt::rate(v.disk_write_bps),
                count(v.disk_write_bytes)
            ),
        ),
        (
            "net rx",
            format!("{} ({})", fmt::rate(v.net_rx_bps), count(v.net_rx_bytes)),
        ),
        (
            "net tx",
            format!("{} ({})", fmt::rate(v.net_tx_bps), count(v.net_tx_bytes)),
        ),
        (
            "IPs",
            if v.ips.is_empty() {
                "-".into()
            } else {
                v.ips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        (
            "GPUs",
            if v.gpus.is_empty() {
                "-".into()
            } else {
                v.gpus.join(", ")
            },
        ),
        ("autostart", if v.autostart { "yes" } else { "no" }.into()),
        ("persistent", if v.persistent { "yes" } else { "no" }.into()),
        ("made by vmctl", if v.vmctl { "yes" } else { "no" }.into()),
        ("OS", opt(&v.os)),
        ("cluster", opt(&v.cluster)),
        ("role", opt(&v.role)),
    ];
    let mut lines: Vec<Line> = rows
        .into_iter()
        .map(|(k, val)| {
            Line::from(vec![
                Span::styled(format!("{k:<14}"), theme.bold()),
                Span::raw(val),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::styled("(any key closes)", theme.fg(Color::DarkGray)));
    popup(f, theme, area, &v.name, lines, 64, false);
}

/// The keys, one per line (also the README's list).
pub const KEYS: &[(&str, &str)] = &[
    ("Up/Down, j/k", "select a VM"),
    ("Enter", "details of the selected VM"),
    ("s", "start"),
    (
        "x",
        "stop (ACPI shutdown request; the list shows when it is off)",
    ),
    ("r", "reboot (ACPI)"),
    (
        "d",
        "delete: asks for the VM's name first (shut-off VMs only)",
    ),
    ("g", "attach or detach a GPU (the same checks as vmctl gpu)"),
    ("n", "scan the bridge now (ARP, as vmctl ip check)"),
    ("/", "filter by name (Enter keeps, Esc clears)"),
    ("?", "this help"),
    ("Esc", "close a dialog, clear the filter"),
    ("q, Ctrl-C", "quit"),
];

fn render_help(theme: &Theme, f: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<14}"), theme.bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(
        "The bridge is scanned only when you press n; the line shows the last scan's age.",
    ));
    lines.push(Line::styled("(any key closes)", theme.fg(Color::DarkGray)));
    popup(f, theme, area, "help", lines, 78, false);
}

/// A bordered box centred on `area`, at most `max_w` wide, high enough for `lines` (wrapped).
fn popup(
    f: &mut Frame,
    theme: &Theme,
    area: Rect,
    title: &str,
    lines: Vec<Line>,
    max_w: u16,
    alert: bool,
) {
    let w = max_w.min(area.width.saturating_sub(2)).max(10);
    let inner_w = w.saturating_sub(2).max(1) as usize;
    let needed: usize = lines
        .iter()
        .map(|l| l.width().max(1).div_ceil(inner_w))
        .sum();
    let h = (needed as u16 + 2).min(area.height);
    let rect = Rect {
        x: area.x + (area.width.saturating_sub(w)) / 2,
        y: area.y + (area.height.saturating_sub(h)) / 2,
        width: w,
        height: h,
    };
    let border = if alert {
        theme.fg(Color::Red)
    } else {
        theme.fg(Color::Cyan)
    };
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(border)
                .title(format!(" {title} ")),
        ),
        rect,
    );
}
