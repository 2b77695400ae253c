//! The state machine: what is shown, what is selected, which dialog is open, and what a key
//! does ([`handle_key`]). Pure: no terminal, no libvirt; [`crate::run`] performs the
//! [`Action`]s it returns.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use vmctl::commands::observe::{View, VmRow};

/// What the screen shows besides the main list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    List,
    /// Typing a filter (`/`): rows whose name contains it stay.
    Filter,
    /// The selected VM's details (Enter).
    Details,
    Help,
    /// `d`: the VM's exact name must be typed before it is deleted.
    ConfirmDelete {
        vm: String,
        typed: String,
        refused: bool,
    },
    /// `g`: the GPUs this VM can take (attach) or holds (detach).
    Gpu {
        vm: String,
        choices: Vec<GpuChoice>,
        selected: usize,
    },
    /// A result or an error (its help lines included), closed by any key.
    Message {
        title: String,
        lines: Vec<String>,
        error: bool,
    },
}

/// One line of the GPU dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuChoice {
    pub bdf: String,
    pub name: String,
    /// True: the VM holds it, Enter detaches; false: Enter attaches.
    pub attached: bool,
    /// Another VM holding it (attach is still offered: the library refuses with its reasons).
    pub held_by: Option<String>,
}

/// What [`crate::run`] must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    Start(String),
    Stop(String),
    Reboot(String),
    Delete(String),
    GpuAttach {
        vm: String,
        bdf: String,
    },
    GpuDetach {
        vm: String,
        bdf: String,
    },
    /// Scan the configured bridge (`n`): never run on its own.
    Scan,
}

/// The whole UI state.
#[derive(Debug, Clone)]
pub struct App {
    pub view: View,
    /// Index into [`App::visible`].
    pub selected: usize,
    pub filter: String,
    pub mode: Mode,
    /// `NO_COLOR`: no colours or styles but reverse video for the selection.
    pub no_color: bool,
    /// The last refresh's own time, for the header.
    pub refresh_ms: Option<f64>,
    /// One line for the footer (what an action did, a refresh error).
    pub status: Option<String>,
    /// Seconds since the epoch "now", for the scan's age (set by the loop; tests fix it).
    pub now_secs: u64,
    /// False for `--once`: no selection and no keys in the footer.
    pub interactive: bool,
}

impl App {
    pub fn new(view: View, no_color: bool) -> Self {
        App {
            view,
            selected: 0,
            filter: String::new(),
            mode: Mode::List,
            no_color,
            refresh_ms: None,
            status: None,
            now_secs: 0,
            interactive: true,
        }
    }

    /// The rows the filter keeps, in the view's order.
    pub fn visible(&self) -> Vec<&VmRow> {
        self.view
            .vms
            .iter()
            .filter(|v| self.filter.is_empty() || v.name.contains(&self.filter))
            .collect()
    }

    pub fn selected_vm(&self) -> Option<&VmRow> {
        self.visible().get(self.selected).copied()
    }

    /// A new view; the selection stays on the same VM when it is still there.
    pub fn set_view(&mut self, view: View) {
        let name = self.selected_vm().map(|v| v.name.clone());
        self.view = view;
        if let Some(n) = name
            && let Some(i) = self.visible().iter().position(|v| v.name == n)
        {
            self.selected = i;
        }
        self.clamp();
    }

    fn clamp(&mut self) {
        let n = self.visible().len();
        self.selected = self.selected.min(n.saturating_sub(1));
    }

    pub fn message(&mut self, title: &str, lines: Vec<String>, error: bool) {
        self.mode = Mode::Message {
            title: title.to_string(),
            lines,
            error,
        };
    }

    /// The GPU dialog's choices for `vm`: the GPUs it holds, then the others.
    fn gpu_choices(&self, vm: &str) -> Vec<GpuChoice> {
        let mut c: Vec<GpuChoice> = self
            .view
            .gpus
            .iter()
            .map(|g| GpuChoice {
                bdf: g.bdf.clone(),
                name: g.name.clone(),
                attached: g.vm.as_deref() == Some(vm),
                held_by: g.vm.clone().filter(|h| h != vm),
            })
            .collect();
        c.sort_by_key(|g| !g.attached);
        c
    }
}

fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c')
}

