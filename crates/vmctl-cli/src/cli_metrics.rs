//! `vmctl metrics`: the Prometheus exporter (`serve`, a small HTTP/1.1 server on
//! std::net) and the node_exporter textfile (`textfile`). Both render
//! [`vmctl::commands::metrics`] from one read of libvirt; `serve` reads it at each scrape (a new
//! connection per scrape, so a restarted libvirtd needs nothing), never in the background.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hostio::{HostRoot, SystemRunner};
use vmctl::Error;
use vmctl::commands::Ctx;
use vmctl::commands::metrics::{self, BuildInfo, MetricsError, Scrape};
use vmctl::config::Config;
use vmctl::hypervisor::Libvirt;

use crate::{esc, out, out_json};

const SERVE_AFTER_HELP: &str = "\
Each scrape reads libvirt then (one bulk statistics call, plus the domain definitions and the
host's GPUs): there is no background polling. If libvirt cannot be reached, /metrics still answers
200 with `vmctl_libvirt_up 0` and the build info, so alert on that; Prometheus's own `up` only says
the exporter answered.

The metrics are unauthenticated: anyone who can reach the port reads VM names, states and GPU
assignments. The default listens on loopback only; a non-loopback --listen prints a warning.

Prometheus scrape config (prometheus.yml):
  scrape_configs:
    - job_name: vmctl
      static_configs:
        - targets: ['127.0.0.1:9177']

Examples:
  vmctl metrics serve
  curl -s http://127.0.0.1:9177/metrics
  systemctl enable --now vmctl-metrics    # the packaged unit (disabled by default)";

const TEXTFILE_AFTER_HELP: &str = "\
node_exporter's textfile collector reads *.prom files from its --collector.textfile.directory
(Debian: /var/lib/prometheus/node-exporter). The file is replaced atomically, so the collector never
reads half of it. If libvirt cannot be reached, the file still says `vmctl_libvirt_up 0` and vmctl
exits 1.

