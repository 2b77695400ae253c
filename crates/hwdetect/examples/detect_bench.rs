//! Times a full `hwdetect::detect` on a committed fixture host, in process.
//! Used by `scripts/bench/10-detect.sh`.
//!
//! Usage: `detect_bench [HOST] [RUNS]` prints `mean_ms min_ms max_ms runs`;
//! `detect_bench --build-into DIR [HOST]` only writes the fixture tree to DIR (for timing the CLI).

use std::time::Instant;

use hostio::HostRoot;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--build-into") {
        let Some(dir) = args.get(1) else {
            eprintln!("error: --build-into needs a directory");
            std::process::exit(2);
        };
        let host = args
            .get(2)
            .map_or("amd-b550m-gt710-rtx2070s", String::as_str);
        let built = fixture_builder::host_desc(host)
            .and_then(|d| fixture_builder::build_into(&d, std::path::Path::new(dir)));
        if let Err(e) = built {
            eprintln!("error: building {host} into {dir}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let host = args
        .first()
        .map_or("amd-b550m-gt710-rtx2070s", String::as_str);
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(200);
    let tree = fixture_builder::build_host(host);
    let root = HostRoot::new(tree.path());
    // One warm-up run: the first lookup pays for the page cache.
    let expected = hwdetect::detect(&root);
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let f = hwdetect::detect(&root);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(f.gpus.len(), expected.gpus.len());
    }
    let mean = times.iter().sum::<f64>() / runs.max(1) as f64;
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    let max = times.iter().copied().fold(0.0, f64::max);
    println!("{mean:.3} {min:.3} {max:.3} {runs}");
}
