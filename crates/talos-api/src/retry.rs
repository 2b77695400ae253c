//! Retrying a call while apid is still coming up, on a deadline, cancellable.

use std::time::{Duration, Instant};

use crate::Error;

/// Call `f` until it succeeds, fails with an error that is not [retryable](Error::is_retryable),
/// `cancelled()` turns true ([`Error::Cancelled`]) or `deadline` passes ([`Error::Timeout`],
/// holding the last error). `on_retry` sees each retryable error before the next attempt
/// (for a progress line); attempts start `interval` apart.
pub fn retry_until<T>(
    deadline: Instant,
    interval: Duration,
    cancelled: &dyn Fn() -> bool,
    on_retry: &mut dyn FnMut(&Error),
    mut f: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let start = Instant::now();
    loop {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let attempt = Instant::now();
        let err = match f() {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() => e,
            Err(e) => return Err(e),
        };
        let next = attempt + interval;
        if next >= deadline {
            return Err(Error::Timeout {
                waited: start.elapsed(),
                last: Box::new(err),
            });
        }
        on_retry(&err);
        // Sleep in short steps so cancellation is noticed promptly.
        while Instant::now() < next {
            if cancelled() {
                return Err(Error::Cancelled);
            }
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::net::SocketAddr;

    fn refused() -> Error {
        Error::Connect {
            node: SocketAddr::from(([198, 18, 0, 10], 50000)),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        }
    }

    #[test]
    fn retries_not_up_yet_then_returns_the_value() {
        let calls = Cell::new(0);
        let mut seen = 0;
        let v = retry_until(
            Instant::now() + Duration::from_secs(10),
            Duration::from_millis(1),
            &|| false,
            &mut |_| seen += 1,
            || {
                calls.set(calls.get() + 1);
                if calls.get() < 3 {
                    Err(refused())
                } else {
                    Ok(7)
                }
            },
        )
        .unwrap();
        assert_eq!((v, calls.get(), seen), (7, 3, 2));
    }

    #[test]
    fn final_error_is_returned_at_once() {
        let calls = Cell::new(0);
        let e = retry_until::<()>(
            Instant::now() + Duration::from_secs(10),
            Duration::from_millis(1),
            &|| false,
            &mut |_| {},
            || {
                calls.set(calls.get() + 1);
                Err(Error::Talosconfig { reason: "x".into() })
            },
        )
        .unwrap_err();
        assert!(matches!(e, Error::Talosconfig { .. }));
        assert_eq!(calls.get(), 1);
    }

    #[test]
    fn deadline_gives_timeout_with_the_last_error() {
        let e = retry_until::<()>(
            Instant::now() + Duration::from_millis(30),
            Duration::from_millis(10),
            &|| false,
            &mut |_| {},
            || Err(refused()),
        )
        .unwrap_err();
        match e {
            Error::Timeout { last, .. } => assert!(matches!(*last, Error::Connect { .. })),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cancellation_stops_retrying() {
        let calls = Cell::new(0);
        let e = retry_until::<()>(
            Instant::now() + Duration::from_secs(10),
            Duration::from_millis(1),
            &|| calls.get() >= 2,
            &mut |_| {},
            || {
                calls.set(calls.get() + 1);
                Err(refused())
            },
        )
        .unwrap_err();
        assert!(matches!(e, Error::Cancelled));
    }
}
