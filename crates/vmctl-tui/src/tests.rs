//! The UI on a hand-built view (render snapshots, keys) and on libvirt's test driver (an action
//! really changes the domain).

#![allow(clippy::unwrap_used)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use vmctl::commands::observe::{BridgeScan, GpuRow, View, VmRow};
use vmctl::hypervisor::State;

use super::*;

fn vm(name: &str, state: State) -> VmRow {
    VmRow {
        name: name.into(),
        state,
        vcpus: 2,
        cpu_percent: None,
        cpu_time_ns: None,
        memory_used_kib: None,
        memory_kib: 2 * 1024 * 1024,
        disk_read_bytes: None,
        disk_write_bytes: None,
        net_rx_bytes: None,
        net_tx_bytes: None,
        disk_read_bps: None,
        disk_write_bps: None,
        net_rx_bps: None,
        net_tx_bps: None,
        ips: Vec::new(),
        gpus: Vec::new(),
        autostart: false,
        persistent: true,
        vmctl: true,
        os: Some("ubuntu".into()),
        cluster: None,
        role: None,
    }
}

/// Three VMs (one with full statistics and a GPU, one cluster node, one shut off), two GPUs,
/// and a bridge scan with a conflict.
fn view() -> View {
    let mut train = vm("train-gpu-01", State::Running);
    train.vcpus = 16;
    train.cpu_percent = Some(387.5);
    train.cpu_time_ns = Some(123_000_000_000);
    train.memory_used_kib = Some(60 * 1024 * 1024);
    train.memory_kib = 64 * 1024 * 1024;
    train.disk_read_bytes = Some(5 << 30);
    train.disk_write_bytes = Some(1 << 30);
    train.net_rx_bytes = Some(300 << 20);
    train.net_tx_bytes = Some(20 << 20);
    train.disk_read_bps = Some(12.5 * 1024.0 * 1024.0);
    train.disk_write_bps = Some(340.0 * 1024.0);
    train.net_rx_bps = Some(1.2 * 1024.0 * 1024.0);
    train.net_tx_bps = Some(96.0 * 1024.0);
    train.ips = vec!["192.168.1.50".parse().unwrap()];
    train.gpus = vec!["0000:41:00.0".into()];
    train.autostart = true;
    let mut cp = vm("k8s-cp-1", State::Running);
    cp.cpu_percent = Some(12.0);
    cp.memory_used_kib = Some(3 * 1024 * 1024);
    cp.memory_kib = 4 * 1024 * 1024;
    cp.disk_read_bps = Some(0.0);
    cp.disk_write_bps = Some(20.0 * 1024.0);
    cp.net_rx_bps = Some(2048.0);
    cp.net_tx_bps = Some(1024.0);
    cp.ips = vec!["192.168.1.60".parse().unwrap()];
    cp.cluster = Some("lab".into());
    cp.role = Some("controlplane".into());
    cp.os = Some("talos".into());
    let old = vm("old-desktop", State::ShutOff);
    View {
        uri: "qemu:///system".into(),
        vms: vec![train, cp, old],
        gpus: vec![
            GpuRow {
                bdf: "0000:41:00.0".into(),
                name: "NVIDIA RTX A6000".into(),
                driver: Some("vfio-pci".into()),
                vm: Some("train-gpu-01".into()),
                isolated: Some(true),
            },
            GpuRow {
                bdf: "0000:c1:00.0".into(),
                name: "NVIDIA L40S".into(),
                driver: Some("nvidia".into()),
                vm: None,
                isolated: Some(false),
            },
        ],
        gpus_note: None,
        bridge: Some(BridgeScan {
            interface: "br0".into(),
            subnet: "192.168.1.0/24".into(),
            free_count: 231,
            used_count: 22,
            conflicts: vec!["192.168.1.77".parse().unwrap()],
            scanned_at: 1_000_000,
        }),
        bridge_name: "br0".into(),
        round_trips: 1,
    }
}