/// What `key` does in the current mode. Actions that need a VM in a given state say so in a
/// message instead (x on a shut-off VM), so nothing is asked of libvirt for nothing.
pub fn handle_key(app: &mut App, key: KeyEvent) -> Action {
    if is_ctrl_c(&key) {
        return Action::Quit;
    }
    match app.mode.clone() {
        Mode::List => list_key(app, key),
        Mode::Filter => {
            match key.code {
                KeyCode::Esc => {
                    app.filter.clear();
                    app.mode = Mode::List;
                }
                KeyCode::Enter => app.mode = Mode::List,
                KeyCode::Backspace => {
                    app.filter.pop();
                }
                KeyCode::Char(c) => app.filter.push(c),
                _ => {}
            }
            app.clamp();
            Action::None
        }
        Mode::Details | Mode::Help | Mode::Message { .. } => {
            if key.code == KeyCode::Char('q') && matches!(app.mode, Mode::Details | Mode::Help) {
                return Action::Quit;
            }
            app.mode = Mode::List;
            Action::None
        }
        Mode::ConfirmDelete { vm, mut typed, .. } => match key.code {
            KeyCode::Esc => {
                app.mode = Mode::List;
                app.status = Some(format!("delete of {vm} cancelled"));
                Action::None
            }
            KeyCode::Enter if typed == vm => {
                app.mode = Mode::List;
                Action::Delete(vm)
            }
            KeyCode::Enter => {
                app.mode = Mode::ConfirmDelete {
                    vm,
                    typed: String::new(),
                    refused: true,
                };
                Action::None
            }
            KeyCode::Backspace => {
                typed.pop();
                app.mode = Mode::ConfirmDelete {
                    vm,
                    typed,
                    refused: false,
                };
                Action::None
            }
            KeyCode::Char(c) => {
                typed.push(c);
                app.mode = Mode::ConfirmDelete {
                    vm,
                    typed,
                    refused: false,
                };
                Action::None
            }
            _ => Action::None,
        },
        Mode::Gpu {
            vm,
            choices,
            selected,
        } => match key.code {
            KeyCode::Esc | KeyCode::Char('q') => {
                app.mode = Mode::List;
                Action::None
            }
            KeyCode::Up | KeyCode::Char('k') => {
                app.mode = Mode::Gpu {
                    vm,
                    choices,
                    selected: selected.saturating_sub(1),
                };
                Action::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                let selected = (selected + 1).min(choices.len().saturating_sub(1));
                app.mode = Mode::Gpu {
                    vm,
                    choices,
                    selected,
                };
                Action::None
            }
            KeyCode::Enter => {
                app.mode = Mode::List;
                match choices.get(selected) {
                    Some(c) if c.attached => Action::GpuDetach {
                        vm,
                        bdf: c.bdf.clone(),
                    },
                    Some(c) => Action::GpuAttach {
                        vm,
                        bdf: c.bdf.clone(),
                    },
                    None => Action::None,
                }
            }
            _ => Action::None,
        },
    }
}

fn list_key(app: &mut App, key: KeyEvent) -> Action {
    // The last action's result has been seen: the footer shows the keys again (a refresh
    // failure stays until a refresh succeeds).
    if app
        .status
        .as_deref()
        .is_some_and(|s| !s.starts_with("refresh failed"))
    {
        app.status = None;
    }
    let n = app.visible().len();
    let vm = app.selected_vm().cloned();
    let need_vm = |app: &mut App| {
        app.status = Some("no VM selected".into());
        Action::None
    };
    match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Esc => {
            app.filter.clear();
            app.clamp();
            Action::None
        }
        KeyCode::Up | KeyCode::Char('k') => {
            app.selected = app.selected.saturating_sub(1);
            Action::None
        }
        KeyCode::Down | KeyCode::Char('j') => {
            app.selected = (app.selected + 1).min(n.saturating_sub(1));
            Action::None
        }
        KeyCode::Home => {
            app.selected = 0;
            Action::None
        }
        KeyCode::End => {
            app.selected = n.saturating_sub(1);
            Action::None
        }
        KeyCode::Char('/') => {
            app.mode = Mode::Filter;
            Action::None
        }
        KeyCode::Char('?') => {
            app.mode = Mode::Help;
            Action::None
        }
        KeyCode::Char('n') => Action::Scan,
        KeyCode::Enter => {
            if vm.is_some() {
                app.mode = Mode::Details;
                Action::None
            } else {
                need_vm(app)
            }
        }
        KeyCode::Char(c @ ('s' | 'x' | 'r' | 'd' | 'g')) => {
            let Some(vm) = vm else {
                return need_vm(app);
            };
            let active = vm.state.is_active();
            let name = vm.name.clone();
            match c {
                's' if active => {
                    app.message(
                        "start",
                        vec![format!("{name} is already {}", vm.state.as_str())],
                        false,
                    );
                    Action::None
                }
                's' => Action::Start(name),
                'x' | 'r' if !active => {
                    app.message(
                        if c == 'x' { "stop" } else { "reboot" },
                        vec![
                            format!("{name} is {}", vm.state.as_str()),
                            "help: press s to start it".into(),
                        ],
                        false,
                    );
                    Action::None
                }
                'x' => Action::Stop(name),
                'r' => Action::Reboot(name),
                'd' if active => {
                    app.message(
                        "delete",
                        vec![
                            format!(
                                "{name} is {}: only a shut-off VM is deleted",
                                vm.state.as_str()
                            ),
                            "help: press x to stop it first".into(),
                        ],
                        true,
                    );
                    Action::None
                }
                'd' => {
                    app.mode = Mode::ConfirmDelete {
                        vm: name,
                        typed: String::new(),
                        refused: false,
                    };
                    Action::None
                }
                _ => {
                    if let Some(note) = &app.view.gpus_note {
                        let note = note.clone();
                        app.message("GPUs", vec![note], false);
                        return Action::None;
                    }
                    let choices = app.gpu_choices(&name);
                    if choices.is_empty() {
                        app.message(
                            "GPUs",
                            vec![
                                "this host has no NVIDIA GPU".into(),
                                "help: `vmctl gpu status` shows what vmctl detects".into(),
                            ],
                            false,
                        );
                        return Action::None;
                    }
                    app.mode = Mode::Gpu {
                        vm: name,
                        choices,
                        selected: 0,
                    };
                    Action::None
                }
            }
        }
        _ => Action::None,
    }
}