Examples:
  vmctl metrics textfile /var/lib/prometheus/node-exporter/vmctl.prom
  # cron, every minute:
  * * * * * root vmctl metrics textfile /var/lib/prometheus/node-exporter/vmctl.prom";

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics, read from libvirt at each scrape
    #[command(after_help = SERVE_AFTER_HELP)]
    Serve(ServeArgs),
    /// Write the same metrics atomically to PATH (*.prom) for node_exporter's textfile collector
    #[command(after_help = TEXTFILE_AFTER_HELP)]
    Textfile {
        /// The file to write; it must end in .prom and its directory must exist
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (0.0.0.0:9177 for every interface; port 0 picks a free
    /// one, printed on stderr)
    #[arg(long, value_name = "ADDR:PORT", default_value = metrics::DEFAULT_LISTEN)]
    listen: SocketAddr,
}

/// The binary's build, as `vmctl_build_info` labels it.
fn build() -> BuildInfo {
    BuildInfo::parse(env!("GVB_BUILD_VERSION"))
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// One read of libvirt (a connection of its own) rendered as the text format; the error, if
/// libvirt could not be read, comes back too.
fn scrape(config: &Config, host: &HostRoot) -> (String, Option<Error>) {
    let start = Instant::now();
    let view = Libvirt::open(config.connect())
        .map_err(Error::from)
        .and_then(|hv| {
            let ctx = Ctx::new(config, host, &SystemRunner, &hv).with_env(&env);
            vmctl::commands::observe::snapshot(&ctx)
        });
    let (s, err) = Scrape::new(view, config, host, start.elapsed());
    (metrics::render(&s, &build()), err)
}

pub fn run(
    cmd: &MetricsCommand,
    config: &Config,
    host: &HostRoot,
    json: bool,
) -> Result<(), Error> {
    match cmd {
        MetricsCommand::Textfile { path } => {
            // Bad input fails before libvirt is asked.
            metrics::check_textfile_path(path)?;
            let (text, err) = scrape(config, host);
            let written = metrics::write_textfile(path, &text, err.is_none())?;
            if let Some(e) = err {
                clikit::errln(&format!(
                    "vmctl: wrote {} with vmctl_libvirt_up 0",
                    esc(&path.display().to_string())
                ));
                return Err(e);
            }
            if json {
                out_json(&written);
            } else {
                out(&format!(
                    "{}: {} samples\n",
                    esc(&path.display().to_string()),
                    written.samples
                ));
            }
            Ok(())
        }
        MetricsCommand::Serve(a) => {
            if json {
                return Err(MetricsError::ServeJson.into());
            }
            serve(a.listen, config, host)
        }
    }
}

/// At most this many connections are served at once; more are answered 503 at once.
const MAX_CONNECTIONS: usize = 8;
/// A request must arrive whole within this time…
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// …and fit in this many bytes (the request line and headers; a GET has no body).
const MAX_REQUEST: usize = 8192;

fn serve(listen: SocketAddr, config: &Config, host: &HostRoot) -> Result<(), Error> {
    let listener = TcpListener::bind(listen).map_err(|source| MetricsError::Listen {
        addr: listen.to_string(),
        source,
    })?;
    let bound = listener.local_addr().unwrap_or(listen);
    if let Err(e) = vmctl::interrupt::install() {
        tracing::warn!("SIGTERM and Ctrl-C will not stop the exporter cleanly: {e}");
    }
    if !bound.ip().is_loopback() {
        clikit::errln(&format!(
            "warning: metrics on {bound} are unauthenticated: anyone who can reach this port reads VM names, states and GPU assignments; firewall it, or listen on 127.0.0.1"
        ));
    }
    clikit::errln(&format!(
        "vmctl metrics: serving http://{bound}/metrics (libvirt {}; Ctrl-C stops)",
        esc(config.connect())
    ));
    let active = AtomicUsize::new(0);
    std::thread::scope(|s| {
        while !vmctl::interrupt::requested() {
            // poll(2) with a timeout: a signal interrupts it at once, a connection wakes it.
            let mut fds = [rustix::event::PollFd::new(
                &listener,
                rustix::event::PollFlags::IN,
            )];
            let timeout = rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 500_000_000,
            };
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(0) | Err(rustix::io::Errno::INTR) => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("poll: {e}");
                    continue;
                }
            }
            let Ok((stream, peer)) = listener.accept() else {
                continue;
            };
            if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                tracing::debug!("{peer}: busy");
                let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = respond(&stream, 503, "text/plain; charset=utf-8", b"busy\n", false);
                // Briefly, so a flood cannot stall the loop: the request's bytes read, the
                // close does not reset the connection under the 503.
                close_gently(stream, Duration::from_millis(100));
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let active = &active;
            s.spawn(move || {
                handle(stream, config, host);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    clikit::errln("vmctl metrics: stopped");
    Ok(())
}

/// Reads the request head (up to [`MAX_REQUEST`] bytes within [`REQUEST_DEADLINE`]); `Err`
/// with the status to answer when it is too big or malformed, `Ok(None)` when the client went
/// away or was too slow.
fn read_head(stream: &mut TcpStream) -> Result<Option<String>, u16> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_REQUEST {
            return Err(431);
        }
        // In slices, so a stop (SIGTERM) does not wait for a silent client's deadline.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || vmctl::interrupt::requested()
            || stream
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .is_err()
        {
            return Ok(None);
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Ok(None),
        }
    }
    String::from_utf8(buf).map(Some).map_err(|_| 400)
}

fn handle(mut stream: TcpStream, config: &Config, host: &HostRoot) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    answer(&mut stream, config, host);
    close_gently(stream, Duration::from_secs(1));
}

/// Closing with unread input would reset the connection and could lose the answer (a
/// too-big request, a 503): say we are done, then read what is left, for at most `wait`
/// and 64 KiB.
fn close_gently(mut stream: TcpStream, wait: Duration) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + wait;
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || stream.set_read_timeout(Some(remaining)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn answer(stream: &mut TcpStream, config: &Config, host: &HostRoot) {
    let stream = &mut *stream;
    let head = match read_head(stream) {
        Ok(Some(h)) => h,
        Ok(None) => return,
        Err(status) => {
            let _ = respond(stream, status, "text/plain; charset=utf-8", b"", false);
            return;
        }
    };
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        let _ = respond(
            stream,
            400,
            "text/plain; charset=utf-8",
            b"bad request\n",
            false,
        );
        return;
    };
    if !version.starts_with("HTTP/1.") {
        let _ = respond(stream, 505, "text/plain; charset=utf-8", b"", false);
        return;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let _ = respond(
                stream,
                405,
                "text/plain; charset=utf-8",
                b"only GET and HEAD\n",
                false,
            );
            return;
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let result = match path {
        "/metrics" => {
            let (text, err) = scrape(config, host);
            if let Some(e) = err {
                tracing::warn!("scrape: libvirt unreachable: {e}");
            }
            respond(
                stream,
                200,
                metrics::CONTENT_TYPE,
                text.as_bytes(),
                head_only,
            )
        }
        "/" => respond(
            stream,
            200,
            "text/html; charset=utf-8",
            INDEX.as_bytes(),
            head_only,
        ),
        _ => respond(
            stream,
            404,
            "text/plain; charset=utf-8",
            b"not found: the metrics are at /metrics\n",
            head_only,
        ),
    };
    if let Err(e) = result {
        tracing::debug!("response: {e}");
    }
}

const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>vmctl exporter</title></head>\n\
<body><h1>vmctl exporter</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

fn respond(
    mut stream: &TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reason(status),
        body.len()
    );
    if status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}