fn app(no_color: bool) -> App {
    let mut a = App::new(view(), no_color);
    a.now_secs = 1_000_000 + 125;
    a.refresh_ms = Some(1.5);
    a
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn code(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn typed(a: &mut App, s: &str) {
    for c in s.chars() {
        assert_eq!(handle_key(a, key(c)), Action::None);
    }
}

/// The screen as text plus, for coloured snapshots, the buffer with its styles.
fn screen(a: &App, w: u16, h: u16) -> String {
    text_of(a, w, h)
}

/// The VM table's row of `vm`.
fn row_of(screen: &str, vm: &str) -> String {
    screen
        .lines()
        .find(|l| {
            l.get(2..)
                .is_some_and(|l| l.split_whitespace().next() == Some(vm))
        })
        .unwrap_or_default()
        .to_string()
}

fn styled(a: &App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| render(a, f)).unwrap();
    format!("{:?}", term.backend().buffer())
}

#[test]
fn list_at_120x40_with_colour() {
    let a = app(false);
    insta::assert_snapshot!("list_120x40", screen(&a, 120, 40));
    insta::assert_snapshot!("list_120x40_styles", styled(&a, 120, 40));
}

#[test]
fn list_at_80x24_drops_low_priority_columns_and_keeps_names_whole() {
    let a = app(false);
    let s = screen(&a, 80, 24);
    insta::assert_snapshot!("list_80x24", s);
    for name in ["train-gpu-01", "k8s-cp-1", "old-desktop", "192.168.1.50"] {
        assert!(s.contains(name), "{name} missing at 80x24:\n{s}");
    }
    assert!(!s.contains("CLUSTER/ROLE"), "{s}");
    assert!(s.lines().all(|l| l.chars().count() <= 80));
}

#[test]
fn no_color_has_no_colour_only_reverse_video_for_the_selection() {
    let a = app(true);
    let s = styled(&a, 100, 30);
    insta::assert_snapshot!("list_no_color_styles", s);
    let styles = s.split("styles: [").nth(1).unwrap_or_default();
    for colour in ["Green", "Red", "Cyan", "Yellow", "DarkGray", "BOLD"] {
        assert!(
            !styles.contains(colour),
            "{colour} under NO_COLOR:\n{styles}"
        );
    }
    assert!(styles.contains("REVERSED"), "{styles}");
}

#[test]
fn details_of_the_selected_vm() {
    let mut a = app(false);
    assert_eq!(handle_key(&mut a, code(KeyCode::Enter)), Action::None);
    assert_eq!(a.mode, Mode::Details);
    insta::assert_snapshot!("details", screen(&a, 100, 30));
    handle_key(&mut a, code(KeyCode::Esc));
    assert_eq!(a.mode, Mode::List);
}

#[test]
fn help_lists_every_key() {
    let mut a = app(false);
    handle_key(&mut a, key('?'));
    let s = screen(&a, 100, 30);
    insta::assert_snapshot!("help", s);
    for k in ["s ", "x ", "r ", "d ", "g ", "n ", "/ ", "q, Ctrl-C"] {
        assert!(s.contains(k), "{k} missing from help:\n{s}");
    }
}

#[test]
fn delete_asks_for_the_name_and_only_the_exact_name_deletes() {
    let mut a = app(false);
    handle_key(&mut a, code(KeyCode::Down));
    handle_key(&mut a, code(KeyCode::Down));
    assert_eq!(a.selected_vm().unwrap().name, "old-desktop");
    assert_eq!(handle_key(&mut a, key('d')), Action::None);
    insta::assert_snapshot!("delete_confirm", screen(&a, 100, 30));
    typed(&mut a, "old-deskto");
    assert_eq!(handle_key(&mut a, code(KeyCode::Enter)), Action::None);
    assert!(matches!(a.mode, Mode::ConfirmDelete { refused: true, .. }));
    assert!(screen(&a, 100, 30).contains("That is not the name: old-desktop is kept."));
    typed(&mut a, "old-desktop");
    assert_eq!(
        handle_key(&mut a, code(KeyCode::Enter)),
        Action::Delete("old-desktop".into())
    );
    assert_eq!(a.mode, Mode::List);
}

#[test]
fn esc_cancels_a_delete() {
    let mut a = app(false);
    a.selected = 2;
    handle_key(&mut a, key('d'));
    typed(&mut a, "old-desktop");
    assert_eq!(handle_key(&mut a, code(KeyCode::Esc)), Action::None);
    assert_eq!(a.mode, Mode::List);
    assert_eq!(a.status.as_deref(), Some("delete of old-desktop cancelled"));
}

#[test]
fn delete_of_a_running_vm_explains_instead_of_asking() {
    let mut a = app(false);
    assert_eq!(handle_key(&mut a, key('d')), Action::None);
    let Mode::Message { lines, error, .. } = &a.mode else {
        panic!("{:?}", a.mode)
    };
    assert!(error);
    assert!(lines[0].contains("train-gpu-01 is running"), "{lines:?}");
}

#[test]
fn filter_narrows_the_rows_and_esc_clears_it() {
    let mut a = app(false);
    handle_key(&mut a, key('/'));
    typed(&mut a, "k8s");
    assert_eq!(a.visible().len(), 1);
    handle_key(&mut a, code(KeyCode::Enter));
    assert_eq!(a.mode, Mode::List);
    assert_eq!(a.selected_vm().unwrap().name, "k8s-cp-1");
    let s = screen(&a, 100, 30);
    assert!(s.lines().any(|l| l.starts_with("> k8s-cp-1")), "{s}");
    assert!(!s.lines().any(|l| l.starts_with("  train-gpu-01")), "{s}");
    assert!(s.contains("filter: k8s"), "{s}");
    // Keys act on the filtered row.
    assert_eq!(
        handle_key(&mut a, key('x')),
        Action::Stop("k8s-cp-1".into())
    );
    handle_key(&mut a, code(KeyCode::Esc));
    assert_eq!(a.visible().len(), 3);
}

#[test]
fn stop_of_a_shut_off_vm_is_a_message_not_an_action() {
    let mut a = app(false);
    a.selected = 2;
    assert_eq!(handle_key(&mut a, key('x')), Action::None);
    assert!(
        matches!(&a.mode, Mode::Message { lines, .. } if lines[0] == "old-desktop is shut off")
    );
    handle_key(&mut a, key('z'));
    assert_eq!(a.mode, Mode::List);
    assert_eq!(handle_key(&mut a, key('r')), Action::None);
    handle_key(&mut a, code(KeyCode::Esc));
    assert_eq!(
        handle_key(&mut a, key('s')),
        Action::Start("old-desktop".into())
    );
    a.selected = 0;
    assert_eq!(handle_key(&mut a, key('s')), Action::None);
    handle_key(&mut a, code(KeyCode::Esc));
    assert_eq!(
        handle_key(&mut a, key('r')),
        Action::Reboot("train-gpu-01".into())
    );
}

#[test]
fn gpu_dialog_offers_detach_of_held_gpus_and_attach_of_the_others() {
    let mut a = app(false);
    assert_eq!(handle_key(&mut a, key('g')), Action::None);
    let Mode::Gpu { choices, .. } = &a.mode else {
        panic!("{:?}", a.mode)
    };
    assert!(choices[0].attached && !choices[1].attached);
    insta::assert_snapshot!("gpu_dialog", screen(&a, 100, 30));
    assert_eq!(
        handle_key(&mut a, code(KeyCode::Enter)),
        Action::GpuDetach {
            vm: "train-gpu-01".into(),
            bdf: "0000:41:00.0".into()
        }
    );
    a.selected = 1;
    handle_key(&mut a, key('g'));
    handle_key(&mut a, code(KeyCode::Down));
    assert_eq!(
        handle_key(&mut a, code(KeyCode::Enter)),
        Action::GpuAttach {
            vm: "k8s-cp-1".into(),
            bdf: "0000:c1:00.0".into()
        }
    );
}

#[test]
fn gpu_error_message_box_shows_the_error_and_its_help() {
    let mut a = app(false);
    let e = vmctl::Error::NotRunning {
        name: "old-desktop".into(),
    };
    a.message("gpu attach old-desktop failed", error_lines(&e), true);
    let s = screen(&a, 100, 30);
    insta::assert_snapshot!("gpu_error", s);
    assert!(s.contains("help:"), "{s}");
}

#[test]
fn remote_connection_shows_the_gpu_note_and_g_explains() {
    let mut a = app(false);
    a.view.uri = "qemu+ssh://gpu2/system".into();
    a.view.gpus.clear();
    a.view.gpus_note = Some("GPUs are not shown for a remote connection".into());
    let s = screen(&a, 100, 30);
    assert!(
        s.contains("GPUs are not shown for a remote connection"),
        "{s}"
    );
    handle_key(&mut a, key('g'));
    assert!(matches!(a.mode, Mode::Message { .. }));
}

#[test]
fn scan_runs_only_on_its_key() {
    let mut a = app(false);
    for k in [KeyCode::Down, KeyCode::Up, KeyCode::Char('?'), KeyCode::Esc] {
        assert_ne!(handle_key(&mut a, code(k)), Action::Scan);
    }
    assert_eq!(handle_key(&mut a, key('n')), Action::Scan);
    assert!(screen(&a, 120, 40).contains("scanned 2 min ago"));
}

#[test]
fn q_and_ctrl_c_quit() {
    let mut a = app(false);
    assert_eq!(handle_key(&mut a, key('q')), Action::Quit);
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    handle_key(&mut a, key('/'));
    assert_eq!(handle_key(&mut a, ctrl_c), Action::Quit);
}

#[test]
fn selection_follows_the_vm_across_refreshes() {
    let mut a = app(false);
    a.selected = 1;
    let mut v = view();
    v.vms.remove(0);
    a.set_view(v);
    assert_eq!(a.selected_vm().unwrap().name, "k8s-cp-1");
}

#[test]
fn interval_bounds_are_enforced() {
    assert_eq!(parse_interval("2").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_interval("0.5").unwrap(), Duration::from_millis(500));
    for bad in ["0.1", "0", "-1", "3601", "abc", "NaN", "inf"] {
        let e = parse_interval(bad).unwrap_err();
        assert_eq!(e.invalid_option(), Some("--interval"), "{bad}");
    }
}

#[test]
fn no_color_needs_a_non_empty_value() {
    assert!(no_color(&|_| Some("1".into())));
    assert!(!no_color(&|_| Some(String::new())));
    assert!(!no_color(&|_| None));
}

mod test_driver {
    //! On libvirt's test driver: a private node file of two running domains (the driver acts
    //! at once), or `test:///default` for what only reads.
    use hostio::{HostRoot, SystemRunner};
    use vmctl::config::Config;
    use vmctl::hypervisor::{Hypervisor, Libvirt};

    use super::*;

    /// `test:///DIR/node.xml` with domains `alpha` and `beta`, both running; private to the
    /// connection, so tests that change it do not meet.
    fn node(dir: &std::path::Path) -> String {
        let mut xml = String::from("<node>");
        for name in ["alpha", "beta"] {
            xml += &format!(
                "<domain type='test'><name>{name}</name><memory>1048576</memory><vcpu>2</vcpu>\
                 <os><type arch='x86_64'>hvm</type></os></domain>"
            );
        }
        xml += "</node>";
        let path = dir.join("node.xml");
        std::fs::write(&path, xml).unwrap();
        format!("test://{}", path.display())
    }

    fn select(a: &mut App, name: &str) {
        a.selected = a.visible().iter().position(|v| v.name == name).unwrap();
    }

    #[test]
    fn stop_shows_the_vm_shut_off_start_brings_it_back_and_delete_removes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let host = HostRoot::new(tmp.path());
        let config = Config::defaults();
        let hv = Libvirt::open(&node(tmp.path())).unwrap();
        let ctx = Ctx::new(&config, &host, &SystemRunner, &hv);
        let mut observer = Observer::new();
        let mut a = App::new(empty_view(&ctx), true);
        refresh(&mut a, &mut observer, &ctx);
        assert_eq!(a.view.vms.len(), 2);
        select(&mut a, "beta");
        assert_eq!(a.selected_vm().unwrap().state, State::Running);
        let action = handle_key(&mut a, key('x'));
        assert_eq!(action, Action::Stop("beta".into()));
        perform(&mut a, &mut observer, &ctx, &action);
        refresh(&mut a, &mut observer, &ctx);
        assert_eq!(
            a.selected_vm().unwrap().state,
            State::ShutOff,
            "{:?}",
            a.status
        );
        assert!(row_of(&screen(&a, 100, 30), "beta").contains("shut off"));
        // s starts it again.
        let action = handle_key(&mut a, key('s'));
        perform(&mut a, &mut observer, &ctx, &action);
        assert_eq!(a.status.as_deref(), Some("beta: started"));
        refresh(&mut a, &mut observer, &ctx);
        assert_eq!(a.selected_vm().unwrap().state, State::Running);
        // Stopped again, d asks; Esc keeps it, the exact name deletes it.
        let action = handle_key(&mut a, key('x'));
        perform(&mut a, &mut observer, &ctx, &action);
        refresh(&mut a, &mut observer, &ctx);
        handle_key(&mut a, key('d'));
        handle_key(&mut a, code(KeyCode::Esc));
        refresh(&mut a, &mut observer, &ctx);
        assert_eq!(a.view.vms.len(), 2);
        handle_key(&mut a, key('d'));
        typed(&mut a, "beta");
        let action = handle_key(&mut a, code(KeyCode::Enter));
        assert_eq!(action, Action::Delete("beta".into()));
        perform(&mut a, &mut observer, &ctx, &action);
        refresh(&mut a, &mut observer, &ctx);
        let names: Vec<&str> = a.view.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["alpha"], "{:?}", a.mode);
        assert!(hv.get("beta").unwrap().is_none());
    }

    #[test]
    fn gpu_attach_on_a_host_without_the_gpu_shows_the_library_error_and_its_help() {
        let tmp = tempfile::tempdir().unwrap();
        let host = HostRoot::new(tmp.path());
        let config = Config::defaults();
        let hv = Libvirt::open(&node(tmp.path())).unwrap();
        let ctx = Ctx::new(&config, &host, &SystemRunner, &hv);
        let mut observer = Observer::new();
        let mut a = App::new(empty_view(&ctx), true);
        let action = Action::GpuAttach {
            vm: "alpha".into(),
            bdf: "0000:41:00.0".into(),
        };
        perform(&mut a, &mut observer, &ctx, &action);
        let Mode::Message {
            title,
            lines,
            error,
        } = &a.mode
        else {
            panic!("{:?}", a.mode)
        };
        assert!(error);
        assert_eq!(title, "gpu attach alpha failed");
        assert!(lines.iter().any(|l| l.starts_with("help: ")), "{lines:?}");
        // Nothing was attached.
        refresh(&mut a, &mut observer, &ctx);
        assert!(a.view.vms.iter().all(|v| v.gpus.is_empty()));
    }

    #[test]
    fn a_failed_action_shows_the_error_with_its_help_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let host = HostRoot::new(tmp.path());
        let config = Config::defaults();
        let hv = Libvirt::open("test:///default").unwrap();
        let ctx = Ctx::new(&config, &host, &SystemRunner, &hv);
        let mut observer = Observer::new();
        let mut a = App::new(empty_view(&ctx), true);
        // The domain is gone between the key and the action (deleted elsewhere).
        perform(
            &mut a,
            &mut observer,
            &ctx,
            &Action::Reboot("nosuch".into()),
        );
        let Mode::Message { lines, error, .. } = &a.mode else {
            panic!("{:?}", a.mode)
        };
        assert!(error);
        assert!(lines[0].contains("nosuch"), "{lines:?}");
    }

    #[test]
    fn once_times_a_steady_refresh_of_one_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let host = HostRoot::new(tmp.path());
        let config = Config::defaults();
        let hv = Libvirt::open("test:///default").unwrap();
        let ctx = Ctx::new(&config, &host, &SystemRunner, &hv);
        let o = once(&ctx).unwrap();
        assert_eq!(o.round_trips, 1);
        assert!(o.first_round_trips > 1);
        assert_eq!(o.view.vms[0].name, "test");
        let text = render_text(&o.view, 100, Some(o.refresh_ms));
        assert!(text.contains("test") && text.contains("running"), "{text}");
    }
}
